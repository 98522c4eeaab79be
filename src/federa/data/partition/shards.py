"""Pathological non-IID partitioning: each client gets a few shards of label-sorted data.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas. "Communication-Efficient Learning of
Deep Networks from Decentralized Data." AISTATS 2017. Their MNIST split sorts the
60,000 training images by label, cuts them into 200 shards of 300 and gives each of
100 clients 2 shards, so that most clients see examples of only two digits.

Cutting the sorted list into equal shards lets a shard straddle two digits (MNIST's
class sizes are not multiples of 300), which gives some clients 3 or 4 labels. Here
shards are cut inside each class instead, with each class getting a number of shards
proportional to its size, so every shard holds one label and every client at most
`shards_per_client` labels, which is the split the paper describes; shard sizes then
vary slightly with class sizes (296 to 337 for MNIST, 300 when classes are equal).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from federa.errors import ConfigError


def partition_shards(
    labels: npt.NDArray[np.generic],
    num_clients: int,
    shards_per_client: int = 2,
    seed: int = 0,
) -> list[npt.NDArray[np.int64]]:
    """Cut each class into label-pure shards and deal each client a few.

    Classes get shards in proportion to their size (at least one each, largest
    remainders first) and each class's examples, in a seeded random order, are split
    into its shards with sizes differing by at most one. The shards are shuffled and
    each client gets `shards_per_client` of them, so a client holds at most
    `shards_per_client` labels. With fewer shards than classes no label-pure cut
    exists; the label-sorted examples are then cut into contiguous shards.

    Args:
        labels: The class label of every example, 1-D.
        num_clients: Number of clients, >= 1.
        shards_per_client: Shards each client gets, >= 1.
        seed: Seed of the only generator used; the same seed gives the same partition.

    Returns:
        One int64 array of indices per client, each sorted ascending; together they
        hold every index in range(len(labels)) exactly once.

    Raises:
        ConfigError: An argument is out of range, or there are more shards than examples.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ConfigError(f"labels must be 1-D (one per example), got shape {labels.shape}")
    if num_clients < 1:
        raise ConfigError(f"num_clients must be >= 1, got {num_clients}")
    if shards_per_client < 1:
        raise ConfigError(f"shards_per_client must be >= 1, got {shards_per_client}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    num_examples = len(labels)
    num_shards = num_clients * shards_per_client
    if num_shards > num_examples:
        raise ConfigError(
            f"cannot cut {num_examples} examples into {num_shards} shards "
            f"({num_clients} clients x {shards_per_client}); lower num_clients or "
            "shards_per_client"
        )

    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(num_examples).astype(np.int64, copy=False)
    # A stable sort of shuffled indices orders by label and breaks ties at random.
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    classes, starts, counts = np.unique(labels[by_label], return_index=True, return_counts=True)
    if num_shards >= len(classes):
        per_class = _shards_per_class(counts, num_shards)
        shards = [
            shard
            for start, count, k in zip(starts, counts, per_class, strict=True)
            for shard in np.array_split(by_label[start : start + count], k)
        ]
    else:
        shards = np.array_split(by_label, num_shards)
    dealt = rng.permutation(num_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([shards[s] for s in mine])) for mine in dealt]


def _shards_per_class(counts: npt.NDArray[np.int64], num_shards: int) -> npt.NDArray[np.int64]:
    """Split `num_shards` over classes in proportion to `counts`: >= 1 and <= count each."""
    ideal = num_shards * counts / counts.sum()
    alloc: npt.NDArray[np.int64] = np.clip(np.floor(ideal).astype(np.int64), 1, counts)
    # Hand out the rest by largest remainder (or take back from the smallest) within bounds.
    while (missing := num_shards - int(alloc.sum())) != 0:
        gap = ideal - alloc
        if missing > 0:
            gap[alloc >= counts] = -np.inf
            alloc[int(np.argmax(gap))] += 1
        else:
            gap[alloc <= 1] = np.inf
            alloc[int(np.argmin(gap))] -= 1
    return alloc
