import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federa.data import partition_dirichlet
from federa.errors import ConfigError

SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def labelled(
    draw: st.DrawFn, min_per_client: int = 1, min_clients: int = 1
) -> tuple[npt.NDArray[np.int64], int]:
    """Draw labels (classes of random sizes, in random order) and a client count."""
    num_clients = draw(st.integers(min_clients, 12))
    num_classes = draw(st.integers(1, 6))
    counts = draw(st.lists(st.integers(1, 60), min_size=num_classes, max_size=num_classes))
    shortfall = max(0, num_clients * min_per_client - sum(counts))
    counts[0] += shortfall
    labels = np.repeat(np.arange(num_classes, dtype=np.int64) * 7, counts)  # sparse class ids
    order = np.random.default_rng(draw(SEEDS)).permutation(len(labels))
    return labels[order], num_clients


def _same(a: list[npt.NDArray[np.int64]], b: list[npt.NDArray[np.int64]]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def _label_skew(labels: npt.NDArray[np.int64], parts: list[npt.NDArray[np.int64]]) -> float:
    """Mean total-variation distance between each client's label mix and the global one."""
    classes = np.unique(labels)
    overall = np.array([np.mean(labels == c) for c in classes])
    distances = []
    for part in parts:
        local = np.array([np.mean(labels[part] == c) for c in classes])
        distances.append(0.5 * np.abs(local - overall).sum())
    return float(np.mean(distances))


@settings(max_examples=60, deadline=None)
@given(labelled(), st.floats(0.01, 100.0), SEEDS)
def test_dirichlet_parts_are_disjoint_and_cover_every_index_once(
    data: tuple[npt.NDArray[np.int64], int], alpha: float, seed: int
) -> None:
    labels, num_clients = data
    parts = partition_dirichlet(labels, num_clients, alpha=alpha, seed=seed, min_size=0)
    assert len(parts) == num_clients
    assert all(p.dtype == np.int64 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted, so no repeats within a part
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))


@settings(max_examples=40, deadline=None)
@given(labelled(min_per_client=20), st.floats(1.0, 100.0), st.integers(0, 5), SEEDS)
def test_dirichlet_gives_every_client_at_least_min_size(
    data: tuple[npt.NDArray[np.int64], int], alpha: float, min_size: int, seed: int
) -> None:
    labels, num_clients = data
    parts = partition_dirichlet(labels, num_clients, alpha=alpha, seed=seed, min_size=min_size)
    assert min(len(p) for p in parts) >= min_size
    assert sum(len(p) for p in parts) == len(labels)


@settings(max_examples=30, deadline=None)
@given(labelled(), st.floats(0.01, 100.0), SEEDS)
def test_dirichlet_same_seed_gives_same_parts(
    data: tuple[npt.NDArray[np.int64], int], alpha: float, seed: int
) -> None:
    labels, num_clients = data
    first = partition_dirichlet(labels, num_clients, alpha=alpha, seed=seed, min_size=0)
    second = partition_dirichlet(labels, num_clients, alpha=alpha, seed=seed, min_size=0)
    assert _same(first, second)


@settings(max_examples=30, deadline=None)
@given(labelled(min_per_client=20, min_clients=2), st.floats(0.5, 100.0), SEEDS)
def test_dirichlet_different_seeds_give_different_parts(
    data: tuple[npt.NDArray[np.int64], int], alpha: float, seed: int
) -> None:
    labels, num_clients = data
    draws = [
        partition_dirichlet(labels, num_clients, alpha=alpha, seed=seed + k, min_size=0)
        for k in range(5)
    ]
    # Two seeds may collide by chance when a class lands whole on one client; five all
    # colliding is vanishingly unlikely for alpha >= 0.5 and >= 20 examples per client.
    assert not all(_same(draws[0], other) for other in draws[1:])


def test_small_alpha_gives_more_label_skew_than_large_alpha() -> None:
    labels = np.repeat(np.arange(10, dtype=np.int64), 200)
    for seed in range(3):
        skewed = partition_dirichlet(labels, 10, alpha=0.1, seed=seed)
        near_iid = partition_dirichlet(labels, 10, alpha=100.0, seed=seed)
        assert _label_skew(labels, skewed) > 0.5
        assert _label_skew(labels, near_iid) < 0.1


def test_dirichlet_with_one_client_gives_it_everything() -> None:
    labels = np.array([3, 1, 3, 2, 1], dtype=np.int64)
    (only,) = partition_dirichlet(labels, 1, alpha=0.3, seed=0)
    np.testing.assert_array_equal(only, np.arange(5))


def test_dirichlet_gives_up_after_max_tries_and_says_what_to_do() -> None:
    # Two classes and tiny alpha put each class on one client: 8 of 10 clients stay empty.
    labels = np.repeat(np.arange(2, dtype=np.int64), 50)
    with pytest.raises(ConfigError, match="lower min_size, raise alpha or use fewer clients"):
        partition_dirichlet(labels, 10, alpha=0.001, seed=0, min_size=1, max_tries=5)


@pytest.mark.parametrize(
    ("num_clients", "alpha", "seed", "min_size", "max_tries", "message"),
    [
        (0, 1.0, 0, 1, 100, "num_clients must be >= 1"),
        (11, 1.0, 0, 1, 100, "cannot split 10 examples between 11 clients"),
        (2, 0.0, 0, 1, 100, "alpha must be a positive number"),
        (2, float("nan"), 0, 1, 100, "alpha must be a positive number"),
        (2, float("inf"), 0, 1, 100, "alpha must be a positive number"),
        (2, 1.0, -1, 1, 100, "seed must be >= 0"),
        (2, 1.0, 0, -1, 100, "min_size must be >= 0"),
        (2, 1.0, 0, 6, 100, "cannot give each of 2 clients 6 examples out of 10"),
        (2, 1.0, 0, 1, 0, "max_tries must be >= 1"),
    ],
)
def test_dirichlet_rejects_bad_arguments(
    num_clients: int, alpha: float, seed: int, min_size: int, max_tries: int, message: str
) -> None:
    labels = np.arange(10, dtype=np.int64) % 2
    with pytest.raises(ConfigError, match=message):
        partition_dirichlet(labels, num_clients, alpha, seed, min_size, max_tries)


def test_dirichlet_rejects_labels_that_are_not_one_dimensional() -> None:
    with pytest.raises(ConfigError, match="1-D"):
        partition_dirichlet(np.zeros((4, 2), np.int64), 2, alpha=1.0, seed=0)
