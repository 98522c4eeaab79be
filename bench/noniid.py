"""Rounds to a target accuracy on McMahan's pathological non-IID MNIST split.

Workload (McMahan et al. 2017): 100 clients holding 2 label shards each, the 2NN,
C = 0.1, B = 10, lr 0.05, the same local SGD for every strategy. Accuracy on the 10,000
test images is measured after every round; rounds-to-target is read, as McMahan et al.
do, from the best-so-far accuracy curve with linear interpolation of the crossing (None
when a run never reaches the target within --rounds). Prints one JSON line.

Scenarios:
* homogeneous (default): E = 1, every sampled client does its full local work;
  FedAvg, FedProx, SCAFFOLD and FedAdam.
* stragglers: systems heterogeneity as Li et al. (2020, "Federated Optimization in
  Heterogeneous Networks", section 5.2) simulate it: E = --epochs, and in every round
  --stragglers of the sampled clients can only do a random 1 to E-1 epochs (the same
  clients and epochs for every strategy, drawn from the seed). FedAvg drops them, as it
  does clients that miss the deadline; FedProx uses their partial work, with the
  proximal term (mu = --proximal-mu) and without it (mu = 0, to separate the two).

Run: python bench/noniid.py [--scenario homogeneous|stragglers] [--rounds 300]
     [--target 0.97] [--epochs 5] [--stragglers 0.9] [--data-dir ../shared/data/mnist]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from federa.cli.compare import rounds_to_target
from federa.cli.config import RunConfig, validate
from federa.cli.experiment import build_experiment
from federa.data import load_mnist
from federa.simulation import Heterogeneity, simulate
from federa.simulation.vectorized import VectorizedExecutor

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
STRATEGIES: dict[str, dict[str, Any]] = {
    "fedavg": {"strategy": "fedavg"},
    "fedprox": {"strategy": "fedprox", "proximal_mu": 0.01},
    "scaffold": {"strategy": "scaffold"},
    "fedadam": {"strategy": "fedadam", "server_lr": 0.01, "tau": 0.001},
}


def run_one(
    cfg: RunConfig, split: Any, rounds: int, heterogeneity: Heterogeneity | None, executor: Any
) -> dict[str, Any]:
    """Train one configuration; return its rounds-to-target figures."""
    experiment = build_experiment(cfg, split)
    start = time.perf_counter()
    history = simulate(
        experiment.client_fn,
        experiment.strategy,
        num_clients=cfg.num_clients,
        num_rounds=rounds,
        initial=experiment.initial,
        seed=cfg.seed,
        executor=executor,
        heterogeneity=heterogeneity,
    )
    curve = history.series("centralized_accuracy")
    results = [r.num_results for r in history.rounds]
    return {
        "curve": curve,
        "best_accuracy": round(max(a for _, a in curve), 4),
        "mean_results_per_round": round(sum(results) / max(len(results), 1), 2),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--scenario", choices=("homogeneous", "stragglers"), default="homogeneous")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--target", type=float, default=0.97)
    parser.add_argument("--strategies", default=None, help="comma-separated subset to run")
    parser.add_argument("--proximal-mu", type=float, default=None, help="FedProx's mu")
    parser.add_argument("--epochs", type=int, default=None, help="local epochs E")
    parser.add_argument("--stragglers", type=float, default=0.9, help="straggler fraction")
    parser.add_argument("--executor", choices=("vectorized", "serial"), default="vectorized")
    parser.add_argument("--curves", type=Path, default=None, help="write accuracy curves (JSON)")
    args = parser.parse_args()
    if not (args.data_dir / "train-images-idx3-ubyte.gz").exists():
        print(json.dumps({"bench": "noniid", "skipped": f"{args.data_dir} has no MNIST files"}))
        return
    stragglers = args.scenario == "stragglers"
    epochs = args.epochs or (5 if stragglers else 1)
    mu = args.proximal_mu if args.proximal_mu is not None else 0.01
    runs: dict[str, tuple[dict[str, Any], Heterogeneity | None]] = {}
    if stragglers:

        def h(partial: bool) -> Heterogeneity:
            return Heterogeneity(
                straggler_fraction=args.stragglers, partial_work=partial, epochs=epochs
            )

        runs = {
            "fedavg_drops_stragglers": ({"strategy": "fedavg"}, h(False)),
            "fedprox_mu0_partial_work": ({"strategy": "fedavg"}, h(True)),
            "fedprox_partial_work": ({"strategy": "fedprox", "proximal_mu": mu}, h(True)),
        }
    else:
        runs = {
            "fedavg": ({"strategy": "fedavg"}, None),
            "fedprox": ({"strategy": "fedprox", "proximal_mu": mu}, None),
            "scaffold": ({"strategy": "scaffold"}, None),
            "fedadam": ({"strategy": "fedadam", "server_lr": 0.01, "tau": 0.001}, None),
        }
    if args.strategies:
        runs = {name: runs[name] for name in args.strategies.split(",")}
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
        local_epochs=epochs,
        batch_size=10,
        lr=0.05,
        momentum=0.0,
        seed=0,
    )
    targets = sorted({0.90, 0.95, args.target})
    out: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for name, (settings, heterogeneity) in runs.items():
        cfg = validate(replace(base, **settings))
        executor = VectorizedExecutor() if args.executor == "vectorized" else None
        result = run_one(cfg, split, args.rounds, heterogeneity, executor)
        curves[name] = result.pop("curve")
        out[name] = {
            **{f"rounds_to_{t:g}": rounds_to_target(curves[name], t) for t in targets},
            **result,
        }
    if args.curves is not None:
        args.curves.write_text(json.dumps(curves))
    workload = (
        f"MNIST 2NN, pathological 2 shards x 100 clients, C=0.1, E={epochs}, B=10, lr 0.05, "
        f"{args.rounds} rounds max, {args.executor} executor; FedProx mu {mu:g}"
    )
    if stragglers:
        workload += f"; {args.stragglers:g} of each round's clients straggle (1..E-1 epochs)"
    else:
        workload += "; FedAdam server lr 0.01, tau 0.001"
    print(
        json.dumps(
            {"bench": "noniid", "scenario": args.scenario, "workload": workload, "results": out}
        )
    )


if __name__ == "__main__":
    main()
