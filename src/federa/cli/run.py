"""`federa run`: simulate from a config and write a run directory."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from federa.cli.config import FIELD_TYPES, RunConfig, load_toml, resolve
from federa.server.history import History, RoundRecord
from federa.simulation.heterogeneity import Heterogeneity
from federa.simulation.simulate import make_executor
from federa.transport.inprocess import Executor


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def describe_round(rec: RoundRecord) -> str:
    """Return one display line for a round."""
    parts = [f"round {rec.round_num:>3}"]
    if rec.round_num > 0:
        parts.append(f"clients {rec.num_results}/{rec.num_sampled}")
        parts.append(f"train loss {_fmt(rec.train_loss)}")
        parts.append(f"acc {_fmt(rec.train_metrics.get('accuracy'))}")
        if "epsilon" in rec.train_metrics:
            parts.append(f"eps {_fmt(rec.train_metrics['epsilon'], '.3f')}")
    if rec.eval_loss is not None:
        parts.append(
            f"| eval loss {_fmt(rec.eval_loss)} acc {_fmt(rec.eval_metrics.get('accuracy'))}"
        )
    if rec.centralized_loss is not None:
        acc = rec.centralized_metrics.get("accuracy")
        parts.append(f"| test loss {_fmt(rec.centralized_loss)} acc {_fmt(acc)}")
    if rec.failures:
        parts.append(f"[yellow]failures {len(rec.failures)}[/yellow]")
    if "total_s" in rec.timings:
        parts.append(f"({rec.timings['total_s']:.2f}s)")
    return "  ".join(parts)


def describe_dp(cfg: RunConfig) -> str:
    """Return the run header's words on differential privacy ("" without --dp)."""
    if cfg.dp is None:
        return ""
    clip = f"{'adaptive ' if cfg.adaptive_clip else ''}clip {cfg.clip_norm:g}"
    budget = f", target epsilon {cfg.target_epsilon:g}" if cfg.target_epsilon else ""
    return (
        f", {cfg.dp} DP (noise multiplier {cfg.noise_multiplier:.4g}, {clip}, "
        f"delta {cfg.target_delta:.2g}{budget})"
    )


def build_executor(cfg: RunConfig) -> Executor:
    """Return the executor `cfg` names (--executor, --workers, --ray-address)."""
    name = cfg.executor_name
    if name == "ray":
        from federa.simulation.ray import RayExecutor

        return RayExecutor(
            address=cfg.ray_address,
            num_cpus=(cfg.workers or None) if cfg.ray_address is None else None,
            num_actors=cfg.workers or None,
        )
    if name == "vectorized":
        return make_executor("vectorized")
    return make_executor(cfg.workers)  # serial for 0, else that many worker processes


def build_heterogeneity(cfg: RunConfig) -> Heterogeneity | None:
    """Return the simulated stragglers `cfg` asks for (--stragglers, --partial-work)."""
    if not cfg.stragglers:
        return None
    return Heterogeneity(
        straggler_fraction=cfg.stragglers,
        partial_work=bool(cfg.partial_work),
        epochs=cfg.local_epochs,
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Resolve defaults < --config file < flags into a validated RunConfig."""
    file_values = load_toml(args.config) if args.config else {}
    flags = {name: getattr(args, name, None) for name in FIELD_TYPES}
    return resolve(file_values, flags)


def run_command(args: argparse.Namespace) -> int:
    """Run `federa run` with parsed arguments; return the exit status."""
    from federa.cli.experiment import build_experiment
    from federa.cli.rundir import make_run_dir, write_run_dir
    from federa.cli.secagg import build_secure_aggregation, describe_secagg
    from federa.simulation.simulate import simulate

    cfg = config_from_args(args)
    console = Console(highlight=False)
    experiment = build_experiment(cfg)
    cfg = experiment.config  # num_clients resolved (one per writer for natural partitions)
    secure_aggregation = build_secure_aggregation(cfg, experiment.strategy)
    out = make_run_dir(cfg.out)
    sizes = [len(p) for p in experiment.partitions]
    attack = f" under {cfg.attack} attack ({cfg.attackers:.0%} of clients)" if cfg.attack else ""
    console.print(
        f"federa run: {cfg.dataset} ({len(experiment.split.train)} train / "
        f"{len(experiment.split.test)} test), {cfg.model_name}, {cfg.num_clients} clients "
        f"({cfg.partition_name}, {min(sizes)}-{max(sizes)} examples each), "
        f"{type(experiment.strategy).__name__}{attack}{describe_dp(cfg)}{describe_secagg(cfg)}, "
        f"{cfg.rounds} rounds",
        soft_wrap=True,
    )
    start = time.perf_counter()
    with Progress(
        TextColumn("[bold]rounds"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=args.quiet,
    ) as progress:
        bar = progress.add_task("rounds", total=cfg.rounds)
        spent_at: list[int] = []

        def budget_spent(rec: RoundRecord) -> bool:
            refused = rec.round_num > 0 and not rec.num_sampled
            return refused and bool(getattr(experiment.strategy, "is_budget_exhausted", False))

        def on_round(rec: RoundRecord) -> None:
            if not args.quiet:
                progress.console.print(describe_round(rec), soft_wrap=True)
            if budget_spent(rec) and not spent_at:
                spent_at.append(rec.round_num)
                progress.console.print(
                    f"[yellow]privacy budget spent: round {rec.round_num} and later train "
                    "nobody[/yellow]",
                    soft_wrap=True,
                )
            if rec.round_num > 0:
                progress.advance(bar)

        history = simulate(
            experiment.client_fn,
            experiment.strategy,
            num_clients=len(experiment.partitions),
            num_rounds=cfg.rounds,
            initial=experiment.initial,
            seed=cfg.seed,
            executor=build_executor(cfg),
            on_round=on_round,
            secure_aggregation=secure_aggregation,
            heterogeneity=build_heterogeneity(cfg),
        )
    write_run_dir(out, cfg, history, split=experiment.split)
    console.print(summary(history, out, time.perf_counter() - start), soft_wrap=True)
    return 0


def summary(history: History, out: Path, seconds: float) -> str:
    """Return the closing lines: final accuracy, epsilon spent, and where the run went."""
    final = history.rounds[-1]
    acc = final.centralized_metrics.get("accuracy")
    best = max((v for _, v in history.series("centralized_accuracy")), default=None)
    spent = history.series("train_epsilon")
    privacy = f", epsilon {spent[-1][1]:.3f}" if spent else ""
    return (
        f"done in {seconds:.1f}s: final test accuracy {_fmt(acc)} (best {_fmt(best)}), "
        f"test loss {_fmt(final.centralized_loss)}{privacy}\nrun written to {out}/ "
        "(config.toml, history.json, metrics.csv, curves.png, model.safetensors, model.npz)"
    )
