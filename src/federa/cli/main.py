"""The `federa` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from federa.cli.config import (
    DATASETS,
    EMNIST_SPLITS,
    FIELD_TYPES,
    MODELS,
    OPTIMIZERS,
    PARTITIONS,
    RunConfig,
)
from federa.errors import FederaError

_DEFAULTS = RunConfig()

# Choices are checked by validate(), which names the allowed values in one line.
_OPTION_HELP: dict[str, tuple[str, Sequence[str] | None]] = {
    "dataset": ("dataset to train on", sorted(DATASETS)),
    "data_dir": ("folder holding the dataset's files (not needed for digits)", None),
    "emnist_split": ("EMNIST split for --dataset emnist", EMNIST_SPLITS),
    "partition": (
        "how the training set is split between clients (default: natural for femnist, "
        "else dirichlet)",
        PARTITIONS,
    ),
    "alpha": ("Dirichlet concentration for --partition dirichlet (smaller = more skewed)", None),
    "min_partition_size": ("smallest client for --partition dirichlet", None),
    "shards_per_client": ("label shards per client for --partition shards", None),
    "sigma": ("log-normal sigma of client sizes for --partition quantity", None),
    "num_clients": (
        "number of simulated clients (default: one per writer for natural, else 10)",
        None,
    ),
    "model": ("model architecture (default: the dataset's own)", MODELS),
    "rounds": ("number of federated rounds", None),
    "fraction_train": ("fraction of clients sampled to train each round, in (0, 1]", None),
    "fraction_evaluate": (
        "fraction of clients that evaluate locally each round (default: every writer, on "
        "its own test split, for natural partitions; else 0)",
        None,
    ),
    "local_epochs": ("local epochs per round (E)", None),
    "batch_size": ("local minibatch size (B)", None),
    "lr": ("local learning rate", None),
    "optimizer": ("local optimizer", OPTIMIZERS),
    "momentum": ("SGD momentum", None),
    "weight_decay": ("L2 weight decay", None),
    "seed": ("run seed: the same seed gives the same result", None),
    "workers": ("worker processes for clients (0 = run them in this process)", None),
    "out": ("run directory to write (default: a new runs/<timestamp>)", None),
}
assert set(_OPTION_HELP) == set(FIELD_TYPES)
DATA_OPTIONS = (
    "dataset",
    "data_dir",
    "emnist_split",
    "partition",
    "alpha",
    "min_partition_size",
    "shards_per_client",
    "sigma",
    "num_clients",
    "seed",
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_options(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """Add `--config` and the RunConfig options `names` (unset flags stay None)."""
    parser.add_argument("--config", metavar="FILE", help="TOML file with any of these options")
    for name in names:
        text, choices = _OPTION_HELP[name]
        default = getattr(_DEFAULTS, name)
        shown = default if default is not None else "-"
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=FIELD_TYPES[name],
            default=None,
            metavar=name.upper() if choices is None else "{" + ",".join(choices) + "}",
            help=f"{text} [default: {shown}]",
        )


def _add_run_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    run = sub.add_parser(
        "run",
        help="simulate a federated training run",
        description=(
            "Simulate federated training on this machine and write a run directory "
            "(config.toml, history.json, metrics.csv, curves.png, model.npz). With no "
            "options it trains on scikit-learn's bundled digits: 10 clients, Dirichlet(0.5) "
            "label split, FedAvg, 20 rounds. Flags override values from --config."
        ),
    )
    add_options(run, list(_OPTION_HELP))
    run.add_argument("-q", "--quiet", action="store_true", help="print only the final summary")
    run.set_defaults(handler="federa.cli.run:run_command")


def _add_data_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    from federa.cli.data_download import add_download_parser

    data = sub.add_parser("data", help="download, inspect and partition datasets")
    data_sub = data.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=_Parser)
    data_sub.required = True
    describe = data_sub.add_parser(
        "describe",
        help="summarise how a partition spreads a dataset over clients",
        description=(
            "Partition a dataset as `federa run` would and print clients, examples per client "
            "and classes per client (min/median/max); write a label-distribution heat map."
        ),
    )
    add_options(describe, DATA_OPTIONS)
    describe.add_argument(
        "--plot",
        metavar="PNG",
        help="heat map to write [default: <dataset>-<partition>-labels.png]",
    )
    describe.set_defaults(handler="federa.cli.describe:describe_command")
    add_download_parser(data_sub)


def build_parser() -> argparse.ArgumentParser:
    """Return the `federa` argument parser."""
    from federa import __version__

    parser = _Parser(
        prog="federa",
        description=(
            "federa: federated learning. Clients keep their data and train locally; a server "
            "aggregates their models."
        ),
    )
    parser.add_argument("--version", action="version", version=f"federa {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each round's details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_run_parser(sub)
    _add_data_parser(sub)
    return parser


def _handler(spec: str) -> Callable[[argparse.Namespace], int]:
    """Import a command's function lazily, so `federa --help` does not import torch."""
    import importlib

    module, name = spec.split(":")
    handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `federa` command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _handler(args.handler)(args)
    except FederaError as exc:
        print(f"federa: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        print(
            f"federa: error: {exc.name} is not installed; install the extras with "
            "pip install 'federa[all]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("federa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
