"""Seconds per aggregation of the Byzantine-robust strategies on a large cohort.

Workload: 200 clients, each returning a float32 model of 1,000,000 parameters in three
arrays (the global model plus Gaussian noise; f of them send the sign-flipped update,
scaled by 10). Every strategy's `aggregate_train` is timed end to end, flattening
included, once to warm the allocator and then `--repeats` times; the figure is the
median (and the minimum). Plain FedAvg runs in the same process as the yardstick for the
ratios. The load average before and after is printed because OpenBLAS threads spin-wait
on each other: on a machine whose cores are already busy, the (200 x 1M) Gram product
behind Krum was measured at 24 s instead of 0.4 s. There, run with OPENBLAS_NUM_THREADS=1
and compare figures taken at a similar load.

Goal: Krum and Multi-Krum under 2 s.

Run: python bench/robust_speed.py [--clients 200] [--params 1000000] [--byzantine 20]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

from federa.core.arrays import Arrays
from federa.core.messages import TrainResult
from federa.strategy.base import RoundContext, Strategy
from federa.strategy.bulyan import Bulyan
from federa.strategy.fedavg import FedAvg
from federa.strategy.krum import Krum, MultiKrum
from federa.strategy.median import FedMedian
from federa.strategy.trimmed_mean import FedTrimmedMean


def build_round(
    num_clients: int, num_params: int, num_byzantine: int
) -> tuple[Arrays, list[tuple[int, TrainResult]]]:
    """Return a global model and one result per client, the first f of them Byzantine."""
    rng = np.random.default_rng(0)
    bias, head = 1_000, 9_000
    shapes = {"layer.weight": (num_params - bias - head,), "layer.bias": (bias,), "head": (head,)}
    glob = Arrays({k: rng.normal(0, 0.05, s).astype(np.float32) for k, s in shapes.items()})
    results = []
    for cid in range(num_clients):
        scale = -10.0 if cid < num_byzantine else 1.0
        arrays = Arrays(
            {
                k: (v + scale * rng.normal(0, 1e-3, v.shape).astype(np.float32)).astype(np.float32)
                for k, v in glob.items()
            }
        )
        results.append((cid, TrainResult(arrays=arrays, num_examples=100 + cid)))
    return glob, results


def time_strategy(
    strategy: Strategy, glob: Arrays, results: list[tuple[int, TrainResult]], repeats: int
) -> list[float]:
    """Return the seconds of `aggregate_train` in `repeats` runs after a warm-up."""
    times = []
    for i in range(repeats + 1):
        ctx = RoundContext(round_num=1, rng=np.random.default_rng(0))
        start = time.perf_counter()
        new, _ = strategy.aggregate_train(ctx, glob, results, [])
        elapsed = time.perf_counter() - start
        assert new is not None
        del new
        if i:
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--byzantine", type=int, default=20, help="f for the Krum family")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n, f = args.clients, args.byzantine
    glob, results = build_round(n, args.params, f)
    load_before = os.getloadavg()[0]
    strategies: dict[str, Strategy] = {
        "fedavg": FedAvg(),
        "krum": Krum(num_byzantine=f),
        "multi_krum": MultiKrum(num_byzantine=f, num_selected=n - f),
        "median": FedMedian(),
        "trimmed_mean": FedTrimmedMean(beta=0.1),
        "bulyan": Bulyan(num_byzantine=f),
    }
    times = {k: time_strategy(s, glob, results, args.repeats) for k, s in strategies.items()}
    seconds = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "bench": "robust_speed",
                "workload": f"{n} clients x {args.params} float32 parameters, f={f}",
                "cpu_count": os.cpu_count(),
                "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
                "machine": platform.machine(),
                "numpy": np.__version__,
                "repeats": args.repeats,
                "seconds": {k: round(v, 3) for k, v in seconds.items()},
                "min_seconds": {k: round(min(v), 3) for k, v in times.items()},
                "ratio_to_fedavg": {
                    k: round(v / seconds["fedavg"], 2) for k, v in seconds.items() if k != "fedavg"
                },
                "goal": "krum and multi_krum < 2 s",
                "meets_goal": max(seconds["krum"], seconds["multi_krum"]) < 2.0,
            }
        )
    )


if __name__ == "__main__":
    main()
