"""Fixed-point encoding of float vectors into the ring Z_{2^32}, and decoding of their sums.

A value clipped to [low, high] maps to an integer in [0, levels] by an affine map and
unbiased stochastic rounding (E[decode(encode(x))] = x; the error of one value is below
one step (high - low) / levels). With levels = floor((2^32 - 1) / n), the sum of n
encoded values never wraps around the ring, so the sum of the decoded values is read
exactly from the sum of the codes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

RING_SIZE = 1 << 32
RING_DTYPE = np.uint32
F64 = npt.NDArray[np.float64]
U32 = npt.NDArray[np.uint32]


def levels_for(num_clients: int) -> int:
    """Return the largest code one client may send so that n codes sum below 2^32."""
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    return (RING_SIZE - 1) // num_clients


def step(low: float, high: float, levels: int) -> float:
    """Return the value of one code unit: the worst-case rounding error of one value."""
    return (high - low) / levels


def encode(
    values: npt.ArrayLike, low: float, high: float, levels: int, rng: np.random.Generator
) -> U32:
    """Clip `values` to [low, high] and return their codes in [0, levels] as uint32.

    Rounding is stochastic and unbiased, with randomness from `rng`.
    """
    return encode_inplace(np.array(values, dtype=np.float64), low, high, levels, rng)


def encode_inplace(x: F64, low: float, high: float, levels: int, rng: np.random.Generator) -> U32:
    """Return the codes of the float64 array `x`, using `x` as scratch (it is overwritten).

    Stochastic rounding as floor(s + u), u uniform in [0, 1): it rounds s up with
    probability equal to its fractional part, in two passes over the data.
    """
    if not high > low:
        raise ValueError(f"need low < high, got [{low}, {high}]")
    np.clip(x, low, high, out=x)
    x -= low
    x *= levels / (high - low)
    x += rng.random(x.shape, dtype=np.float32)
    np.floor(x, out=x)
    codes: U32 = x.astype(RING_DTYPE)
    np.minimum(codes, levels, out=codes)  # float round-off at the top end
    return codes


ENCODE_CHUNK = 1 << 16
"""Elements per slice when encoding an update: the float64 scratch stays in L2 cache."""


def encode_update(
    new: Sequence[npt.NDArray[Any]],
    old: Sequence[npt.NDArray[Any]],
    out: U32,
    *,
    clip: float,
    weight: float,
    levels: int,
    random_bits: Callable[[int], U32],
) -> None:
    """Write the codes of weight * clip(new - old, -clip, clip) into `out`, in order.

    What `encode(weight * clip(difference), -clip, clip, levels, rng)` computes, slice
    by slice from the arrays themselves (no float64 copy of the whole update): the
    difference, clipping, the affine map and the unbiased stochastic rounding
    floor(s + u) run in a small float64 scratch, which is cast into `out` (truncation
    is floor here: s + u >= 0). u = bits / 2^32 for uniform 32-bit `bits`, which a
    fast generator (an AES-CTR key stream) supplies at a fraction of the cost of
    numpy's floats.

    Args:
        new: The trained arrays.
        old: The arrays sent, of the same sizes as `new`.
        out: Receives sum(a.size for a in new) codes in [0, levels].
        clip: Per-coordinate bound on the difference (> 0).
        weight: Factor in [0, 1] applied after clipping.
        levels: The largest code.
        random_bits: Returns the next n uniform uint32 (n <= ENCODE_CHUNK); read
            before the next call.
    """
    if not (clip > 0 and 0.0 <= weight <= 1.0):
        raise ValueError(f"need clip > 0 and weight in [0, 1], got {clip}, {weight}")
    sizes = [a.size for a in new]
    if sizes != [b.size for b in old] or sum(sizes) != len(out):
        raise ValueError(
            f"arrays of sizes {sizes} and {[b.size for b in old]} do not fill out with "
            f"room for {len(out)} codes"
        )
    scale = weight * levels / (2 * clip)
    offset = levels / 2
    chunk = ENCODE_CHUNK
    x = np.empty(chunk, np.float64)
    u = np.empty(chunk, np.float64)
    at = 0
    for a, b in zip(new, old, strict=True):
        flat_a, flat_b = a.reshape(-1), b.reshape(-1)
        for start in range(0, flat_a.size, chunk):
            size = min(chunk, flat_a.size - start)
            xs, us = x[:size], u[:size]
            np.subtract(
                flat_a[start : start + size], flat_b[start : start + size], out=xs, dtype=x.dtype
            )
            np.clip(xs, -clip, clip, out=xs)
            xs *= scale
            xs += offset
            np.multiply(random_bits(size), 2.0**-32, out=us)
            xs += us
            np.minimum(xs, levels, out=xs)  # float round-off at the top end
            out[at : at + size] = xs
            at += size


def decode_sum(codes: npt.ArrayLike, low: float, high: float, levels: int, count: int) -> F64:
    """Return the sum of `count` clipped values from the sum of their codes.

    Args:
        codes: Sum of the codes, as integers below 2^32 (uint32 after unmasking).
        low: Lower clipping bound used to encode.
        high: Upper clipping bound used to encode.
        levels: The `levels` used to encode.
        count: How many values were summed.
    """
    sums: npt.NDArray[Any] = np.asarray(codes, dtype=np.float64)
    return sums * ((high - low) / levels) + count * low


def encode_wide(values: Sequence[float], low: float, high: float, levels: int) -> U32:
    """Encode each value in two ring elements, with about levels^2 levels.

    For the few numbers where one element's precision is not enough (the weight, the
    metrics): the code C in [0, (levels + 1)^2 - 1] is sent as its two digits in base
    levels + 1, and each digit sums over n clients without wrapping. Rounding is to
    nearest: at about 2^60 levels, float64 is the limit, not the code.

    Returns:
        2 len(values) elements: (high digit, low digit) per value.
    """
    base = levels + 1
    top = base * base - 1
    out: list[int] = []
    for value in values:
        fraction = (min(max(float(value), low), high) - low) / (high - low)
        out.extend(divmod(min(top, round(fraction * top)), base))
    return np.asarray(out, dtype=RING_DTYPE)


def decode_wide_sum(
    digits: npt.ArrayLike, low: float, high: float, levels: int, count: int
) -> float:
    """Return the sum of `count` values from the summed digits of `encode_wide` (one value)."""
    high_digit, low_digit = (int(d) for d in np.asarray(digits).reshape(2))
    base = levels + 1
    code = high_digit * base + low_digit
    return code * ((high - low) / (base * base - 1)) + count * low
