"""Shamir secret sharing of byte strings over the prime field GF(2^127 - 1).

Shamir. "How to Share a Secret." Communications of the ACM 22(11), 1979. A secret is cut
into 15-byte pieces (120 bits, below the 127-bit prime), and each piece is the constant
term of its own random polynomial of degree `threshold - 1`; a share holds the values of
all the polynomials at the holder's point x. Any `threshold` shares give the secret by
Lagrange interpolation at 0; fewer give no information about it. Coefficients come from
the operating system's cryptographic generator (`secrets`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence

PRIME = 2**127 - 1
"""The field modulus, a Mersenne prime."""
PIECE_BYTES = 15
"""Bytes of secret per field element (120 bits < 127)."""
ELEMENT_BYTES = 16
"""Bytes of one field element in a share."""


def share_bytes(secret_len: int) -> int:
    """Return the length in bytes of one share of a `secret_len`-byte secret."""
    return ELEMENT_BYTES * math.ceil(secret_len / PIECE_BYTES)


def point_of(holder: int) -> int:
    """Return the field point x at which `holder` (a client id >= 0) gets its share."""
    if not 0 <= holder < PRIME - 1:
        raise ValueError(f"share holder ids must be in [0, 2^127 - 2], got {holder}")
    return holder + 1


def _pieces(secret: bytes) -> list[int]:
    return [
        int.from_bytes(secret[i : i + PIECE_BYTES], "little")
        for i in range(0, len(secret), PIECE_BYTES)
    ]


def split(secret: bytes, threshold: int, holders: Sequence[int]) -> list[bytes]:
    """Split `secret` into one share per holder; any `threshold` of them recover it.

    Args:
        secret: The bytes to share (non-empty).
        threshold: Shares needed to recover the secret, 1 <= threshold <= len(holders).
        holders: Distinct holder ids (>= 0); holder h gets the share at x = h + 1.

    Returns:
        The shares, in the order of `holders`, each `share_bytes(len(secret))` long.
    """
    if not secret:
        raise ValueError("cannot share an empty secret")
    if len(set(holders)) != len(holders):
        raise ValueError("share holders must be distinct")
    if not 1 <= threshold <= len(holders):
        raise ValueError(f"threshold must be in [1, {len(holders)}], got {threshold}")
    xs = [point_of(h) for h in holders]
    shares = [bytearray() for _ in holders]
    for piece in _pieces(secret):
        coefficients = [piece] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
        for share, x in zip(shares, xs, strict=True):
            y = 0
            for c in reversed(coefficients):  # Horner
                y = (y * x + c) % PRIME
            share += y.to_bytes(ELEMENT_BYTES, "little")
    return [bytes(s) for s in shares]


def elements(share: bytes) -> list[int]:
    """Return the field elements of a share; raise ValueError if it is malformed."""
    if len(share) % ELEMENT_BYTES:
        raise ValueError(f"a share is a multiple of {ELEMENT_BYTES} bytes, got {len(share)}")
    values = [
        int.from_bytes(share[i : i + ELEMENT_BYTES], "little")
        for i in range(0, len(share), ELEMENT_BYTES)
    ]
    if any(v >= PRIME for v in values):
        raise ValueError("a share holds a value outside the field")
    return values


def _invert_all(values: Sequence[int]) -> list[int]:
    """Return the inverses of non-zero field elements with one modular inversion.

    Montgomery's trick: invert the product, then peel the factors off one by one.
    """
    prefix = [1]
    for v in values:
        prefix.append(prefix[-1] * v % PRIME)
    inverse = pow(prefix[-1], -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inverse * prefix[i] % PRIME
        inverse = inverse * values[i] % PRIME
    return out


def _products_without_each(values: Sequence[int]) -> list[int]:
    """Return, for each j, the product of all `values` but the j-th (mod PRIME).

    Prefix and suffix products: O(n) multiplications and no inversion.
    """
    prefix = [1]
    for v in values[:-1]:
        prefix.append(prefix[-1] * v % PRIME)
    out = [0] * len(values)
    suffix = 1
    for j in range(len(values) - 1, -1, -1):
        out[j] = prefix[j] * suffix % PRIME
        suffix = suffix * values[j] % PRIME
    return out


def evaluate(shares: Sequence[tuple[int, bytes]], holders: Sequence[int | None]) -> list[list[int]]:
    """Return the field elements of the polynomials through `shares` at several points.

    Lagrange interpolation with the denominators computed once for all points (one
    modular inversion in all) and each point's numerators by prefix and suffix
    products, so each point costs O(len(shares)) multiplications.

    Args:
        shares: (holder id, share) pairs with distinct holders; the polynomials through
            them have degree len(shares) - 1.
        holders: Evaluate at each holder's point, or at 0 (the secret) for None.

    Raises:
        ValueError: a share is malformed, shares differ in length or holders repeat.
    """
    xs = [point_of(h) for h, _ in shares]
    if len(set(xs)) != len(xs):
        raise ValueError("shares must come from distinct holders")
    columns = [elements(share) for _, share in shares]
    if len({len(c) for c in columns}) != 1:
        raise ValueError("shares of one secret must have the same length")
    dens = [
        math.prod((xj - xm) % PRIME for m, xm in enumerate(xs) if m != j) % PRIME
        for j, xj in enumerate(xs)
    ]
    inverse_dens = _invert_all(dens)
    rows = list(zip(*columns, strict=True))  # rows[i]: the i-th element of every share
    out = []
    for holder in holders:
        at = 0 if holder is None else point_of(holder)
        nums = _products_without_each([(at - x) % PRIME for x in xs])
        weights = [n * d % PRIME for n, d in zip(nums, inverse_dens, strict=True)]
        out.append([sum(w * y for w, y in zip(weights, row, strict=True)) % PRIME for row in rows])
    return out


def interpolate(shares: Sequence[tuple[int, bytes]], holder: int | None = None) -> list[int]:
    """Return the field elements of the polynomials through `shares`, evaluated at a point.

    Args:
        shares: (holder id, share) pairs with distinct holders; the polynomials through
            them have degree len(shares) - 1.
        holder: Evaluate at this holder's point, or at 0 (the secret) when None.
    """
    return evaluate(shares, [holder])[0]


def secret_of(values: Sequence[int], secret_len: int) -> bytes:
    """Return the `secret_len`-byte secret whose pieces are the field elements `values`.

    Raises:
        ValueError: `values` are not the pieces of such a secret (a share was tampered
            with).
    """
    if len(values) != math.ceil(secret_len / PIECE_BYTES):
        raise ValueError(
            f"shares hold {len(values)} field elements, not a {secret_len}-byte secret"
        )
    out = bytearray()
    for i, v in enumerate(values):
        size = min(PIECE_BYTES, secret_len - i * PIECE_BYTES)
        if v >= 1 << (8 * size):
            raise ValueError("the shares do not encode a secret (one was tampered with)")
        out += v.to_bytes(size, "little")
    return bytes(out)


def combine(shares: Sequence[tuple[int, bytes]], secret_len: int) -> bytes:
    """Recover a `secret_len`-byte secret from (holder id, share) pairs.

    Pass exactly `threshold` shares: more are interpolated by a higher-degree polynomial
    that agrees with the secret only if every share is genuine.

    Raises:
        ValueError: a share is malformed, or the result is not a valid secret (a share
            was tampered with).
    """
    if not shares:
        raise ValueError("cannot recover a secret from no shares")
    return secret_of(interpolate(shares), secret_len)
