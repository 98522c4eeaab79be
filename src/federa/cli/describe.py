"""`federa data describe`: how a partition spreads a dataset over clients."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table

from federa.cli.run import config_from_args
from federa.data import PartitionSummary, summarize_partition


def plot_label_heatmap(path: Path, summary: PartitionSummary, title: str) -> None:
    """Draw examples per (client, class) as a heat map PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = summary.counts
    height = min(12.0, 2.5 + 0.12 * counts.shape[0])
    width = min(14.0, 4.0 + 0.18 * counts.shape[1])
    fig, ax = plt.subplots(figsize=(width, height), constrained_layout=True)
    image = ax.imshow(counts, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="examples")
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def describe_command(args: argparse.Namespace) -> int:
    """Run `federa data describe`; return the exit status."""
    from federa.cli.experiment import load_dataset, partition, resolve_num_clients

    cfg = config_from_args(args)
    split = load_dataset(cfg)
    num_clients = resolve_num_clients(cfg, split)
    parts = partition(cfg, split, num_clients)
    summary = summarize_partition(split.train.y, parts, split.num_classes)
    stats = summary.stats()
    console = Console(highlight=False)
    console.print(
        f"{cfg.dataset}: {len(split.train)} train / {len(split.test)} test examples, "
        f"{split.num_classes} classes, shape {split.in_shape}; partition {cfg.partition_name} "
        f"over {num_clients} clients",
        soft_wrap=True,
    )
    table = Table("per client", "min", "median", "max")
    for label, key in (("examples", "examples"), ("classes", "classes")):
        table.add_row(label, *(f"{stats[f'{key}_{s}']:g}" for s in ("min", "median", "max")))
    console.print(table)
    covered = int(stats["examples"])
    if covered != len(split.train):
        console.print(f"{len(split.train) - covered} training examples belong to no client")
    plot = Path(args.plot or f"{cfg.dataset}-{cfg.partition_name}-labels.png")
    plot_label_heatmap(plot, summary, f"{cfg.dataset}, {cfg.partition_name}, {num_clients} clients")
    console.print(f"label distribution written to {plot}")
    return 0
