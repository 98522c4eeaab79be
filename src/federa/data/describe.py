"""Summaries of how a partition spreads examples and labels over clients."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True, kw_only=True)
class PartitionSummary:
    """Per-client counts of a partition.

    Attributes:
        counts: Examples of each class held by each client, shape (clients, classes).
    """

    counts: npt.NDArray[np.int64]

    @property
    def num_clients(self) -> int:
        """Return the number of clients."""
        return int(self.counts.shape[0])

    @property
    def sizes(self) -> npt.NDArray[np.int64]:
        """Return the number of examples of each client."""
        sizes: npt.NDArray[np.int64] = self.counts.sum(axis=1)
        return sizes

    @property
    def classes_per_client(self) -> npt.NDArray[np.int64]:
        """Return how many distinct classes each client holds."""
        classes: npt.NDArray[np.int64] = (self.counts > 0).sum(axis=1)
        return classes

    def stats(self) -> dict[str, float]:
        """Return min/median/max of examples and classes per client, and the total."""
        out = {"clients": float(self.num_clients), "examples": float(self.sizes.sum())}
        for name, values in (("examples", self.sizes), ("classes", self.classes_per_client)):
            has = values.size > 0
            out[f"{name}_min"] = float(values.min()) if has else 0.0
            out[f"{name}_median"] = float(np.median(values)) if has else 0.0
            out[f"{name}_max"] = float(values.max()) if has else 0.0
        return out


def summarize_partition(
    labels: npt.NDArray[np.integer], parts: Sequence[npt.NDArray[np.integer]], num_classes: int
) -> PartitionSummary:
    """Count each client's examples per class."""
    counts = np.zeros((len(parts), num_classes), dtype=np.int64)
    for k, idx in enumerate(parts):
        counts[k] = np.bincount(labels[idx], minlength=num_classes)[:num_classes]
    return PartitionSummary(counts=counts)
