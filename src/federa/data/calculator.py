"""Digits and operators for a handwriting calculator: MNIST plus the operator symbols.

The sixteen classes are the digits 0-9 (from MNIST) followed by + - x / ÷ . (from the
handwritten operator set read by `load_symbols`); both are 28x28 grayscale with white
strokes on black, so one model can read a whole handwritten expression.
"""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt

from federa.data.dataset import Dataset, DatasetSplit
from federa.data.framing import frame_many, stretch_ink
from federa.data.mnist import load_mnist
from federa.data.symbols import SYMBOL_CHARS, load_symbols
from federa.errors import ConfigError, FederaError

__all__ = ["CALCULATOR_CLASSES", "CALCULATOR_FRAMING", "load_calculator"]

CALCULATOR_CLASSES: tuple[str, ...] = (
    *(str(digit) for digit in range(10)),
    "+",
    "-",
    "x",
    "/",
    "÷",
    ".",
)
"""The character of each label: digits 0-9 are labels 0-9, the operators 10-15."""

CALCULATOR_FRAMING = (
    "mnist: ink fitted in a 20x20 box, centre of mass at the centre of 28x28; "
    "ink scaled so that its median pixel is 1"
)
"""How `load_calculator(..., mnist_framing=True)` frames every symbol (see data.framing)."""

_NUM_DIGITS = 10


def _subsample_digits(digits: Dataset, max_per_class: int, seed: int) -> npt.NDArray[np.int64]:
    """Return the sorted indices of at most `max_per_class` random examples per digit."""
    rng = np.random.default_rng(seed)
    keep = []
    for digit in range(_NUM_DIGITS):
        members = np.flatnonzero(digits.y == digit)
        if len(members) > max_per_class:
            members = rng.choice(members, size=max_per_class, replace=False)
        keep.append(members)
    return np.sort(np.concatenate(keep)).astype(np.int64, copy=False)


def _symbol_labels(symbols: Dataset, source: str | os.PathLike[str]) -> npt.NDArray[np.int64]:
    """Map the operator set's labels to calculator labels through their class names."""
    mapping = np.empty(symbols.num_classes, dtype=np.int64)
    for label, class_name in enumerate(symbols.class_names):
        if class_name not in SYMBOL_CHARS:
            raise FederaError(
                f"{source} has a class folder {class_name!r}, which is not an operator the "
                f"calculator knows ({', '.join(sorted(SYMBOL_CHARS))}); remove that folder"
            )
        mapping[label] = CALCULATOR_CLASSES.index(SYMBOL_CHARS[class_name])
    return mapping[symbols.y]


def _join(
    digits: Dataset,
    symbols: Dataset,
    source: str | os.PathLike[str],
    name: str,
    *,
    mnist_framing: bool,
) -> Dataset:
    # MNIST's digits are framed already; the operators are framed here, and both get
    # the same contrast (see federa.data.framing).
    operators = frame_many(symbols.x) if mnist_framing else symbols.x
    numbers = stretch_ink(digits.x) if mnist_framing else digits.x
    return Dataset(
        x=np.concatenate([numbers, operators]),
        y=np.concatenate([digits.y, _symbol_labels(symbols, source)]),
        num_classes=len(CALCULATOR_CLASSES),
        name=name,
        class_names=CALCULATOR_CLASSES,
    )


def load_calculator(
    mnist_dir: str | os.PathLike[str],
    symbols_path: str | os.PathLike[str],
    *,
    max_digits_per_class: int | None = None,
    seed: int = 0,
    mnist_framing: bool = False,
) -> DatasetSplit:
    """Load MNIST digits and handwritten operators as one 16-class dataset.

    Labels 0-9 are the MNIST digits and 10-15 the operators, in the order of
    `CALCULATOR_CLASSES` (which is also `class_names`). Each side keeps its own
    train/test split: the digits come first, then the operators, so shuffle (or
    partition) before training. MNIST has about 6,000 training images per digit and the
    operator set about 800 per operator; `max_digits_per_class` evens this out by
    keeping a seeded random subset of each digit's training images (in their original
    order). The test set is never subsampled, so accuracies stay comparable.

    The operators come at the size they were written relative to a digit (a dot is a
    few pixels wide). `mnist_framing` re-frames each one as MNIST frames its digits
    (ink fitted in a 20x20 box, centred by mass) and gives every image, digit or
    operator, the same contrast (median ink pixel at 1; see `federa.data.framing`), so
    a model learns the symbols' shapes rather than their sources and reads them
    whatever size they were written: the handwriting calculator trains on this form
    (`CALCULATOR_FRAMING`).

    Args:
        mnist_dir: The folder of MNIST IDX files, as for `load_mnist`.
        symbols_path: The operator zip or folder, as for `load_symbols`.
        max_digits_per_class: Most training images kept per digit; None keeps them all.
        seed: Seed of the digit subsampling, >= 0; unused when nothing is subsampled.
        mnist_framing: Frame the operators like MNIST digits (the digits already are)
            and give every image the same contrast.

    Raises:
        ConfigError: `max_digits_per_class` or `seed` is out of range.
        FederaError: A file is missing or damaged, or the operator set has a class the
            calculator does not know. The message names the file.
    """
    if max_digits_per_class is not None and max_digits_per_class < 1:
        raise ConfigError(
            f"max_digits_per_class must be >= 1 or None (keep every digit), "
            f"got {max_digits_per_class}"
        )
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    mnist = load_mnist(mnist_dir)
    symbols = load_symbols(symbols_path)
    digits_train = mnist.train
    if max_digits_per_class is not None:
        keep = _subsample_digits(digits_train, max_digits_per_class, seed)
        digits_train = digits_train.subset(keep)
    return DatasetSplit(
        train=_join(
            digits_train,
            symbols.train,
            symbols_path,
            "calculator-train",
            mnist_framing=mnist_framing,
        ),
        test=_join(
            mnist.test, symbols.test, symbols_path, "calculator-test", mnist_framing=mnist_framing
        ),
    )
