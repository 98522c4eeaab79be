import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federa.data.dataset import Dataset
from federa.data.partition.natural import partition_natural
from federa.errors import ConfigError

GROUPS = st.lists(st.integers(-5, 40), min_size=1, max_size=300).map(
    lambda ids: np.array(ids, dtype=np.int64)
)


@settings(max_examples=80, deadline=None)
@given(GROUPS)
def test_natural_gives_each_group_one_client_and_covers_every_index_once(
    groups: npt.NDArray[np.int64],
) -> None:
    parts = partition_natural(groups)
    ids = np.unique(groups)
    assert len(parts) == len(ids)
    assert all(p.dtype == np.int64 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted, so no repeats within a part
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(groups)))
    # Client k holds exactly the examples of the k-th smallest group id.
    for group_id, part in zip(ids, parts, strict=True):
        np.testing.assert_array_equal(part, np.flatnonzero(groups == group_id))


@settings(max_examples=60, deadline=None)
@given(GROUPS, st.data())
def test_natural_with_fewer_clients_uses_the_groups_with_the_smallest_ids(
    groups: npt.NDArray[np.int64], data: st.DataObject
) -> None:
    num_groups = len(np.unique(groups))
    num_clients = data.draw(st.integers(1, num_groups))
    parts = partition_natural(groups, num_clients)
    everyone = partition_natural(groups)
    assert len(parts) == num_clients
    assert all(np.array_equal(a, b) for a, b in zip(parts, everyone, strict=False))


def test_natural_is_the_same_every_time_and_for_any_integer_type() -> None:
    groups = np.array([7, 3, 7, 0, 3, 3], dtype=np.uint16)
    first = partition_natural(groups)
    assert [p.tolist() for p in first] == [[3], [1, 4, 5], [0, 2]]
    again = partition_natural(groups.astype(np.int32))
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def test_natural_splits_a_dataset_by_its_groups() -> None:
    groups = np.array([1, 0, 1, 2, 0, 1], dtype=np.int64)
    dataset = Dataset(
        x=np.zeros((6, 1, 2, 2), np.float32),
        y=np.arange(6, dtype=np.int64) % 2,
        num_classes=2,
        name="toy",
        groups=groups,
        group_names=("alice", "bob", "carol"),
    )
    clients = [dataset.subset(p) for p in partition_natural(dataset.groups)]
    assert [c.groups.tolist() for c in clients if c.groups is not None] == [
        [0, 0],
        [1, 1, 1],
        [2],
    ]


@pytest.mark.parametrize(
    ("num_clients", "message"),
    [
        (0, "num_clients must be >= 1 or None"),
        (4, "cannot give 4 clients a natural group each: the data has 3 groups"),
    ],
)
def test_natural_rejects_a_bad_client_count(num_clients: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        partition_natural(np.array([0, 1, 2, 2], dtype=np.int64), num_clients)


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (None, "no natural groups"),
        (np.array([], dtype=np.int64), "groups is empty"),
        (np.array([0.0, 1.0]), "groups must be 1-D integers"),
        (np.zeros((2, 2), np.int64), "groups must be 1-D integers"),
    ],
)
def test_natural_rejects_bad_groups(groups: npt.NDArray[np.int64] | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        partition_natural(groups)
