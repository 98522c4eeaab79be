"""IID partitioning: every client gets a uniformly random, equally sized share."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from federa.errors import ConfigError


def partition_iid(num_examples: int, num_clients: int, seed: int) -> list[npt.NDArray[np.int64]]:
    """Shuffle the example indices and cut them into `num_clients` near-equal parts.

    Part sizes differ by at most one. The same seed always gives the same partition.

    Args:
        num_examples: Size of the dataset being split.
        num_clients: Number of parts, between 1 and `num_examples`.
        seed: Seed of the shuffle, >= 0.

    Returns:
        One int64 array of indices per client, each sorted ascending; together they
        hold every index in range(num_examples) exactly once.

    Raises:
        ConfigError: An argument is out of range.
    """
    if num_clients < 1:
        raise ConfigError(f"num_clients must be >= 1, got {num_clients}")
    if num_clients > num_examples:
        raise ConfigError(
            f"cannot split {num_examples} examples between {num_clients} clients; "
            "use at most one client per example"
        )
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    order = np.random.default_rng(seed).permutation(num_examples).astype(np.int64, copy=False)
    return [np.sort(part) for part in np.array_split(order, num_clients)]
