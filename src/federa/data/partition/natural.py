"""Natural partitioning: one client per group the data already comes in.

Federated datasets often record who produced each example, such as the writer of each
FEMNIST character (Caldas et al. "LEAF: A Benchmark for Federated Settings."
arXiv:1812.01097, 2018). Splitting by that id gives the realistic non-IID split.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from federa.errors import ConfigError


def partition_natural(
    groups: npt.NDArray[np.integer] | None, num_clients: int | None = None
) -> list[npt.NDArray[np.int64]]:
    """Give each distinct group id its own client, ordered by group id.

    With `num_clients=None` there is one client per group and together they cover every
    example. With a smaller `num_clients` only the groups with the `num_clients`
    smallest ids are used; the examples of the other groups belong to no client. This
    is the one partitioner that may leave data out.

    Args:
        groups: The natural group of every example (such as `Dataset.groups`), 1-D
            integers.
        num_clients: Number of clients, between 1 and the number of distinct groups;
            None for one per group.

    Returns:
        One int64 array of indices per client, each sorted ascending: client k holds
        every example of the k-th smallest group id.

    Raises:
        ConfigError: `groups` is missing, empty, not 1-D integers, or `num_clients` is
            out of range.
    """
    if groups is None:
        raise ConfigError(
            "this dataset has no natural groups (Dataset.groups is None); use "
            "partition_iid or partition_dirichlet instead"
        )
    groups = np.asarray(groups)
    if groups.ndim != 1 or groups.dtype.kind not in "iu":
        raise ConfigError(
            f"groups must be 1-D integers (one group id per example), got dtype "
            f"{groups.dtype} with shape {groups.shape}"
        )
    if len(groups) == 0:
        raise ConfigError("groups is empty; a natural partition needs at least one example")
    _, group_of = np.unique(groups, return_inverse=True)
    sizes = np.bincount(group_of)
    num_groups = len(sizes)
    if num_clients is not None:
        if num_clients < 1:
            raise ConfigError(f"num_clients must be >= 1 or None, got {num_clients}")
        if num_clients > num_groups:
            raise ConfigError(
                f"cannot give {num_clients} clients a natural group each: the data has "
                f"{num_groups} groups; use at most {num_groups} clients, or None for one "
                "per group"
            )
    # A stable sort by group keeps each group's indices ascending.
    order = np.argsort(group_of, kind="stable").astype(np.int64, copy=False)
    parts = np.split(order, np.cumsum(sizes)[:-1])
    return parts if num_clients is None else parts[:num_clients]
