"""In-memory labelled image datasets and train/test splits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from federa.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class Dataset:
    """A labelled set of images held in memory.

    Attributes:
        x: Images, float32 of shape (N, C, H, W).
        y: Class labels, int64 of shape (N,), each in [0, num_classes).
        num_classes: Number of classes the labels index.
        name: Short human-readable name, such as "mnist-train".
        groups: Optional natural client of each example (int64 of shape (N,)), such as
            the writer of a FEMNIST character; `partition_natural` splits by it.
        group_names: Optional name of each group id (group k is `group_names[k]`).
        class_names: Optional name of each class (class k is `class_names[k]`).
    """

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    num_classes: int
    name: str
    groups: npt.NDArray[np.int64] | None = None
    group_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.y.ndim != 1:
            raise ConfigError(
                f"dataset {self.name!r}: y must be 1-D (one label per example), "
                f"got shape {self.y.shape}; flatten the labels"
            )
        if len(self.x) != len(self.y):
            raise ConfigError(
                f"dataset {self.name!r}: x has {len(self.x)} examples but y has "
                f"{len(self.y)} labels; pass exactly one label per example"
            )
        if self.num_classes < 1:
            raise ConfigError(
                f"dataset {self.name!r}: num_classes must be >= 1, got {self.num_classes}"
            )
        if self.groups is not None and self.groups.shape != self.y.shape:
            raise ConfigError(
                f"dataset {self.name!r}: groups has shape {self.groups.shape} but y has "
                f"{self.y.shape}; give one group id per example"
            )
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"dataset {self.name!r}: {len(self.class_names)} class names for "
                f"{self.num_classes} classes"
            )

    def __len__(self) -> int:
        """Return the number of examples."""
        return len(self.y)

    def subset(self, indices: npt.NDArray[np.integer] | Sequence[int]) -> Dataset:
        """Return a new dataset holding the examples at `indices`, in that order.

        Args:
            indices: Integer positions into this dataset, such as one client's partition.
        """
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise ConfigError(
                f"dataset {self.name!r}: subset needs a 1-D array of integer indices, "
                f"got dtype {idx.dtype} with shape {idx.shape}"
            )
        return Dataset(
            x=self.x[idx],
            y=self.y[idx],
            num_classes=self.num_classes,
            name=self.name,
            groups=None if self.groups is None else self.groups[idx],
            group_names=self.group_names,
            class_names=self.class_names,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetSplit:
    """A training set and the held-out test set that goes with it.

    Attributes:
        train: Examples the clients train on (and that partitioners split).
        test: Held-out examples for centralized evaluation.
    """

    train: Dataset
    test: Dataset

    def __post_init__(self) -> None:
        if self.train.x.shape[1:] != self.test.x.shape[1:]:
            raise ConfigError(
                f"train and test examples differ in shape ({self.train.x.shape[1:]} vs "
                f"{self.test.x.shape[1:]}); both must come from the same dataset"
            )
        if self.train.num_classes != self.test.num_classes:
            raise ConfigError(
                f"train has {self.train.num_classes} classes but test has "
                f"{self.test.num_classes}; both must come from the same dataset"
            )

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Return the shape of one example, such as (1, 28, 28)."""
        return tuple(int(d) for d in self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """Return the number of classes."""
        return self.train.num_classes
