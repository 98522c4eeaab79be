"""The neighbour graph of SecAgg+ and the checks of its degree and threshold.

Bell, Bonawitz, Gascón, Lepoint, Raykova. "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead." CCS 2020. Each client masks its input only with its
neighbours in a random k-regular graph, and shares its secrets only with them; with
k = O(log n) the protocol stays secure and correct with high probability while each
client's work grows with log n instead of n.

The graph here is a Harary graph on a random ordering of the clients: client i of the
ordering is joined to the k // 2 clients on each side of it on a ring and, for odd k,
to the client opposite it. The ordering comes from a public seed, so every party can
recompute it. With k odd and an odd number of clients no k-regular graph exists, and
the clients get k + 1 neighbours instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from federa.errors import ConfigError

MIN_CLIENTS = 3


def default_degree(num_clients: int) -> int:
    """Return the default number of neighbours, 2 ceil(log2 n) + 1, at most n - 1."""
    return min(num_clients - 1, 2 * math.ceil(math.log2(max(num_clients, 2))) + 1)


def default_threshold(degree: int) -> int:
    """Return the default reconstruction threshold, floor(2k / 3) + 1.

    It is above k / 2, so the shares of a client's two secrets that honest neighbours
    reveal can never both reach it, and it leaves a third of each neighbourhood free to
    drop out.
    """
    return 2 * degree // 3 + 1


def resolve(
    num_clients: int, degree: int | None = None, threshold: int | None = None
) -> tuple[int, int]:
    """Return (degree, threshold) for a cohort of `num_clients`, checked against it.

    Raises:
        ConfigError: the cohort is too small, the degree is not in [1, n - 1], or the
            threshold is not in (degree / 2, degree].
    """
    if num_clients < MIN_CLIENTS:
        raise ConfigError(
            f"secure aggregation needs at least {MIN_CLIENTS} clients per round, got "
            f"{num_clients} (with 2, each would learn the other's update from the sum); "
            "sample more clients"
        )
    k = default_degree(num_clients) if degree is None else degree
    if not 1 <= k <= num_clients - 1:
        raise ConfigError(
            f"--secagg-degree must be in [1, {num_clients - 1}] for a round of {num_clients} "
            f"clients, got {k}; lower it or sample more clients"
        )
    t = default_threshold(k) if threshold is None else threshold
    if not k / 2 < t <= k:
        raise ConfigError(
            f"--secagg-threshold must be more than half the degree and at most the degree "
            f"({k // 2 + 1}..{k} for degree {k}), got {t}"
        )
    return k, t


def neighbour_graph(clients: Sequence[int], degree: int, seed: int) -> dict[int, list[int]]:
    """Return each client's sorted neighbours in a random (near) `degree`-regular graph.

    Args:
        clients: Distinct client ids.
        degree: Neighbours per client, at least 1; n - 1 or more gives the complete graph.
        seed: Public seed of the random ordering.
    """
    ids = sorted(clients)
    n = len(ids)
    if n < 2:
        return {cid: [] for cid in ids}
    if degree >= n - 1:
        return {cid: [o for o in ids if o != cid] for cid in ids}
    order = [ids[i] for i in np.random.default_rng(seed).permutation(n)]
    k = degree + 1 if degree % 2 and n % 2 else degree
    links: dict[int, set[int]] = {cid: set() for cid in ids}
    for i, cid in enumerate(order):
        steps = list(range(1, k // 2 + 1)) + ([n // 2] if k % 2 else [])
        for step in steps:
            other = order[(i + step) % n]
            links[cid].add(other)
            links[other].add(cid)
    return {cid: sorted(links[cid]) for cid in ids}
