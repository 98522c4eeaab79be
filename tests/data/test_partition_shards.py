import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federa.data.partition.shards import partition_shards
from federa.errors import ConfigError

SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def labelled(draw: st.DrawFn) -> tuple[npt.NDArray[np.int64], int, int]:
    """Draw shuffled labels and a (clients, shards per client) pair that fits them."""
    num_classes = draw(st.integers(1, 6))
    counts = draw(st.lists(st.integers(1, 60), min_size=num_classes, max_size=num_classes))
    labels = np.repeat(np.arange(num_classes, dtype=np.int64) * 3, counts)
    labels = labels[np.random.default_rng(draw(SEEDS)).permutation(len(labels))]
    shards_per_client = draw(st.integers(1, 4))
    num_clients = draw(st.integers(1, max(1, len(labels) // shards_per_client)))
    shards_per_client = min(shards_per_client, len(labels) // num_clients)
    return labels, num_clients, shards_per_client


def _same(a: list[npt.NDArray[np.int64]], b: list[npt.NDArray[np.int64]]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@settings(max_examples=60, deadline=None)
@given(labelled(), SEEDS)
def test_shards_are_disjoint_and_cover_every_index_once(
    data: tuple[npt.NDArray[np.int64], int, int], seed: int
) -> None:
    labels, num_clients, shards_per_client = data
    parts = partition_shards(labels, num_clients, shards_per_client, seed)
    assert len(parts) == num_clients
    assert all(p.dtype == np.int64 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted, so no repeats within a part
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))


@settings(max_examples=60, deadline=None)
@given(labelled(), SEEDS)
def test_shards_are_label_pure_so_clients_hold_at_most_shards_per_client_labels(
    data: tuple[npt.NDArray[np.int64], int, int], seed: int
) -> None:
    labels, num_clients, shards_per_client = data
    parts = partition_shards(labels, num_clients, shards_per_client, seed)
    if num_clients * shards_per_client >= len(np.unique(labels)):
        assert max(len(np.unique(labels[p])) for p in parts) <= shards_per_client


@settings(max_examples=30, deadline=None)
@given(labelled(), SEEDS)
def test_shards_same_seed_gives_same_parts(
    data: tuple[npt.NDArray[np.int64], int, int], seed: int
) -> None:
    labels, num_clients, shards_per_client = data
    first = partition_shards(labels, num_clients, shards_per_client, seed)
    second = partition_shards(labels, num_clients, shards_per_client, seed)
    assert _same(first, second)


def test_shards_different_seeds_give_different_parts() -> None:
    labels = np.repeat(np.arange(10, dtype=np.int64), 50)
    draws = [partition_shards(labels, 10, 2, seed) for seed in range(5)]
    assert not any(_same(draws[0], other) for other in draws[1:])


def test_shards_of_mnist_sized_labels_give_each_client_two_digits_and_600_images() -> None:
    # 60,000 labels, 6,000 of each digit, in random order: McMahan et al.'s setting.
    labels = np.repeat(np.arange(10, dtype=np.int64), 6000)
    labels = labels[np.random.default_rng(1).permutation(len(labels))]
    parts = partition_shards(labels, num_clients=100, shards_per_client=2, seed=0)
    assert len(parts) == 100
    assert all(len(p) == 600 for p in parts)
    assert max(len(np.unique(labels[p])) for p in parts) <= 2
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(60_000))


def test_shards_of_real_mnist_class_sizes_never_straddle_two_digits() -> None:
    # McMahan's contiguous 300-example cut would give some clients 3 or 4 digits here.
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    labels = np.repeat(np.arange(10, dtype=np.int64), counts)
    parts = partition_shards(labels, num_clients=100, shards_per_client=2, seed=0)
    assert max(len(np.unique(labels[p])) for p in parts) <= 2
    sizes = [len(p) for p in parts]
    assert 560 <= min(sizes) <= max(sizes) <= 680
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(60_000))


def test_shards_break_label_ties_at_random() -> None:
    labels = np.zeros(100, dtype=np.int64)
    for seed in range(3):
        first, _ = partition_shards(labels, num_clients=2, shards_per_client=1, seed=seed)
        # Without the seeded shuffle a client would get one contiguous run of indices.
        assert not np.array_equal(first, np.arange(first[0], first[0] + 50))


def test_shards_with_one_shard_per_example_give_each_client_its_examples() -> None:
    labels = np.array([2, 0, 1, 0], dtype=np.int64)
    parts = partition_shards(labels, num_clients=2, shards_per_client=2, seed=5)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(4))
    assert [len(p) for p in parts] == [2, 2]


@pytest.mark.parametrize(
    ("num_clients", "shards_per_client", "seed", "message"),
    [
        (0, 2, 0, "num_clients must be >= 1"),
        (2, 0, 0, "shards_per_client must be >= 1"),
        (2, 2, -1, "seed must be >= 0"),
        (6, 2, 0, "cannot cut 10 examples into 12 shards"),
    ],
)
def test_shards_rejects_bad_arguments(
    num_clients: int, shards_per_client: int, seed: int, message: str
) -> None:
    labels = np.arange(10, dtype=np.int64) % 2
    with pytest.raises(ConfigError, match=message):
        partition_shards(labels, num_clients, shards_per_client, seed)


def test_shards_rejects_labels_that_are_not_one_dimensional() -> None:
    with pytest.raises(ConfigError, match="1-D"):
        partition_shards(np.zeros((4, 2), np.int64), 2)
