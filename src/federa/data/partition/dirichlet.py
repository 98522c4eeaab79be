"""Label-skewed partitioning with per-class Dirichlet proportions.

Yurochkin et al. "Bayesian Nonparametric Federated Learning of Neural Networks."
ICML 2019. Hsu, Qi, Brown. "Measuring the Effects of Non-Identical Data Distribution
for Federated Visual Classification." arXiv:1909.06335, 2019. The scheme follows
FedLab's and Flower's DirichletPartitioner (without their optional self-balancing).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from federa.errors import ConfigError


def _check_args(
    num_examples: int, num_clients: int, alpha: float, seed: int, min_size: int, max_tries: int
) -> None:
    if num_clients < 1:
        raise ConfigError(f"num_clients must be >= 1, got {num_clients}")
    if num_clients > num_examples:
        raise ConfigError(
            f"cannot split {num_examples} examples between {num_clients} clients; "
            "use at most one client per example"
        )
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ConfigError(f"alpha must be a positive number, got {alpha}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if min_size < 0:
        raise ConfigError(f"min_size must be >= 0, got {min_size}")
    if min_size * num_clients > num_examples:
        raise ConfigError(
            f"cannot give each of {num_clients} clients {min_size} examples out of "
            f"{num_examples}; lower min_size or use fewer clients"
        )
    if max_tries < 1:
        raise ConfigError(f"max_tries must be >= 1, got {max_tries}")


def _assign_once(
    by_class: list[npt.NDArray[np.int64]],
    num_examples: int,
    num_clients: int,
    alpha: float,
    rng: np.random.Generator,
) -> npt.NDArray[np.int64]:
    """Draw one assignment: the client of each example."""
    client_of = np.empty(num_examples, dtype=np.int64)
    concentration = np.full(num_clients, alpha)
    for members in by_class:
        shuffled = rng.permutation(members)
        proportions = rng.dirichlet(concentration)
        if not np.isfinite(proportions).all():
            # Some numpy versions return NaN when every gamma draw underflows (tiny
            # alpha); the limit of Dir(alpha) as alpha -> 0 puts the class on one client.
            proportions = np.zeros(num_clients)
            proportions[rng.integers(num_clients)] = 1.0
        cuts = (np.cumsum(proportions)[:-1] * len(shuffled)).astype(np.int64)
        counts = np.diff(cuts, prepend=0, append=len(shuffled))
        client_of[shuffled] = np.repeat(np.arange(num_clients), counts)
    return client_of


def partition_dirichlet(
    labels: npt.NDArray[np.generic],
    num_clients: int,
    alpha: float,
    seed: int,
    min_size: int = 2,
    max_tries: int = 100,
) -> list[npt.NDArray[np.int64]]:
    """Split examples between clients with label skew controlled by `alpha`.

    For each class, draw client proportions p ~ Dir(alpha, ..., alpha) and deal that
    class's shuffled examples out by the cumulative proportions. Small alpha (0.1) gives
    each client a few dominant classes; large alpha (100) approaches an IID split.
    Draws repeat until every client holds at least `min_size` examples.

    Args:
        labels: The class label of every example, 1-D.
        num_clients: Number of clients, between 1 and len(labels).
        alpha: Dirichlet concentration, > 0.
        seed: Seed of the only generator used; the same seed gives the same partition.
        min_size: Fewest examples any client may end up with.
        max_tries: Draws to attempt before giving up on `min_size`.

    Returns:
        One int64 array of indices per client, each sorted ascending; together they
        hold every index in range(len(labels)) exactly once.

    Raises:
        ConfigError: An argument is out of range, or no draw in `max_tries` gave every
            client `min_size` examples.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ConfigError(f"labels must be 1-D (one per example), got shape {labels.shape}")
    num_examples = len(labels)
    _check_args(num_examples, num_clients, alpha, seed, min_size, max_tries)

    rng = np.random.default_rng(seed)
    _, class_of = np.unique(labels, return_inverse=True)
    order = np.argsort(class_of, kind="stable").astype(np.int64, copy=False)
    boundaries = np.cumsum(np.bincount(class_of))[:-1]
    by_class = np.split(order, boundaries)

    smallest = 0
    for _ in range(max_tries):
        client_of = _assign_once(by_class, num_examples, num_clients, alpha, rng)
        sizes = np.bincount(client_of, minlength=num_clients)
        smallest = int(sizes.min())
        if smallest >= min_size:
            # A stable sort by client keeps each client's indices ascending.
            by_client = np.argsort(client_of, kind="stable").astype(np.int64, copy=False)
            return np.split(by_client, np.cumsum(sizes)[:-1])
    raise ConfigError(
        f"Dirichlet partition with alpha={alpha:g} left a client with {smallest} < "
        f"min_size={min_size} examples in each of {max_tries} tries; lower min_size, "
        "raise alpha or use fewer clients"
    )
