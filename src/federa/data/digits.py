"""scikit-learn's bundled 8x8 handwritten digits: 1,797 images that ship offline.

Alpaydin and Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning
Repository, 1998.
"""

from __future__ import annotations

import math

import numpy as np

from federa.data.dataset import Dataset, DatasetSplit
from federa.errors import ConfigError, FederaError

_NUM_CLASSES = 10
_MAX_PIXEL = 16.0


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> DatasetSplit:
    """Load the 8x8 digits with a stratified held-out test set.

    Pixels are scaled from 0..16 to [0, 1]; images have shape (N, 1, 8, 8).

    Args:
        test_fraction: Share of the 1,797 images held out for testing, in (0, 1).
        seed: Seed of the train/test shuffle; the same seed gives the same split.

    Raises:
        ConfigError: `test_fraction` or `seed` is out of range.
        FederaError: scikit-learn is not installed.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32) for the digits split, got {seed}")
    try:
        # Imported here so that federa.data works without scikit-learn installed.
        from sklearn.datasets import load_digits as sklearn_load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise FederaError(
            "the digits dataset needs scikit-learn, which is not installed; "
            "run pip install 'federa[cli]'"
        ) from exc

    bunch = sklearn_load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)
    x = (images / np.float32(_MAX_PIXEL)).reshape(len(images), 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)

    num_test = math.ceil(test_fraction * len(y))
    num_train = len(y) - num_test
    if min(num_test, num_train) < _NUM_CLASSES:
        raise ConfigError(
            f"test_fraction={test_fraction} leaves {num_train} train and {num_test} test "
            f"images; a stratified split needs at least {_NUM_CLASSES} in each, "
            "so pick a test_fraction between 0.01 and 0.99"
        )
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=test_fraction, random_state=seed, stratify=y
    )
    # Keep the original order within each side; partitioners do their own shuffling.
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    return DatasetSplit(
        train=Dataset(
            x=x[train_idx], y=y[train_idx], num_classes=_NUM_CLASSES, name="digits-train"
        ),
        test=Dataset(x=x[test_idx], y=y[test_idx], num_classes=_NUM_CLASSES, name="digits-test"),
    )
