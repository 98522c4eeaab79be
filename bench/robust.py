"""Byzantine robustness on MNIST: FedAvg against robust rules under a sign-flip attack.

Workload: MNIST (../shared/data/mnist), McMahan's 2NN, 50 IID clients, all sampled each
round, 20% of them Byzantine sending the sign-flipped, 10x-boosted update
(federa.simulation.attacks). Robust rules are told f = 10. Prints one JSON line with the
final test accuracy of each run and whether each robust rule stays within 3 points of
the attack-free FedAvg run while attacked FedAvg collapses.

Run: python bench/robust.py [--rounds 15] [--data-dir ../shared/data/mnist]
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
RULES: dict[str, dict[str, Any]] = {
    "median": {"strategy": "median"},
    "trimmedmean": {"strategy": "trimmedmean", "trim_beta": 0.25},
    "krum": {"strategy": "krum", "num_byzantine": 10},
    "bulyan": {"strategy": "bulyan", "num_byzantine": 10},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--clients", type=int, default=50)
    args = parser.parse_args()
    if not (args.data_dir / "train-images-idx3-ubyte.gz").exists():
        print(json.dumps({"bench": "robust", "skipped": f"{args.data_dir} has no MNIST files"}))
        return
    split = load_mnist(args.data_dir)
    base = RunConfig(
        dataset="mnist",
        data_dir=str(args.data_dir),
        model="mnist_2nn",
        partition="iid",
        num_clients=args.clients,
        fraction_train=1.0,
        rounds=args.rounds,
        local_epochs=1,
        batch_size=32,
        lr=0.05,
        momentum=0.0,
        seed=0,
    )
    attacked = {"attack": "signflip", "attackers": 0.2, "attack_scale": 10.0}
    runs: dict[str, dict[str, Any]] = {"fedavg_no_attack": {}, "fedavg": attacked}
    runs.update({name: {**rule, **attacked} for name, rule in RULES.items()})
    accuracy: dict[str, float] = {}
    seconds: dict[str, float] = {}
    for name, changes in runs.items():
        cfg = validate(replace(base, **changes))
        experiment = build_experiment(cfg, split)
        start = time.perf_counter()
        history = simulate(
            experiment.client_fn,
            experiment.strategy,
            num_clients=args.clients,
            num_rounds=args.rounds,
            initial=experiment.initial,
            seed=cfg.seed,
        )
        seconds[name] = round(time.perf_counter() - start, 1)
        accuracy[name] = round(history.rounds[-1].centralized_metrics["accuracy"], 4)
    clean = accuracy["fedavg_no_attack"]
    print(
        json.dumps(
            {
                "bench": "robust",
                "workload": f"MNIST 2NN, {args.clients} IID clients, 20% sign-flip x10, "
                f"{args.rounds} rounds, E=1, B=32",
                "final_accuracy": accuracy,
                "seconds": seconds,
                "fedavg_collapses": accuracy["fedavg"] < clean - 0.2,
                "within_3_points": {n: accuracy[n] >= clean - 0.03 for n in RULES},
            }
        )
    )


if __name__ == "__main__":
    main()
