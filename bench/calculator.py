"""Handwriting calculator: federated training on 20 non-IID clients, then reading expressions.

Workload: the calculator set (MNIST digits + handwritten operators, 16 classes, in the
calculator's input format), the symbol CNN, 20 clients holding a Dirichlet(alpha=0.5)
label split, FedAvg (a random C=0.5 of the clients each round, their models averaged
weighted by example count), E=1, B=32, SGD momentum 0.9 with the learning rate sent
by the server: 0.05, divided by 2.5 after half the rounds and again after 5/6 of them
(a step decay; the client drift of non-IID FedAvg shrinks with the step). Reported:

- symbol accuracy of the final global model on the 10,603 held-out test symbols (10,000
  MNIST test digits and 603 test operators; goal >= 0.97), the best round's, and the
  accuracy of each class (the 100 test "/" count for 1% of the total);
- the fraction of 200 generated expressions read exactly (goal >= 0.90): each drawn by
  `federa.apps.calculator.synth` from held-out test symbols at their written size
  (random digits, operators, decimals, spacing, size, lighting, polarity and noise) and
  read by `read_expression` with the run's class counts (prior correction); also the
  fraction segmented into the right number of symbols, the per-symbol accuracy on
  those, and the same figures for symbols written in one piece (`one_piece`).

Prints one JSON line. The CPU is shared: set --threads (default 1). Training takes about
20 minutes for 50 rounds; `--run-dir` reads a run directory this bench wrote before
(`--out`, the same workload) instead of training again, and reports its model.

Run: python bench/calculator.py [--rounds 30] [--data-dir ../shared/data] [--out DIR]
     python bench/calculator.py --run-dir DIR  (reuse a trained run; no training)
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from federa.apps.calculator import Recognizer, read_expression
from federa.apps.calculator.recognizer import load_recognizer
from federa.apps.calculator.synth import compose, random_expression, symbol_pool
from federa.cli.config import RunConfig, load_toml, validate
from federa.cli.experiment import build_experiment
from federa.cli.rundir import make_run_dir, write_run_dir
from federa.core.messages import Config
from federa.data import DatasetSplit, load_calculator
from federa.server.history import RoundRecord
from federa.simulation import simulate
from federa.strategy import FedAvg
from federa.torch.arrays import arrays_to_module
from federa.torch.client import make_evaluate_fn
from federa.torch.models import build_model

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_expressions(
    recognizer: Recognizer, raw: DatasetSplit, count: int, seed: int, *, one_piece: bool
) -> dict[str, float]:
    """Compose `count` expressions from held-out symbols and read them; return the rates."""
    pool = symbol_pool(raw.test.x, raw.test.y, raw.test.class_names, one_piece=one_piece)
    rng = np.random.default_rng(seed)
    exact = segmented = symbols = right = length = 0
    for _ in range(count):
        expression = compose(random_expression(rng), pool, rng)
        reading = read_expression(expression.image, recognizer)
        length += len(expression.text)
        exact += reading.text == expression.text
        if len(reading.symbols) == len(expression.text):
            segmented += 1
            symbols += len(expression.text)
            right += sum(a == b for a, b in zip(reading.text, expression.text, strict=True))
    return {
        "read_exactly": exact / count,
        "segmented_exactly": segmented / count,
        "symbol_accuracy_in_expressions": right / max(symbols, 1),
        "mean_symbols_per_expression": length / count,
    }


def step_decay(round_num: int, *, rounds: int, lr: float) -> Config:
    """Return the round's local learning rate: lr, lr/2.5 after half, lr/6.25 after 5/6."""
    if round_num > rounds * 5 // 6:
        return {"lr": lr / 6.25}
    if round_num > rounds // 2:
        return {"lr": lr / 2.5}
    return {"lr": lr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--partition", default="dirichlet", choices=["dirichlet", "shards", "iid"])
    parser.add_argument("--fraction-train", type=float, default=0.5)
    parser.add_argument("--expressions", type=int, default=200)
    parser.add_argument(
        "--max-digits-per-class", type=int, help="subsample MNIST's training digits [all]"
    )
    parser.add_argument("--threads", type=int, default=1, help="PyTorch threads")
    parser.add_argument(
        "--augment",
        action="store_true",
        help="distort the clients' minibatches at random (federa.torch.augment)",
    )
    parser.add_argument("--out", help="also write a run directory here")
    parser.add_argument(
        "--run-dir", type=Path, help="read the model of a run this bench wrote; do not train"
    )
    parser.add_argument("--seed", type=int, default=2024, help="seed of the test expressions")
    args = parser.parse_args()
    mnist, symbols = args.data_dir / "mnist", args.data_dir / "math_symbols"
    if not (mnist / "train-images-idx3-ubyte.gz").exists() or not symbols.is_dir():
        print(json.dumps({"bench": "calculator", "skipped": f"{args.data_dir} lacks the data"}))
        return
    torch.set_num_threads(args.threads)
    zip_path = symbols / "mdas_symbols_v1.zip"
    split = load_calculator(
        mnist, zip_path, mnist_framing=True, max_digits_per_class=args.max_digits_per_class
    )
    if args.run_dir is not None:
        trained = load_recognizer(args.run_dir)
        args.augment = bool(load_toml(args.run_dir / "config.toml").get("augment"))
        report(args, split, trained.module, run_curve(args.run_dir), None, args.run_dir)
        return
    cfg = validate(
        RunConfig(
            dataset="calculator",
            data_dir=str(args.data_dir),
            model="symbol_cnn",
            partition=args.partition,
            alpha=0.5,
            num_clients=20,
            fraction_train=args.fraction_train,
            rounds=args.rounds,
            local_epochs=1,
            batch_size=32,
            lr=0.05,
            momentum=0.9,
            augment=args.augment or None,
            seed=0,
        )
    )
    experiment = build_experiment(cfg, split)
    model_fn = functools.partial(build_model, "symbol_cnn", split.in_shape, split.num_classes)
    strategy = FedAvg(
        fraction_train=cfg.fraction_train,
        min_train_clients=1,
        evaluate_fn=make_evaluate_fn(model_fn, (split.test.x, split.test.y)),
        train_config=functools.partial(step_decay, rounds=cfg.rounds, lr=cfg.lr),
    )
    start = time.perf_counter()

    def progress(rec: RoundRecord) -> None:
        acc = rec.centralized_metrics.get("accuracy")
        print(f"round {rec.round_num}: test accuracy {acc}", file=sys.stderr, flush=True)

    history = simulate(
        experiment.client_fn,
        strategy,
        num_clients=20,
        num_rounds=cfg.rounds,
        initial=experiment.initial,
        seed=cfg.seed,
        on_round=progress,
    )
    train_seconds = time.perf_counter() - start
    assert history.arrays is not None
    if args.out:
        write_run_dir(make_run_dir(args.out), replace(cfg, out=args.out), history, split=split)
    module = build_model("symbol_cnn", split.in_shape, split.num_classes)
    arrays_to_module(module, history.arrays)
    curve = history.series("centralized_accuracy")
    report(args, split, module, curve, train_seconds, None)


def run_curve(run_dir: Path) -> list[tuple[int, float]]:
    """Return (round, centralized accuracy) of a run directory's metrics.csv."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        return [
            (int(row["round"]), float(row["centralized_accuracy"]))
            for row in csv.DictReader(f)
            if row.get("centralized_accuracy")
        ]


def report(
    args: argparse.Namespace,
    split: DatasetSplit,
    module: torch.nn.Module,
    curve: list[tuple[int, float]],
    train_seconds: float | None,
    run_dir: Path | None,
) -> None:
    """Measure the trained model on the test symbols and expressions; print the JSON line."""
    mnist, zip_path = (
        args.data_dir / "mnist",
        args.data_dir / "math_symbols" / "mdas_symbols_v1.zip",
    )
    plain = Recognizer(module, split.train.class_names)  # the model's own probabilities
    predicted = plain.probabilities(split.test.x).argmax(axis=1)
    symbol_accuracy = float(np.mean(predicted == split.test.y))
    per_class = {
        name: round(float(np.mean(predicted[split.test.y == k] == k)), 4)
        for k, name in enumerate(split.test.class_names)
    }
    counts = np.bincount(split.train.y, minlength=split.num_classes).tolist()
    recognizer = Recognizer(module, split.train.class_names, class_counts=counts)
    raw = load_calculator(mnist, zip_path)  # the test symbols at the size they were written
    start = time.perf_counter()
    reading = read_expressions(recognizer, raw, args.expressions, args.seed, one_piece=False)
    one_piece = read_expressions(recognizer, raw, args.expressions, args.seed, one_piece=True)
    read_seconds = time.perf_counter() - start
    result: dict[str, Any] = {
        "bench": "calculator",
        "workload": f"calculator set, symbol_cnn, 20 clients {args.partition} (alpha 0.5), "
        f"FedAvg C={args.fraction_train:g} E=1 B=32 lr 0.05 step decay momentum 0.9, "
        f"{'augmented minibatches, ' if args.augment else ''}"
        f"{max(r for r, _ in curve)} rounds, {len(split.train)} training symbols",
        "model": f"read from {run_dir}" if run_dir else "trained in this run",
        "expression_seed": args.seed,
        "symbol_accuracy": round(symbol_accuracy, 4),
        "best_round_accuracy": round(max(a for _, a in curve), 4),
        "class_accuracy": per_class,
        "expressions": args.expressions,
        **{k: round(v, 4) for k, v in reading.items()},
        "one_piece_symbols": {k: round(v, 4) for k, v in one_piece.items()},
        "train_seconds": None if train_seconds is None else round(train_seconds, 1),
        "read_seconds_per_expression": round(read_seconds / (2 * args.expressions), 3),
    }
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
