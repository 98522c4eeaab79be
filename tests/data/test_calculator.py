import time
from pathlib import Path

import numpy as np
import pytest

from federa.data.calculator import CALCULATOR_CLASSES, load_calculator
from federa.data.mnist import load_mnist
from federa.data.symbols import SYMBOL_CHARS, load_symbols
from federa.errors import ConfigError, FederaError
from tests.data.test_mnist import write_mnist
from tests.data.test_symbols import symbol_files, write_zip

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL_MNIST = SHARED_DATA / "mnist"
REAL_SYMBOLS = SHARED_DATA / "math_symbols" / "mdas_symbols_v1.zip"
OPERATORS = tuple(sorted(SYMBOL_CHARS))  # the six class folders, in label order


def write_data(tmp_path: Path, num_train: int = 12) -> tuple[Path, Path]:
    """Write a small MNIST folder and an operator zip with all six classes."""
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    write_mnist(mnist, num_train=num_train)
    files = symbol_files(OPERATORS, counts={"train": 2, "test": 1})
    return mnist, write_zip(tmp_path / "symbols.zip", files)


def test_calculator_classes_are_digits_then_operators() -> None:
    assert len(CALCULATOR_CLASSES) == 16
    assert CALCULATOR_CLASSES[:10] == tuple("0123456789")
    assert CALCULATOR_CLASSES[10:] == ("+", "-", "x", "/", "÷", ".")
    assert set(CALCULATOR_CLASSES[10:]) == set(SYMBOL_CHARS.values())


def test_load_calculator_puts_digits_first_then_operators_by_character(tmp_path: Path) -> None:
    mnist_dir, symbols_path = write_data(tmp_path)
    split = load_calculator(mnist_dir, symbols_path)
    mnist, symbols = load_mnist(mnist_dir), load_symbols(symbols_path)
    assert split.num_classes == 16
    assert split.train.class_names == split.test.class_names == CALCULATOR_CLASSES
    assert (split.train.name, split.test.name) == ("calculator-train", "calculator-test")
    for part, digits, operators in [
        (split.train, mnist.train, symbols.train),
        (split.test, mnist.test, symbols.test),
    ]:
        assert len(part) == len(digits) + len(operators)
        assert part.x.dtype == np.float32
        assert part.y.dtype == np.int64
        np.testing.assert_array_equal(part.x[: len(digits)], digits.x)
        np.testing.assert_array_equal(part.y[: len(digits)], digits.y)
        np.testing.assert_array_equal(part.x[len(digits) :], operators.x)
        chars = [SYMBOL_CHARS[OPERATORS[label]] for label in operators.y]
        assert [CALCULATOR_CLASSES[label] for label in part.y[len(digits) :]] == chars
    assert np.bincount(split.train.y, minlength=16)[10:].tolist() == [2] * 6


def test_max_digits_per_class_subsamples_training_digits_only(tmp_path: Path) -> None:
    mnist_dir, symbols_path = write_data(tmp_path, num_train=60)  # 6 of each digit
    full = load_calculator(mnist_dir, symbols_path)
    split = load_calculator(mnist_dir, symbols_path, max_digits_per_class=2, seed=3)
    assert np.bincount(split.train.y).tolist() == [2] * 16
    np.testing.assert_array_equal(split.test.x, full.test.x)
    # The kept digits are real training images, in their original order.
    rows = [
        int(np.flatnonzero((full.train.x == image).all(axis=(1, 2, 3)))[0])
        for image in split.train.x[:20]
    ]
    assert np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(full.train.y[rows], split.train.y[:20])
    np.testing.assert_array_equal(split.train.x[20:], full.train.x[60:])


def test_max_digits_per_class_is_seeded(tmp_path: Path) -> None:
    mnist_dir, symbols_path = write_data(tmp_path, num_train=60)
    first = load_calculator(mnist_dir, symbols_path, max_digits_per_class=3, seed=1)
    again = load_calculator(mnist_dir, symbols_path, max_digits_per_class=3, seed=1)
    other = load_calculator(mnist_dir, symbols_path, max_digits_per_class=3, seed=2)
    np.testing.assert_array_equal(first.train.x, again.train.x)
    # 20 ways to pick 3 of 6 for each of 10 digits: a collision has probability 1e-13.
    assert not np.array_equal(first.train.x, other.train.x)


def test_max_digits_per_class_above_the_count_keeps_every_digit(tmp_path: Path) -> None:
    mnist_dir, symbols_path = write_data(tmp_path)
    split = load_calculator(mnist_dir, symbols_path, max_digits_per_class=1000)
    np.testing.assert_array_equal(split.train.x, load_calculator(mnist_dir, symbols_path).train.x)


@pytest.mark.parametrize(
    ("max_digits", "seed", "message"),
    [(0, 0, "max_digits_per_class must be >= 1 or None"), (None, -1, "seed must be >= 0")],
)
def test_load_calculator_rejects_bad_arguments(
    tmp_path: Path, max_digits: int | None, seed: int, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_calculator(tmp_path, tmp_path, max_digits_per_class=max_digits, seed=seed)


def test_load_calculator_rejects_an_operator_it_does_not_know(tmp_path: Path) -> None:
    mnist_dir, _ = write_data(tmp_path)
    files = symbol_files(("addition_plus", "equals_sign"), counts={"train": 1, "test": 1})
    symbols_path = write_zip(tmp_path / "other.zip", files)
    with pytest.raises(FederaError, match=r"class folder 'equals_sign'.*remove that folder"):
        load_calculator(mnist_dir, symbols_path)


@pytest.mark.skipif(
    not REAL_MNIST.is_dir(), reason="../shared/data/mnist not present (real MNIST files)"
)
@pytest.mark.skipif(
    not REAL_SYMBOLS.is_file(),
    reason="../shared/data/math_symbols not present (real operator symbols)",
)
def test_load_calculator_joins_the_real_digits_and_operators() -> None:
    start = time.perf_counter()
    split = load_calculator(REAL_MNIST, REAL_SYMBOLS)
    seconds = time.perf_counter() - start
    assert split.num_classes == 16
    assert split.train.x.shape == (60_000 + 4_803, 1, 28, 28)
    assert split.test.x.shape == (10_000 + 603, 1, 28, 28)
    train_counts = np.bincount(split.train.y, minlength=16).tolist()
    test_counts = np.bincount(split.test.y, minlength=16).tolist()
    # Operator counts from ../shared/data/math_symbols/SOURCE.md, in CALCULATOR_CLASSES order.
    assert train_counts[10:] == [801, 800, 801, 800, 800, 801]
    assert test_counts[10:] == [101, 100, 101, 100, 100, 101]
    assert sum(train_counts[:10]) == 60_000
    assert sum(test_counts[:10]) == 10_000
    assert seconds < 20, f"loading the real calculator set took {seconds:.1f} s"
