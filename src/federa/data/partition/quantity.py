"""Quantity-skewed partitioning: clients hold random amounts of IID data.

Client sizes are proportional to log-normal draws, as in Acar et al. "Federated
Learning Based on Dynamic Regularization." ICLR 2021 (their unbalanced setting) and
FedLab's unbalanced IID partition. Li, Diao, Chen, He. "Federated Learning on Non-IID
Data Silos: An Experimental Study." ICDE 2022 study quantity skew as its own kind of
non-IID data (they draw the proportions from a Dirichlet instead).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from federa.errors import ConfigError


def _check_args(
    num_examples: int, num_clients: int, sigma: float, seed: int, min_size: int
) -> None:
    if num_examples < 0:
        raise ConfigError(f"num_examples must be >= 0, got {num_examples}")
    if num_clients < 1:
        raise ConfigError(f"num_clients must be >= 1, got {num_clients}")
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ConfigError(f"sigma must be a finite number >= 0, got {sigma}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if min_size < 0:
        raise ConfigError(f"min_size must be >= 0, got {min_size}")
    if min_size * num_clients > num_examples:
        raise ConfigError(
            f"cannot give each of {num_clients} clients {min_size} examples out of "
            f"{num_examples}; lower min_size or use fewer clients"
        )


def _sizes(
    num_examples: int, num_clients: int, sigma: float, min_size: int, rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Draw client sizes: `min_size` each, the rest by log-normal shares."""
    # log of LogNormal(0, sigma) draws; normalizing in log space cannot overflow.
    log_weights = rng.normal(0.0, sigma, size=num_clients)
    weights = np.exp(log_weights - log_weights.max())
    rest = num_examples - min_size * num_clients
    quotas = weights / weights.sum() * rest
    sizes: npt.NDArray[np.int64] = np.floor(quotas).astype(np.int64)
    # Largest-remainder rounding: the biggest fractional parts get one example more.
    shortfall = rest - int(sizes.sum())
    sizes[np.argsort(sizes - quotas, kind="stable")[:shortfall]] += 1
    sizes += min_size
    return sizes


def partition_quantity(
    num_examples: int,
    num_clients: int,
    sigma: float = 1.0,
    seed: int = 0,
    min_size: int = 1,
) -> list[npt.NDArray[np.int64]]:
    """Split shuffled examples between clients in log-normally distributed amounts.

    Each client first gets `min_size` examples; the rest are shared in proportion to
    draws from LogNormal(0, sigma), rounded by largest remainder so the sizes sum to
    `num_examples` exactly. The examples themselves are a uniform shuffle, so the label
    mix of every client matches the whole dataset's in expectation. sigma=0 gives
    near-equal sizes; sigma=1 a spread of roughly 10x between large and small clients.

    Args:
        num_examples: Size of the dataset being split.
        num_clients: Number of clients, >= 1.
        sigma: Standard deviation of the log of the size weights, >= 0.
        seed: Seed of the only generator used; the same seed gives the same partition.
        min_size: Fewest examples any client gets, >= 0.

    Returns:
        One int64 array of indices per client, each sorted ascending; together they
        hold every index in range(num_examples) exactly once.

    Raises:
        ConfigError: An argument is out of range, or `min_size * num_clients` exceeds
            `num_examples`.
    """
    _check_args(num_examples, num_clients, sigma, seed, min_size)
    rng = np.random.default_rng(seed)
    sizes = _sizes(num_examples, num_clients, sigma, min_size, rng)
    order = rng.permutation(num_examples).astype(np.int64, copy=False)
    return [np.sort(part) for part in np.split(order, np.cumsum(sizes)[:-1])]
