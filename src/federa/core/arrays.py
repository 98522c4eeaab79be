"""`Arrays`: the model as it travels between server and clients."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from federa.errors import FederaError

NDArray = npt.NDArray[Any]


class Arrays(Mapping[str, NDArray]):
    """An ordered, read-only mapping from tensor name to numpy array.

    Order is part of the value: two `Arrays` with the same names in a different order
    are different models on the wire. The mapping itself cannot be changed after
    construction; build a new one with `Arrays({...})` or `map`.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        items = data.items() if isinstance(data, Mapping) else data
        out: dict[str, NDArray] = {}
        for name, value in items:
            if not isinstance(name, str) or not name:
                raise FederaError(f"array names must be non-empty strings, got {name!r}")
            if name in out:
                raise FederaError(f"array name {name!r} appears twice")
            arr = np.asarray(value)
            if arr.dtype == object:
                raise FederaError(f"array {name!r} has dtype object; use a numeric dtype")
            out[name] = arr
        self._data = out

    def __getitem__(self, name: str) -> NDArray:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        body = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._data.items())
        return f"Arrays({{{body}}})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Arrays):
            return NotImplemented
        return self.equals(other)

    __hash__ = None  # type: ignore[assignment]  # mutable-content container: unhashable

    @property
    def num_params(self) -> int:
        """Total number of scalars over all arrays."""
        return sum(int(a.size) for a in self._data.values())

    @property
    def num_bytes(self) -> int:
        """Total payload size in bytes."""
        return sum(int(a.nbytes) for a in self._data.values())

    def spec(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """Return (name, dtype, shape) for every array, in order."""
        return [(k, v.dtype.str, tuple(v.shape)) for k, v in self._data.items()]

    def same_spec(self, other: Arrays) -> bool:
        """Return whether both hold the same names, dtypes and shapes, in the same order."""
        return self.spec() == other.spec()

    def equals(self, other: Arrays) -> bool:
        """Return whether both have the same spec and bit-identical values."""
        return self.same_spec(other) and all(
            np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
            for a, b in zip(self._data.values(), other._data.values(), strict=True)
        )

    def copy(self) -> Arrays:
        """Return a deep copy (the arrays are copied too)."""
        return Arrays({k: v.copy() for k, v in self._data.items()})

    def is_finite(self) -> bool:
        """Return whether no floating-point array holds NaN or Inf."""
        return all(_is_finite(a) for a in self._data.values())

    def to_dict(self) -> dict[str, NDArray]:
        """Return a plain dict sharing the arrays."""
        return dict(self._data)


_DOT_CHECK_MIN = 4096  # values; below this np.isfinite is as fast as a BLAS call


def _is_finite(a: NDArray) -> bool:
    """Return whether `a` holds no NaN or Inf (always True for non-float arrays).

    For a large float32 or float64 array the sum of squares x.x comes first: NaN or Inf
    anywhere makes it NaN or Inf, and BLAS computes it in one pass without the boolean
    temporary `np.isfinite` writes (checking each client's result is on the simulation's
    hot path). Only when x.x is not finite, which finite values can also cause by
    overflowing, does the answer come from the values one by one.
    """
    if a.dtype.kind not in "fc":
        return True
    if (
        a.dtype in (np.float32, np.float64)
        and a.size >= _DOT_CHECK_MIN
        and a.flags.c_contiguous
        and a.dtype.isnative
    ):
        flat = a.reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            square = float(np.dot(flat, flat))
        if math.isfinite(square):
            return True
    return bool(np.isfinite(a).all())
