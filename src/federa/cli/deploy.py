"""`federa server` and `federa client`: a deployment over gRPC."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from federa.cli.config import read_toml
from federa.cli.run import config_from_args, describe_round, summary
from federa.errors import ConfigError


def _path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def load_tokens(path: str) -> dict[int, str]:
    """Read `[tokens]` client id -> token from a TOML file."""
    table = read_toml(path, "--auth-tokens").get("tokens")
    if not isinstance(table, dict) or not table:
        raise ConfigError(f"--auth-tokens: {path} needs a [tokens] table of client id = token")
    tokens: dict[int, str] = {}
    for key, value in table.items():
        if not str(key).isdigit() or not isinstance(value, str) or len(value) < 16:
            raise ConfigError(
                f"--auth-tokens: entry {key!r} in {path} must map a client id to a token of at "
                "least 16 characters"
            )
        tokens[int(key)] = value
    return tokens


def server_command(args: argparse.Namespace) -> int:
    """Run `federa server`; return the exit status."""
    from federa.cli.experiment import build_experiment
    from federa.cli.rundir import make_run_dir, write_run_dir
    from federa.cli.secagg import build_secure_aggregation
    from federa.server.serve import serve
    from federa.transport.grpc.tls import server_credentials

    cfg = config_from_args(args)
    experiment = build_experiment(cfg)
    cfg = experiment.config
    secure_aggregation = build_secure_aggregation(cfg, experiment.strategy)
    credentials = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together")
        credentials = server_credentials(
            Path(args.tls_cert), Path(args.tls_key), _path(args.tls_client_ca)
        )
    elif args.tls_client_ca:
        raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
    tokens = load_tokens(args.auth_tokens) if args.auth_tokens else None
    out = make_run_dir(cfg.out)
    console = Console(highlight=False)

    def on_ready(port: int) -> None:
        host = args.address.rsplit(":", 1)[0]
        console.print(f"federa server listening on {host}:{port}", soft_wrap=True)
        sys.stdout.flush()

    start = time.perf_counter()
    history = serve(
        experiment.strategy,
        address=args.address,
        num_rounds=cfg.rounds,
        initial=experiment.initial,
        seed=cfg.seed,
        min_clients=args.min_clients,
        round_timeout=args.round_timeout,
        wait_timeout=args.wait_timeout,
        credentials=credentials,
        tokens=tokens,
        checkpoint_dir=args.checkpoint_dir,
        resume=args.resume,
        run_config=cfg.to_toml_dict(),
        on_round=None if args.quiet else lambda rec: _print_round(console, rec),
        on_ready=on_ready,
        secure_aggregation=secure_aggregation,
    )
    write_run_dir(out, cfg, history, split=experiment.split)
    console.print(summary(history, out, time.perf_counter() - start), soft_wrap=True)
    return 0


def _print_round(console: Console, rec: Any) -> None:
    console.print(describe_round(rec), soft_wrap=True)
    sys.stdout.flush()


def client_command(args: argparse.Namespace) -> int:
    """Run `federa client`; return the exit status."""
    from federa.cli.experiment import build_experiment
    from federa.client.secagg import SecAggPlusClient
    from federa.transport.grpc.client import connect
    from federa.transport.grpc.tls import channel_credentials

    if args.num_partitions is not None:
        args.num_clients = args.num_partitions
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    cfg = config_from_args(args)
    if cfg.dp == "central":
        raise ConfigError("--dp central is applied by the server; a client takes --dp local")
    experiment = build_experiment(cfg)
    num = len(experiment.partitions)
    if not 0 <= args.partition_id < num:
        raise ConfigError(f"--partition-id must be in 0..{num - 1}, got {args.partition_id}")
    # Always ready for secure aggregation: the wrapper passes other tasks through.
    client = SecAggPlusClient(experiment.client_fn(args.partition_id))
    credentials = None
    if args.tls_ca or args.tls_cert or args.tls_key:
        credentials = channel_credentials(
            _path(args.tls_ca), _path(args.tls_cert), _path(args.tls_key)
        )
    console = Console(highlight=False, stderr=True)
    console.print(
        f"federa client {args.partition_id}/{num}: {len(experiment.partitions[args.partition_id])} "
        f"examples of {cfg.dataset}; connecting to {args.address}",
        soft_wrap=True,
    )
    reason = connect(
        client,
        args.address,
        client_id=args.partition_id,
        name=f"partition-{args.partition_id}",
        token=args.token,
        credentials=credentials,
        reconnect_timeout=args.reconnect_timeout,
    )
    console.print(f"federa client {args.partition_id}: done ({reason})", soft_wrap=True)
    return 0
