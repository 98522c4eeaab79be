import numpy as np
import pytest

from federa.data import Dataset, DatasetSplit
from federa.errors import ConfigError


def _dataset(n: int, name: str = "toy", shape: tuple[int, ...] = (1, 2, 2)) -> Dataset:
    x = np.arange(n * int(np.prod(shape)), dtype=np.float32).reshape(n, *shape)
    return Dataset(x=x, y=np.arange(n, dtype=np.int64) % 3, num_classes=3, name=name)


def test_dataset_len_counts_examples() -> None:
    assert len(_dataset(5)) == 5
    assert len(_dataset(0)) == 0


def test_subset_takes_examples_in_index_order() -> None:
    data = _dataset(6)
    sub = data.subset(np.array([4, 1], dtype=np.int64))
    assert len(sub) == 2
    np.testing.assert_array_equal(sub.x, data.x[[4, 1]])
    np.testing.assert_array_equal(sub.y, [1, 1])
    assert (sub.num_classes, sub.name) == (3, "toy")
    assert len(data.subset([])) == 0


def test_subset_rejects_non_integer_indices() -> None:
    with pytest.raises(ConfigError, match="integer indices"):
        _dataset(4).subset(np.array([0.0, 1.0]))


def test_dataset_rejects_mismatched_lengths() -> None:
    x = np.zeros((3, 1, 2, 2), np.float32)
    with pytest.raises(ConfigError, match="3 examples but y has 2 labels"):
        Dataset(x=x, y=np.zeros(2, np.int64), num_classes=2, name="bad")
    with pytest.raises(ConfigError, match="1-D"):
        Dataset(x=x, y=np.zeros((3, 1), np.int64), num_classes=2, name="bad")


def test_split_reports_example_shape_and_classes() -> None:
    split = DatasetSplit(train=_dataset(4, "tr"), test=_dataset(2, "te"))
    assert split.in_shape == (1, 2, 2)
    assert split.num_classes == 3


def test_split_rejects_train_and_test_of_different_shapes() -> None:
    with pytest.raises(ConfigError, match="differ in shape"):
        DatasetSplit(train=_dataset(4), test=_dataset(2, shape=(1, 3, 3)))
