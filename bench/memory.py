"""Peak memory of a round: streaming aggregation against the batch path.

Workload (issue 6): 10,000 simulated clients, a float32 model of 1,000,000 parameters
(4 MB) in three arrays, FedAvg with a cohort of 1,000 (C = 0.1), one round, serial
executor. Clients are synthetic and cheap: each returns the global arrays plus a
client-specific offset, so the figures measure what the round loop and the strategy
hold, not training. Each configuration runs in a fresh child process, which reports

* the peak bytes numpy allocated during the run (tracemalloc: numpy registers its
  buffers with it), and that peak in model copies (peak / 4 MB);
* the peak resident set size (ru_maxrss) and the RSS before the run, so their
  difference is the run's own growth.

"streaming" is FedAvg as shipped (its accumulator adds each result as it arrives);
"batch" is the same FedAvg with streaming turned off, so the loop gathers every result
before `aggregate_train`, as before issue 6. Streaming also runs with a 10x smaller
cohort to show that its peak does not grow with the cohort. Timings are noisy on a
shared machine; the memory figures are not.

Goal: the streaming path holds O(1) model copies (not one per cohort member).

Run: python bench/memory.py [--clients 10000] [--params 1000000] [--cohort 1000]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from typing import Any

import numpy as np

import federa as fd
from federa.strategy.base import TrainAccumulator

MB = 1024 * 1024


class SyntheticClient(fd.Client):
    """Return the global arrays shifted by a client-specific constant (no training)."""

    def __init__(self, cid: int) -> None:
        self.cid = cid

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        shift = np.float32(1e-3 * (self.cid % 7 - 3))
        new = fd.Arrays((name, a + shift) for name, a in arrays.items())
        return fd.TrainResult(arrays=new, num_examples=1 + self.cid % 50, metrics={"loss": 1.0})

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        raise NotImplementedError


class BatchFedAvg(fd.FedAvg):
    """FedAvg without its streaming accumulator: the loop gathers the whole cohort."""

    def begin_train_aggregation(
        self, ctx: fd.RoundContext, arrays: fd.Arrays
    ) -> TrainAccumulator | None:
        return None


def model(num_params: int) -> fd.Arrays:
    """Return a float32 model of `num_params` parameters in three arrays."""
    rng = np.random.default_rng(0)
    bias, head = 1_000, 9_000
    shapes = {"layer.weight": num_params - bias - head, "layer.bias": bias, "head": head}
    return fd.Arrays({k: rng.normal(0, 0.05, n).astype(np.float32) for k, n in shapes.items()})


def measure(mode: str, num_clients: int, num_params: int, cohort: int) -> dict[str, Any]:
    """Run one round in this process and return its memory figures."""
    initial = model(num_params)
    cls = BatchFedAvg if mode == "batch" else fd.FedAvg
    strategy = cls(fraction_train=cohort / num_clients, min_train_clients=1)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    start = time.perf_counter()
    history = fd.simulate(
        SyntheticClient, strategy, num_clients=num_clients, num_rounds=1, initial=initial
    )
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rec = history.rounds[0]
    assert rec.num_results == cohort and rec.is_accepted, rec
    return {
        "mode": mode,
        "cohort": cohort,
        "peak_numpy_mb": round(peak / MB, 1),
        "peak_model_copies": round(peak / initial.num_bytes, 1),
        "rss_before_mb": round(rss_before / MB, 1),
        "rss_peak_mb": round(rss_peak / MB, 1),
        "rss_growth_mb": round((rss_peak - rss_before) / MB, 1),
        "seconds": round(seconds, 2),
    }


def run_child(mode: str, args: argparse.Namespace, cohort: int) -> dict[str, Any]:
    """Measure one configuration in a fresh process, so peaks do not carry over."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--clients",
        str(args.clients),
        "--params",
        str(args.params),
        "--cohort",
        str(cohort),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--cohort", type=int, default=1_000)
    parser.add_argument("--child", choices=["streaming", "batch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.clients, args.params, args.cohort)))
        return
    small = max(1, args.cohort // 10)
    runs = [
        run_child("streaming", args, small),
        run_child("streaming", args, args.cohort),
        run_child("batch", args, args.cohort),
    ]
    streaming, batch = runs[1], runs[2]
    print(
        json.dumps(
            {
                "bench": "memory",
                "clients": args.clients,
                "params": args.params,
                "model_mb": round(args.params * 4 / MB, 2),
                "cohort": args.cohort,
                "runs": runs,
                "batch_over_streaming_peak_numpy": round(
                    batch["peak_numpy_mb"] / streaming["peak_numpy_mb"], 1
                ),
                "streaming_peak_growth_10x_cohort": round(
                    streaming["peak_numpy_mb"] / runs[0]["peak_numpy_mb"], 2
                ),
                "python": platform.python_version(),
                "numpy": np.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
