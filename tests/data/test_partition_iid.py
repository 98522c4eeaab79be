import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from federa.data import partition_iid
from federa.errors import ConfigError

SEEDS = st.integers(0, 2**32 - 1)


@st.composite
def sizes(draw: st.DrawFn, min_examples: int = 1, min_clients: int = 1) -> tuple[int, int]:
    num_examples = draw(st.integers(min_examples, 500))
    num_clients = draw(st.integers(min_clients, min(num_examples, 50)))
    return num_examples, num_clients


@settings(max_examples=60, deadline=None)
@given(sizes(), SEEDS)
def test_iid_parts_are_disjoint_and_cover_every_index_once(
    size: tuple[int, int], seed: int
) -> None:
    num_examples, num_clients = size
    parts = partition_iid(num_examples, num_clients, seed)
    assert len(parts) == num_clients
    assert all(p.dtype == np.int64 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted, so no repeats within a part
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(num_examples))
    lengths = [len(p) for p in parts]
    assert max(lengths) - min(lengths) <= 1


@settings(max_examples=40, deadline=None)
@given(sizes(), SEEDS)
def test_iid_same_seed_gives_same_parts(size: tuple[int, int], seed: int) -> None:
    first = partition_iid(*size, seed=seed)
    second = partition_iid(*size, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@settings(max_examples=40, deadline=None)
@given(sizes(min_examples=50, min_clients=2), SEEDS, SEEDS)
def test_iid_different_seeds_give_different_parts(
    size: tuple[int, int], seed: int, other_seed: int
) -> None:
    assume(seed != other_seed)
    num_examples, num_clients = size
    first = partition_iid(num_examples, num_clients, seed)
    second = partition_iid(num_examples, num_clients, other_seed)
    # With >= 50 examples and >= 2 clients a collision has probability < 1e-14.
    assert not all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize(
    ("num_examples", "num_clients", "seed", "message"),
    [
        (10, 0, 0, "num_clients must be >= 1"),
        (3, 4, 0, "cannot split 3 examples between 4 clients"),
        (10, 2, -1, "seed must be >= 0"),
    ],
)
def test_iid_rejects_bad_arguments(
    num_examples: int, num_clients: int, seed: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        partition_iid(num_examples, num_clients, seed)
