"""The run directory: config.toml, history.json, metrics.csv, curves.png and the model.

The final model is written twice: model.safetensors (arrays plus what is needed to use
them: architecture, class names, input shape and format; see
`federa.server.model_file`) and model.npz (the bare arrays, for numpy users).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from federa.cli.config import RunConfig
from federa.data.calculator import CALCULATOR_CLASSES, CALCULATOR_FRAMING
from federa.data.dataset import DatasetSplit
from federa.errors import ConfigError
from federa.server.history import History, RoundRecord
from federa.server.model_file import MODEL_FILE, save_model_file

# What a run of each dataset feeds its model, when the caller does not pass the split.
_KNOWN_INPUTS: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    "calculator": ((1, 28, 28), CALCULATOR_CLASSES),
}


def make_run_dir(out: str | None, root: Path = Path("runs")) -> Path:
    """Create and return the run directory: `out`, or a new runs/<timestamp> folder.

    An `out` that already holds files is refused rather than overwritten.
    """
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"--out: {path} already exists and is not empty; choose a new folder")
        path.mkdir(parents=True, exist_ok=True)
        return path
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for suffix in ["", *(f"-{i}" for i in range(1, 1000))]:
        path = root / f"{stamp}{suffix}"
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise ConfigError(f"cannot create a new run folder under {root}; pass --out")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_config(path: Path, cfg: RunConfig) -> None:
    """Write the resolved config as TOML; `federa run --config` on it repeats the run."""
    import tomli_w

    _atomic_write(path, tomli_w.dumps(cfg.to_toml_dict()))


def metric_columns(history: History) -> list[str]:
    """Return the metrics.csv columns for `history`."""
    names: dict[str, None] = {}
    for rec in history.records():
        for kind, metrics in (
            ("train", rec.train_metrics),
            ("eval", rec.eval_metrics),
            ("centralized", rec.centralized_metrics),
        ):
            for name in metrics:
                names.setdefault(f"{kind}_{name}", None)
    base = ["round", "num_sampled", "num_results", "num_failures", "is_accepted"]
    losses = ["train_loss", "eval_loss", "centralized_loss"]
    timings = ["train_s", "evaluate_s", "centralized_s", "total_s"]
    return base + losses + [n for n in names if n not in losses] + timings


def _row(rec: RoundRecord, columns: list[str], history: History) -> dict[str, Any]:
    row: dict[str, Any] = {
        "round": rec.round_num,
        "num_sampled": rec.num_sampled,
        "num_results": rec.num_results,
        "num_failures": len(rec.failures),
        "is_accepted": int(rec.is_accepted),
    }
    row.update(
        {k: rec.timings.get(k) for k in ("train_s", "evaluate_s", "centralized_s", "total_s")}
    )
    for column in columns:
        if column not in row:
            row[column] = dict(history.series(column)).get(rec.round_num)
    return {
        k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
        for k, v in row.items()
    }


def write_metrics_csv(path: Path, history: History) -> None:
    """Write one row per round (round 0 is the initial model's centralized evaluation)."""
    columns = metric_columns(history)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for rec in history.records():
            writer.writerow(_row(rec, columns, history))
    os.replace(tmp, path)


def plot_curves(path: Path, history: History, title: str = "") -> None:
    """Draw accuracy and loss per round (train, distributed eval, centralized) to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, metric in ((ax_acc, "accuracy"), (ax_loss, "loss")):
        for kind, label, style in (
            ("centralized", "test (centralized)", "-o"),
            ("eval", "clients' eval", "-s"),
            ("train", "train (clients)", "--"),
        ):
            points = history.series(f"{kind}_{metric}")
            if points:
                rounds, values = zip(*points, strict=True)
                ax.plot(rounds, values, style, label=label, markersize=3)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if ax.get_lines():  # a run without metrics has nothing to label
            ax.legend()
    ax_acc.set_ylim(0, 1)
    if title:
        fig.suptitle(title)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def model_metadata(cfg: RunConfig, split: DatasetSplit | None = None) -> dict[str, str]:
    """Return the strings model.safetensors records beside the arrays of a run.

    Keys: "model" (a `federa.torch.models.MODELS` name), "dataset", "strategy",
    "rounds", "seed", and where known "in_shape", "class_names" and "class_counts"
    (training examples per class; JSON lists), "input" (pixel scale and polarity) and,
    for the calculator, "framing".
    """
    meta = {
        "model": cfg.model_name,
        "dataset": cfg.dataset,
        "strategy": cfg.strategy,
        "rounds": str(cfg.rounds),
        "seed": str(cfg.seed),
    }
    in_shape, class_names = (
        (split.in_shape, split.train.class_names)
        if split is not None
        else _KNOWN_INPUTS.get(cfg.dataset, ((), ()))
    )
    if in_shape:
        meta["in_shape"] = json.dumps(list(in_shape))
    if class_names:
        meta["class_names"] = json.dumps(list(class_names), ensure_ascii=False)
    if split is not None:
        counts = np.bincount(split.train.y, minlength=split.num_classes)
        meta["class_counts"] = json.dumps([int(c) for c in counts])
    if cfg.dataset in ("calculator", "mnist", "emnist", "femnist"):
        meta["input"] = "grayscale in [0, 1], white ink on black"
    if cfg.dataset == "calculator":
        meta["framing"] = CALCULATOR_FRAMING
    return meta


def write_run_dir(
    path: Path, cfg: RunConfig, history: History, *, split: DatasetSplit | None = None
) -> None:
    """Write every output file of a finished run into `path`.

    Args:
        path: The run directory (it exists).
        cfg: The resolved config.
        history: The run's history; its final arrays become the model files.
        split: The data the run trained on, for the model's class names and input
            shape (known without it for the calculator).
    """
    write_config(path / "config.toml", cfg)
    _atomic_write(path / "history.json", history.to_json() + "\n")
    write_metrics_csv(path / "metrics.csv", history)
    plot_curves(
        path / "curves.png", history, title=f"{cfg.dataset} / {cfg.model_name} / {cfg.strategy}"
    )
    if history.arrays is not None:
        save_model_file(path / MODEL_FILE, history.arrays, model_metadata(cfg, split))
        tmp = path / "model.tmp.npz"
        with tmp.open("wb") as fh:
            np.savez(fh, allow_pickle=False, **history.arrays.to_dict())
        os.replace(tmp, path / "model.npz")
