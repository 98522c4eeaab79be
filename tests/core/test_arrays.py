import numpy as np
import pytest

from federa import Arrays, FederaError
from federa.core.rng import derive_seed


def test_arrays_keep_insertion_order_and_report_sizes() -> None:
    a = Arrays({"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)})
    assert list(a) == ["w", "b"]
    assert a.num_params == 9
    assert a.num_bytes == 36
    assert a.spec() == [("w", "<f4", (2, 3)), ("b", "<f4", (3,))]


def test_arrays_equality_needs_same_order_and_values() -> None:
    a = Arrays({"x": np.ones(2), "y": np.zeros(1)})
    assert a == Arrays({"x": np.ones(2), "y": np.zeros(1)})
    assert a != Arrays({"y": np.zeros(1), "x": np.ones(2)})
    assert a != Arrays({"x": np.array([1.0, 2.0]), "y": np.zeros(1)})


def test_arrays_reject_object_dtype_and_bad_names() -> None:
    with pytest.raises(FederaError, match="dtype object"):
        Arrays({"x": np.array([object()])})
    with pytest.raises(FederaError, match="non-empty strings"):
        Arrays({"": np.zeros(1)})


def test_arrays_detect_nan_and_inf() -> None:
    assert Arrays({"x": np.ones(3)}).is_finite()
    assert not Arrays({"x": np.array([1.0, np.nan])}).is_finite()
    assert not Arrays({"x": np.array([np.inf])}).is_finite()
    assert Arrays({"n": np.array([3], np.int64)}).is_finite()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, ">f4"])
@pytest.mark.parametrize("size", [5, 50_000])  # below and above the sum-of-squares check
def test_nan_or_inf_anywhere_in_any_array_is_found(dtype: str, size: int) -> None:
    rng = np.random.default_rng(0)
    for bad in (np.nan, np.inf, -np.inf):
        for where in (0, size // 2, size - 1):
            x = rng.normal(size=size).astype(dtype)
            x[where] = bad
            arrays = Arrays({"ok": np.ones(size, dtype), "x": x.reshape(-1, 5)})
            assert not arrays.is_finite(), (bad, where)
            assert not Arrays({"x": x[::-1]}).is_finite()  # not contiguous


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_finite_values_whose_squares_overflow_are_finite(dtype: str) -> None:
    big = np.full(50_000, np.finfo(dtype).max / 2, dtype=dtype)
    with np.errstate(over="ignore"):
        assert np.isinf(np.dot(big, big))  # the fast check cannot decide here
    assert Arrays({"x": big}).is_finite()
    big[7] = np.nan
    assert not Arrays({"x": big}).is_finite()


def test_copy_is_deep() -> None:
    a = Arrays({"x": np.ones(2)})
    b = a.copy()
    b["x"][0] = 5.0
    assert a["x"][0] == 1.0


def test_derived_seeds_depend_on_every_coordinate_only() -> None:
    base = derive_seed(7, 3, 11)
    assert base == derive_seed(7, 3, 11)
    others = {derive_seed(8, 3, 11), derive_seed(7, 4, 11), derive_seed(7, 3, 12)}
    others.add(derive_seed(7, 3, 11, "evaluate"))
    assert base not in others
    assert len(others) == 4
    assert 0 <= base < 2**63
