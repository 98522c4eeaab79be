"""`federa compare`: several runs' accuracy and loss curves on one figure, and a table.

The typical use is the IID versus non-IID comparison: train the same model with two
partitions and see how much slower (or lower) the skewed one converges. Rounds to a
target accuracy are read as McMahan et al. (AISTATS 2017) do: from the best-so-far
accuracy curve, with linear interpolation between the rounds around the crossing.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from federa.cli.config import read_toml
from federa.errors import ConfigError, FederaError
from federa.server.history import History

__all__ = [
    "RunCurves",
    "add_compare_parser",
    "format_table",
    "load_run",
    "plot_runs",
    "rounds_to_target",
    "summary_rows",
]

_ParserT = TypeVar("_ParserT", bound=argparse.ArgumentParser)
# Metric sources, best first: the server's test set, then the clients' own evaluation,
# then what the clients reported while training.
_KINDS = (("centralized", "test"), ("eval", "clients' eval"), ("train", "train"))


def rounds_to_target(curve: Sequence[tuple[int, float]], target: float) -> float | None:
    """Return the (interpolated) round where the best-so-far accuracy first reaches `target`.

    Args:
        curve: (round_num, accuracy) pairs in round order; round 0, the initial model,
            may be included.
        target: The accuracy to reach.

    Returns:
        The round, linearly interpolated between the last round below the target and the
        first at or above it (an integer when the target is reached at round 0 or hit
        exactly), or None when the run never reaches it.
    """
    best_prev, round_prev = 0.0, 0
    best = 0.0
    for round_num, accuracy in curve:
        best = max(best, accuracy)
        if best >= target:
            if best == best_prev or round_num == round_prev:
                return float(round_num)
            return round_prev + (target - best_prev) / (best - best_prev) * (round_num - round_prev)
        best_prev, round_prev = best, round_num
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunCurves:
    """What `federa compare` shows of one run.

    Attributes:
        path: The run directory.
        label: Its name and partition, e.g. "noniid (dirichlet alpha=0.5, 20 clients)".
        source: Which accuracy it is: "test", "clients' eval" or "train".
        accuracy: (round_num, accuracy) pairs.
        loss: (round_num, loss) pairs from the same source.
    """

    path: Path
    label: str
    source: str
    accuracy: list[tuple[int, float]]
    loss: list[tuple[int, float]]


def _partition(config: dict[str, object]) -> str:
    scheme = str(config.get("partition", ""))
    details = {
        "dirichlet": f"alpha={config.get('alpha')}",
        "shards": f"{config.get('shards_per_client')} shards/client",
        "quantity": f"sigma={config.get('sigma')}",
    }
    extra = details.get(scheme)
    clients = config.get("num_clients")
    parts = [p for p in (scheme, extra, f"{clients} clients" if clients else "") if p]
    return ", ".join(parts)


def load_run(path: str | os.PathLike[str]) -> RunCurves:
    """Read a run directory's history.json (and config.toml, for the label).

    Raises:
        FederaError: The folder or its history.json is missing or damaged, or the
            history has no accuracy.
    """
    run = Path(path)
    if not run.is_dir():
        raise ConfigError(f"run directory {run} does not exist; pass folders federa run wrote")
    history_file = run / "history.json"
    if not history_file.is_file():
        raise ConfigError(f"{run} has no history.json; pass a folder federa run wrote")
    history = History.from_json(history_file)
    config = read_toml(run / "config.toml", str(run)) if (run / "config.toml").is_file() else {}
    name = run.resolve().name
    partition = _partition(config)
    label = f"{name} ({partition})" if partition else name
    for kind, source in _KINDS:
        accuracy = [(r, v) for r, v in history.series(f"{kind}_accuracy") if math.isfinite(v)]
        if accuracy:
            loss = [(r, v) for r, v in history.series(f"{kind}_loss") if math.isfinite(v)]
            return RunCurves(path=run, label=label, source=source, accuracy=accuracy, loss=loss)
    raise FederaError(f"{history_file} records no accuracy; there is nothing to compare")


def _late_window(runs: Sequence[RunCurves]) -> tuple[int, float, float] | None:
    """Return (first round, low, high) of the accuracies over the last three quarters."""
    last = max(r for run in runs for r, _ in run.accuracy)
    first = max(1, last // 4)
    values = [v for run in runs for r, v in run.accuracy if r >= first]
    if last < 4 or not values:
        return None
    spread = max(values) - min(values)
    return first, min(values) - 0.1 * spread - 1e-3, max(values) + 0.1 * spread + 1e-3


def plot_runs(runs: Sequence[RunCurves], out: Path, target: float | None = None) -> None:
    """Draw every run's accuracy (left) and loss (right) against the round to a PNG.

    The accuracy panel has an inset zoomed on the last three quarters of the rounds,
    where runs differ by fractions of a percent; the loss axis is logarithmic.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    window = _late_window(runs)
    inset = ax_acc.inset_axes((0.35, 0.08, 0.6, 0.55)) if window else None
    for run in runs:
        label = run.label if run.source == "test" else f"{run.label} [{run.source}]"
        rounds, values = zip(*run.accuracy, strict=True)
        line = ax_acc.plot(rounds, values, "-o", markersize=2.5, label=label)
        colour = line[0].get_color()
        if inset is not None:
            inset.plot(rounds, values, "-o", markersize=2, color=colour)
        if run.loss:
            ax_loss.plot(*zip(*run.loss, strict=True), "-o", markersize=2.5, color=colour)
    if target is not None:
        for ax in (ax_acc, inset):
            if ax is not None:
                ax.axhline(target, color="grey", linestyle="--", linewidth=1)
    for ax, name in ((ax_acc, "accuracy"), (ax_loss, "loss")):
        ax.set_xlabel("round")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    ax_acc.set_ylim(0.0, 1.0)
    if inset is not None and window is not None:
        first, low, high = window
        inset.set_xlim(first - 0.5, max(r for run in runs for r, _ in run.accuracy) + 0.5)
        inset.set_ylim(low, high)
        inset.xaxis.set_major_locator(MaxNLocator(integer=True))
        inset.tick_params(labelsize="x-small")
        inset.grid(alpha=0.3)
    if all(v > 0 for run in runs for _, v in run.loss) and any(run.loss for run in runs):
        ax_loss.set_yscale("log")
    handles, labels = ax_acc.get_legend_handles_labels()
    if target is not None:
        handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=1))
        labels.append(f"target {target:g}")
    fig.legend(handles, labels, loc="outside lower center", ncols=min(3, len(labels)))
    ax_acc.set_title("accuracy")
    ax_loss.set_title("loss")
    tmp = out.with_name(out.stem + ".tmp.png")
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, out)
    except OSError as exc:
        raise ConfigError(f"--out: cannot write {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def summary_rows(runs: Sequence[RunCurves], target: float) -> list[list[str]]:
    """Return one table row per run: label, rounds, final, best (round), rounds to target."""
    rows = []
    for run in runs:
        best_round, best = max(run.accuracy, key=lambda p: (p[1], -p[0]))
        rows.append(
            [
                run.label,
                run.source,
                str(max(r for r, _ in run.accuracy)),
                _fmt(run.accuracy[-1][1], ".4f"),
                f"{best:.4f} (round {best_round})",
                _fmt(rounds_to_target(run.accuracy, target), ".1f"),
            ]
        )
    return rows


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Return a plain-text table: the first column left-aligned, the others right."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def compare_command(args: argparse.Namespace) -> int:
    """Run `federa compare` with parsed arguments; return the exit status."""
    if not 0.0 < args.target <= 1.0:
        raise ConfigError(f"--target must be an accuracy in (0, 1], got {args.target:g}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ConfigError(f"--out: folder {out.parent} does not exist; create it first")
    runs = [load_run(path) for path in args.runs]
    plot_runs(runs, out, args.target)
    headers = ["run", "accuracy", "rounds", "final", "best", f"rounds to {args.target:g}"]
    print(format_table(headers, summary_rows(runs, args.target)))
    print(f"curves written to {out}")
    return 0


def add_compare_parser(subparsers: argparse._SubParsersAction[_ParserT]) -> None:
    """Add `compare RUN_DIR... [--out PNG] [--target ACC]`."""
    parser = subparsers.add_parser(
        "compare",
        help="plot several runs' accuracy and loss curves together",
        description=(
            "Draw the accuracy and loss per round of several runs (such as an IID and a "
            "non-IID partition of the same training) on one figure, and print each run's "
            "final and best accuracy and the rounds it took to reach --target (read from "
            "the best-so-far curve, interpolated, as McMahan et al. 2017 do)."
        ),
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories to compare")
    parser.add_argument(
        "--out", default="compare.png", metavar="PNG", help="figure to write [default: compare.png]"
    )
    parser.add_argument(
        "--target", type=float, default=0.97, help="accuracy for rounds-to-target [default: 0.97]"
    )
    parser.set_defaults(handler="federa.cli.compare:compare_command")
