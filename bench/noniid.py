"""Rounds to a target accuracy on McMahan's pathological non-IID MNIST split.

Workload (McMahan et al. 2017): 100 clients holding 2 label shards each, the 2NN,
C = 0.1, E = 1, B = 10, the same local SGD for every strategy. Accuracy on the 10,000
test images is measured after every round; rounds-to-target is read, as McMahan et al.
do, from the best-so-far accuracy curve with linear interpolation of the crossing (None
when a run never reaches the target within --rounds). Prints one JSON line.

Run: python bench/noniid.py [--rounds 300] [--target 0.97] [--data-dir ../shared/data/mnist]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from federa.cli.config import RunConfig, validate
from federa.cli.experiment import build_experiment
from federa.data import load_mnist
from federa.simulation import simulate

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
STRATEGIES: dict[str, dict[str, Any]] = {
    "fedavg": {"strategy": "fedavg"},
    "fedprox": {"strategy": "fedprox", "proximal_mu": 0.01},
    "scaffold": {"strategy": "scaffold"},
    "fedadam": {"strategy": "fedadam", "server_lr": 0.01, "tau": 0.001},
}


def rounds_to(curve: list[tuple[int, float]], target: float) -> float | None:
    """Return the (interpolated) round where the best-so-far accuracy first reaches target."""
    best_prev, round_prev = 0.0, 0
    best = 0.0
    for round_num, acc in curve:
        best = max(best, acc)
        if best >= target:
            if best == best_prev:
                return float(round_num)
            return round_prev + (target - best_prev) / (best - best_prev) * (round_num - round_prev)
        best_prev, round_prev = best, round_num
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--target", type=float, default=0.97)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--proximal-mu", type=float, default=0.01, help="FedProx's mu")
    args = parser.parse_args()
    STRATEGIES["fedprox"]["proximal_mu"] = args.proximal_mu
    if not (args.data_dir / "train-images-idx3-ubyte.gz").exists():
        print(json.dumps({"bench": "noniid", "skipped": f"{args.data_dir} has no MNIST files"}))
        return
    split = load_mnist(args.data_dir)
    base = RunConfig(
        dataset="mnist",
        data_dir=str(args.data_dir),
        model="mnist_2nn",
        partition="shards",
        shards_per_client=2,
        num_clients=100,
        fraction_train=0.1,
        rounds=args.rounds,
        local_epochs=1,
        batch_size=10,
        lr=0.05,
        momentum=0.0,
        seed=0,
    )
    targets = sorted({0.90, 0.95, args.target})
    out: dict[str, Any] = {}
    for name in args.strategies.split(","):
        cfg = validate(replace(base, **STRATEGIES[name]))
        experiment = build_experiment(cfg, split)
        start = time.perf_counter()
        history = simulate(
            experiment.client_fn,
            experiment.strategy,
            num_clients=100,
            num_rounds=args.rounds,
            initial=experiment.initial,
            seed=cfg.seed,
        )
        curve = history.series("centralized_accuracy")
        out[name] = {
            **{f"rounds_to_{t:g}": rounds_to(curve, t) for t in targets},
            "best_accuracy": round(max(a for _, a in curve), 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
    print(
        json.dumps(
            {
                "bench": "noniid",
                "workload": "MNIST 2NN, pathological 2 shards x 100 clients, C=0.1, E=1, B=10, "
                f"lr 0.05, {args.rounds} rounds max; FedProx mu {args.proximal_mu:g}, FedAdam "
                "server lr 0.01, tau 0.001",
                "results": out,
            }
        )
    )


if __name__ == "__main__":
    main()
