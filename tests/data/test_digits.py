import sys

import numpy as np
import pytest

from federa.data import DatasetSplit, load_digits
from federa.errors import ConfigError, FederaError


@pytest.fixture(scope="module")
def split() -> DatasetSplit:
    return load_digits()


def test_digits_have_1797_images_of_one_by_eight_by_eight(split: DatasetSplit) -> None:
    assert len(split.train) + len(split.test) == 1797
    assert len(split.test) == 360  # ceil(0.2 * 1797)
    assert split.train.x.shape[1:] == (1, 8, 8)
    assert split.in_shape == (1, 8, 8)
    assert split.num_classes == 10
    assert split.train.x.dtype == np.float32
    assert split.train.y.dtype == np.int64


def test_digit_pixels_are_scaled_to_unit_interval(split: DatasetSplit) -> None:
    both = np.concatenate([split.train.x, split.test.x])
    assert both.min() == 0.0
    assert both.max() == 1.0
    # Raw pixels are integers 0..16, so scaled values are exact multiples of 1/16.
    np.testing.assert_array_equal(both * 16, np.round(both * 16))


def test_digits_test_set_is_stratified(split: DatasetSplit) -> None:
    train_counts = np.bincount(split.train.y, minlength=10)
    test_counts = np.bincount(split.test.y, minlength=10)
    total = train_counts + test_counts
    assert total.sum() == 1797
    # Each class is held out in proportion to its size, up to rounding.
    assert np.all(np.abs(test_counts - 0.2 * total) <= 1)


def test_digits_split_depends_only_on_seed(split: DatasetSplit) -> None:
    again = load_digits(seed=0)
    np.testing.assert_array_equal(again.test.x, split.test.x)
    np.testing.assert_array_equal(again.test.y, split.test.y)
    other = load_digits(seed=1)
    assert not np.array_equal(other.test.x, split.test.x)


def test_digits_test_fraction_sets_test_size() -> None:
    split = load_digits(test_fraction=0.5)
    assert len(split.test) == 899  # ceil(0.5 * 1797)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 0.001])
def test_digits_reject_test_fraction_out_of_range(fraction: float) -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        load_digits(test_fraction=fraction)


def test_digits_without_scikit_learn_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A None entry in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(FederaError, match=r"pip install 'federa\[cli\]'"):
        load_digits()
