"""The `federa` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from federa.cli.config import (
    ACCOUNTANT_NAMES,
    ATTACK_NAMES,
    DATASETS,
    DP_MODES,
    DP_PARAMETERS,
    EMNIST_SPLITS,
    EXECUTORS,
    FIELD_TYPES,
    MODELS,
    OPTIMIZERS,
    PARTITIONS,
    SECAGG_PARAMETERS,
    STRATEGY_NAMES,
    STRATEGY_PARAMETERS,
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
    "augment": (
        "distort local minibatches of images at random (small affine maps, resize round "
        "trips, stroke width), seeded per client and round",
        None,
    ),
    "strategy": ("federated algorithm", STRATEGY_NAMES),
    "server_lr": ("server learning rate (fedavgm, fedadam, fedyogi, fedadagrad, scaffold)", None),
    "server_momentum": ("server momentum (fedavgm)", None),
    "beta_1": ("first-moment decay (fedadam, fedyogi, fedadagrad)", None),
    "beta_2": ("second-moment decay (fedadam, fedyogi, fedadagrad)", None),
    "tau": ("adaptivity / epsilon (fedadam, fedyogi, fedadagrad)", None),
    "proximal_mu": ("proximal coefficient mu (fedprox)", None),
    "num_byzantine": ("Byzantine clients f to tolerate (krum, multikrum, bulyan)", None),
    "num_selected": ("updates averaged by multikrum (m)", None),
    "trim_beta": ("fraction trimmed at each end per coordinate (trimmedmean)", None),
    "q": ("fairness exponent q (qfedavg)", None),
    "lipschitz": ("Lipschitz constant L, about 1/lr (qfedavg)", None),
    "attack": ("make some clients Byzantine (simulation only)", ATTACK_NAMES),
    "attackers": ("fraction of clients that attack, with --attack", None),
    "attack_scale": ("attack strength: update multiplier, noise sigma or constant", None),
    "dp": (
        "differential privacy: central (the server clips and noises, DP-FedAvg) or local "
        "(each client clips and noises its own update)",
        DP_MODES,
    ),
    "noise_multiplier": (
        "DP noise multiplier z: noise std over the clip norm (default with --target-epsilon: "
        "the smallest z that stays within it for --rounds)",
        None,
    ),
    "clip_norm": ("DP clip norm C on each client update (with --adaptive-clip: the start)", None),
    "adaptive_clip": (
        "adapt the clip norm to the median update norm (Andrew et al. 2021; --dp central)",
        None,
    ),
    "target_delta": ("DP delta for the epsilon reported; unset: min(1e-5, 1/N^1.1)", None),
    "target_epsilon": ("DP budget: stop before epsilon would exceed it", None),
    "accountant": ("DP accountant; unset: rdp (pld is tighter and slower)", ACCOUNTANT_NAMES),
    "secagg": (
        "secure aggregation (SecAgg+): the server learns only the sum of each round's "
        "updates (strategies that need only that sum: fedavg, fedprox, fedavgm, fedadam, ...)",
        None,
    ),
    "secagg_threshold": (
        "SecAgg+ shares needed to recover a client's secrets, in (degree/2, degree] "
        "(default: 2*degree//3 + 1)",
        None,
    ),
    "secagg_degree": (
        "SecAgg+ neighbours per client (default: 2*ceil(log2 n) + 1, at most n - 1)",
        None,
    ),
    "secagg_clip": ("SecAgg+ per-coordinate bound on a client's update [default: 1]", None),
    "stragglers": (
        "fraction of each round's clients that can only do 1 to E-1 local epochs "
        "(simulation only: Li et al. 2020's stragglers); dropped unless --partial-work",
        None,
    ),
    "partial_work": (
        "use stragglers' partial work instead of dropping them (as FedProx does)",
        None,
    ),
    "seed": ("run seed: the same seed gives the same result", None),
    "workers": (
        "clients run at a time: worker processes, or Ray actors with --executor ray "
        "(0 = in this process; with Ray, as many as the cluster's CPUs hold)",
        None,
    ),
    "executor": (
        "where clients run (default: serial, or process with --workers N, or ray with "
        "--ray-address; vectorized trains each round's cohort of PyTorch clients together)",
        EXECUTORS,
    ),
    "ray_address": (
        "address of a running Ray cluster for --executor ray (default: start a local one)",
        None,
    ),
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
        if FIELD_TYPES[name] is bool:
            parser.add_argument(
                "--" + name.replace("_", "-"),
                dest=name,
                action="store_const",
                const=True,
                default=None,
                help=text,
            )
            continue
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
            "(config.toml, history.json, metrics.csv, curves.png, model.safetensors, "
            "model.npz). With no "
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


TRAIN_OPTIONS = (
    "model",
    "local_epochs",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "augment",
)
STRATEGY_OPTIONS = ("strategy", *STRATEGY_PARAMETERS)
SERVER_ONLY = (
    "rounds",
    "fraction_train",
    "fraction_evaluate",
    "out",
    *STRATEGY_OPTIONS,
    "dp",
    *DP_PARAMETERS,
    "secagg",
    *SECAGG_PARAMETERS,
)
# A client applies local DP itself: it needs the mode, z and C.
CLIENT_DP_OPTIONS = ("dp", "noise_multiplier", "clip_norm")


def _add_tls(parser: argparse.ArgumentParser, *, server: bool) -> None:
    if server:
        parser.add_argument("--tls-cert", metavar="PEM", help="server certificate (enables TLS)")
        parser.add_argument("--tls-key", metavar="PEM", help="server private key")
        parser.add_argument(
            "--tls-client-ca",
            metavar="PEM",
            help="CA that signs client certificates: require mutual TLS",
        )
    else:
        parser.add_argument("--tls-ca", metavar="PEM", help="CA that signed the server (TLS)")
        parser.add_argument("--tls-cert", metavar="PEM", help="client certificate (mutual TLS)")
        parser.add_argument("--tls-key", metavar="PEM", help="client private key (mutual TLS)")


def _add_deploy_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    server = sub.add_parser(
        "server",
        help="serve a federated run to clients connecting over gRPC",
        description=(
            "Listen for clients, wait for --min-clients, and run the rounds over gRPC with the "
            "same strategy code as `federa run`; write the same run directory. With no "
            "dataset options it serves the embedded digits run."
        ),
    )
    add_options(server, [*DATA_OPTIONS, *TRAIN_OPTIONS, *SERVER_ONLY])
    server.add_argument("--address", default="0.0.0.0:9092", help="host:port to listen on")
    server.add_argument("--min-clients", type=int, default=2, help="clients to wait for")
    server.add_argument(
        "--round-timeout", type=float, help="seconds a round waits for stragglers [default: none]"
    )
    server.add_argument(
        "--wait-timeout", type=float, help="seconds to wait for --min-clients [default: forever]"
    )
    server.add_argument("--checkpoint-dir", help="write a checkpoint here after every round")
    server.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir"
    )
    server.add_argument(
        "--auth-tokens",
        metavar="TOML",
        help="per-client tokens: a [tokens] table mapping client ids to secrets",
    )
    _add_tls(server, server=True)
    server.add_argument("-q", "--quiet", action="store_true", help="print only the summary")
    server.set_defaults(handler="federa.cli.deploy:server_command")

    client = sub.add_parser(
        "client",
        help="join a federated run as one client",
        description=(
            "Connect to a federa server, train on one partition of a dataset when asked, and "
            "exit when the server ends the run. Use the same data options as the server."
        ),
    )
    add_options(client, [*DATA_OPTIONS, *TRAIN_OPTIONS, *CLIENT_DP_OPTIONS])
    client.add_argument("--address", default="127.0.0.1:9092", help="server host:port")
    client.add_argument(
        "--partition-id", type=int, required=True, help="which partition (and client id) this is"
    )
    client.add_argument(
        "--num-partitions", type=int, help="number of partitions (same as --num-clients)"
    )
    client.add_argument("--token", help="this client's authentication token")
    client.add_argument(
        "--threads",
        type=int,
        help="PyTorch threads for local training (use 1 when several clients share a host)",
    )
    client.add_argument(
        "--reconnect-timeout",
        type=float,
        default=60.0,
        help="give up after this many seconds without the server",
    )
    _add_tls(client, server=False)
    client.set_defaults(handler="federa.cli.deploy:client_command")


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
    _add_deploy_parsers(sub)
    _add_data_parser(sub)
    from federa.cli.certs import add_certs_parser

    add_certs_parser(sub)
    from federa.cli.ui import add_ui_parser

    add_ui_parser(sub)
    from federa.cli.compare import add_compare_parser
    from federa.cli.predict import add_predict_parser

    add_predict_parser(sub)
    add_compare_parser(sub)
    return parser


def _handler(spec: str) -> Callable[[argparse.Namespace], int]:
    """Import a command's function lazily, so `federa --help` does not import torch."""
    import importlib

    module, name = spec.split(":")
    handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `federa` command line and return its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "-v" not in argv and "--verbose" not in argv:
        # gRPC's C core logs to stderr on its own (failed binds, refused handshakes);
        # federa reports those as one line of its own. Set before grpc is imported.
        os.environ.setdefault("GRPC_VERBOSITY", "NONE")
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
