import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federa.data.partition.quantity import partition_quantity
from federa.errors import ConfigError

SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def sizes(draw: st.DrawFn) -> tuple[int, int, int]:
    """Draw (num_examples, num_clients, min_size) with min_size * num_clients feasible."""
    num_clients = draw(st.integers(1, 40))
    min_size = draw(st.integers(0, 5))
    num_examples = draw(st.integers(min_size * num_clients, 600))
    return num_examples, num_clients, min_size


def _same(a: list[npt.NDArray[np.int64]], b: list[npt.NDArray[np.int64]]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@settings(max_examples=80, deadline=None)
@given(sizes(), st.floats(0.0, 5.0), SEEDS)
def test_quantity_parts_are_disjoint_cover_every_index_and_respect_min_size(
    size: tuple[int, int, int], sigma: float, seed: int
) -> None:
    num_examples, num_clients, min_size = size
    parts = partition_quantity(num_examples, num_clients, sigma, seed, min_size)
    assert len(parts) == num_clients
    assert all(p.dtype == np.int64 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted, so no repeats within a part
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(num_examples))
    assert sum(len(p) for p in parts) == num_examples
    assert min(len(p) for p in parts) >= min_size


@settings(max_examples=60, deadline=None)
@given(sizes(), st.floats(0.0, 5.0), SEEDS)
def test_quantity_sizes_follow_the_log_normal_shares_within_rounding(
    size: tuple[int, int, int], sigma: float, seed: int
) -> None:
    num_examples, num_clients, min_size = size
    parts = partition_quantity(num_examples, num_clients, sigma, seed, min_size)
    weights = np.random.default_rng(seed).lognormal(0.0, sigma, num_clients)
    quotas = weights / weights.sum() * (num_examples - min_size * num_clients)
    extra = np.array([len(p) for p in parts]) - min_size
    # Largest-remainder rounding moves each share by less than one example.
    assert np.all(np.abs(extra - quotas) < 1 + 1e-6)


@settings(max_examples=30, deadline=None)
@given(sizes(), st.floats(0.0, 5.0), SEEDS)
def test_quantity_same_seed_gives_same_parts(
    size: tuple[int, int, int], sigma: float, seed: int
) -> None:
    num_examples, num_clients, min_size = size
    first = partition_quantity(num_examples, num_clients, sigma, seed, min_size)
    second = partition_quantity(num_examples, num_clients, sigma, seed, min_size)
    assert _same(first, second)


def test_quantity_different_seeds_give_different_parts() -> None:
    draws = [partition_quantity(500, 10, sigma=1.0, seed=seed) for seed in range(5)]
    assert not any(_same(draws[0], other) for other in draws[1:])


def test_quantity_with_sigma_zero_gives_sizes_within_one() -> None:
    lengths = [len(p) for p in partition_quantity(1003, 10, sigma=0.0, seed=4)]
    assert sum(lengths) == 1003
    assert max(lengths) - min(lengths) <= 1


def test_larger_sigma_gives_more_unequal_sizes() -> None:
    def spread(sigma: float, seed: int) -> float:
        lengths = np.array([len(p) for p in partition_quantity(100_000, 100, sigma, seed)])
        return float(lengths.std() / lengths.mean())

    for seed in range(3):
        assert spread(2.0, seed) > spread(0.5, seed) > spread(0.0, seed)


def test_quantity_survives_a_huge_sigma_without_overflow() -> None:
    # exp of these draws overflows float64; filterwarnings=error would turn that into a failure.
    parts = partition_quantity(1000, 20, sigma=1000.0, seed=0, min_size=3)
    lengths = [len(p) for p in parts]
    assert sum(lengths) == 1000
    assert min(lengths) >= 3


def test_quantity_with_min_size_zero_may_leave_clients_empty() -> None:
    parts = partition_quantity(3, 5, sigma=1.0, seed=0, min_size=0)
    assert sum(len(p) for p in parts) == 3
    assert min(len(p) for p in parts) == 0


@pytest.mark.parametrize(
    ("num_examples", "num_clients", "sigma", "seed", "min_size", "message"),
    [
        (-1, 2, 1.0, 0, 0, "num_examples must be >= 0"),
        (10, 0, 1.0, 0, 1, "num_clients must be >= 1"),
        (10, 2, -0.5, 0, 1, "sigma must be a finite number >= 0"),
        (10, 2, float("nan"), 0, 1, "sigma must be a finite number >= 0"),
        (10, 2, float("inf"), 0, 1, "sigma must be a finite number >= 0"),
        (10, 2, 1.0, -1, 1, "seed must be >= 0"),
        (10, 2, 1.0, 0, -1, "min_size must be >= 0"),
        (10, 11, 1.0, 0, 1, "cannot give each of 11 clients 1 examples out of 10"),
        (10, 2, 1.0, 0, 6, "cannot give each of 2 clients 6 examples out of 10"),
    ],
)
def test_quantity_rejects_bad_arguments(
    num_examples: int, num_clients: int, sigma: float, seed: int, min_size: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        partition_quantity(num_examples, num_clients, sigma, seed, min_size)
