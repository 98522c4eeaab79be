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
        """Return min/median/max of examples and classes per client, and totals."""
        sizes, classes = self.sizes, self.classes_per_client
        return {
            "clients": float(self.num_clients),
            "examples": float(sizes.sum()),
            "examples_min": float(sizes.min(initial=0)),
            "examples_median": float(np.median(sizes)) if sizes.size else 0.0,
            "examples_max": float(sizes.max(initial=0)),
            "classes_min": float(classes.min(initial=0)),
            "classes_median": float(np.median(classes)) if classes.size else 0.0,
            "classes_max": float(classes.max(initial=0)),
        }


def summarize_partition(
    labels: npt.NDArray[np.integer], parts: Sequence[npt.NDArray[np.integer]], num_classes: int
) -> PartitionSummary:
    """Count each client's examples per class."""
    counts = np.zeros((len(parts), num_classes), dtype=np.int64)
    for k, idx in enumerate(parts):
        counts[k] = np.bincount(labels[idx], minlength=num_classes)[:num_classes]
    return PartitionSummary(counts=counts)
