"""Byzantine-robust reductions over a stacked (clients x parameters) matrix.

Every function here is pure numpy: no Python loop runs over parameters or over pairs of
clients (the only loops take one client at a time: a row in `flatten`, a pick in
`iterated_krum`), and no input is modified. Row i of a matrix is client i's arrays
flattened by `flatten`; reductions return float64 and `flatten`'s `unflatten` casts back.

Results whose arrays hold NaN or Inf carry no usable information and would poison a
median or a distance, so the robust strategies drop them first with `finite_results`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from federa.core.arrays import Arrays
from federa.core.messages import TrainResult
from federa.errors import AggregationError

Matrix = npt.NDArray[Any]
Unflatten = Callable[[Matrix], Arrays]
K = TypeVar("K")

# A float32 Gram matrix cannot overflow while every squared row norm stays below this
# (|a.b| <= max(|a|^2, |b|^2) by Cauchy-Schwarz); float32 tops out at 3.4e38.
_FLOAT32_GRAM_LIMIT = 1e37


def finite_results(results: Sequence[tuple[K, TrainResult]]) -> list[tuple[K, TrainResult]]:
    """Return the results whose arrays hold no NaN or Inf, in their original order."""
    return [(key, r) for key, r in results if r.arrays.is_finite()]


def flatten(
    arrays_list: Sequence[Arrays],
    dtype: npt.DTypeLike = np.float64,
    center: Arrays | None = None,
) -> tuple[Matrix, Unflatten]:
    """Stack each client's arrays, concatenated in `Arrays` order, as one row of a matrix.

    Args:
        arrays_list: One `Arrays` per client, all with the same names, shapes and dtypes.
        dtype: The matrix dtype.
        center: Subtracted from every row when it has the same spec as the rows (and
            ignored otherwise); pass the global model to turn results into updates.

    Returns:
        The (clients x parameters) matrix, and a function that turns one row back into
        `Arrays` with the original names, shapes and dtypes, adding `center` back and
        rounding integer and bool arrays.

    Raises:
        AggregationError: if there are no arrays, they disagree in names, shapes or
            dtypes, or one is complex.
    """
    if not arrays_list:
        raise AggregationError("cannot aggregate zero results")
    reference = arrays_list[0]
    for i, a in enumerate(arrays_list[1:], start=1):
        if not a.same_spec(reference):
            raise AggregationError(
                f"result {i} has arrays {a.spec()} but result 0 has {reference.spec()}"
            )
    for name, value in reference.items():
        if value.dtype.kind not in "biuf":
            raise AggregationError(
                f"array {name!r} has dtype {value.dtype}; robust aggregation needs real numbers"
            )
    specs = [(name, value.dtype, value.shape, value.size) for name, value in reference.items()]
    bounds = np.cumsum([0] + [size for *_, size in specs]).tolist()
    matrix = np.empty((len(arrays_list), bounds[-1]), dtype=dtype)
    for row, arrays in zip(matrix, arrays_list, strict=True):
        np.concatenate([a.reshape(-1) for a in arrays.values()], out=row, casting="unsafe")
    offset = None
    if center is not None and center.same_spec(reference):
        offset = flatten([center], dtype)[0][0]
        with np.errstate(over="ignore"):  # a float32 attacker can overflow: it becomes far
            matrix -= offset  # in place: a second matrix-sized buffer costs as much again

    def unflatten(vector: Matrix) -> Arrays:
        if offset is not None:
            vector = np.asarray(vector) + offset
        out: dict[str, Matrix] = {}
        for (name, kind, shape, _), start, stop in zip(specs, bounds[:-1], bounds[1:], strict=True):
            piece = np.asarray(vector[start:stop]).reshape(shape)
            if kind.kind in "iub":
                piece = np.rint(piece)
            out[name] = piece.astype(kind)
        return Arrays(out)

    return matrix, unflatten


def pairwise_sq_distances(matrix: Matrix, center: Matrix | None = None) -> Matrix:
    """Return the (n x n) squared Euclidean distances between the rows, in float64.

    Uses ||a||^2 + ||b||^2 - 2 a.b with one matrix product; the squared norms are summed
    in float64, the Gram matrix in the matrix's own precision (float32 rows give a
    float32 product, twice as fast, unless their norms could overflow it). Negative
    round-off is clipped to 0; a non-finite distance (float64 overflow) becomes +inf.

    Args:
        matrix: One row per client.
        center: A point subtracted from every row first. Distances do not change, but
            the cancellation in the formula is relative to the row norms, so centering
            on a point near the rows (the global model) keeps close rows accurate.
    """
    rows = np.asarray(matrix)
    if center is not None:
        rows = np.subtract(rows, np.asarray(center, dtype=rows.dtype), dtype=rows.dtype)
    if rows.dtype not in (np.float32, np.float64):
        rows = rows.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
        if rows.dtype == np.float32 and not np.max(norms, initial=0.0) < _FLOAT32_GRAM_LIMIT:
            rows = rows.astype(np.float64)
        gram = np.asarray(rows @ rows.T, dtype=np.float64)
        dist: Matrix = norms[:, None] + norms[None, :] - 2.0 * gram
        dist = 0.5 * (dist + dist.T)
    dist[np.isnan(dist)] = np.inf
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    return dist


def _median_inplace(work: Matrix) -> Matrix:
    """Return the per-column median of `work`, reordering each of its columns."""
    half = work.shape[0] // 2
    work.partition(half, axis=0)  # one kth runs numpy's fast selection path
    upper = work[half]
    if work.shape[0] % 2:
        return np.array(upper)
    lower = np.max(work[:half], axis=0)
    return np.asarray(0.5 * lower + 0.5 * upper)  # halves first: no overflow


def coordinate_median(matrix: Matrix) -> Matrix:
    """Return the per-coordinate median of the rows (the mean of the middle two for even n)."""
    if matrix.shape[0] == 0:
        raise AggregationError("cannot take the median of zero results")
    return _median_inplace(np.array(matrix, dtype=np.float64))


def trimmed_mean(matrix: Matrix, beta: float) -> Matrix:
    """Drop the floor(beta * n) largest and smallest values per coordinate; average the rest."""
    n = matrix.shape[0]
    if n == 0:
        raise AggregationError("cannot take the trimmed mean of zero results")
    if not 0.0 <= beta < 0.5:
        raise AggregationError(f"beta must be in [0, 0.5), got {beta}")
    k = int(beta * n + 1e-9)  # floor, forgiving 0.3 * 10 = 2.9999999999999996
    if k == 0:
        return np.asarray(np.mean(matrix, axis=0, dtype=np.float64))
    work = np.array(matrix, dtype=np.float64)
    work.partition(k, axis=0)  # rows [0, k) now hold the k smallest
    rest = work[k:]
    rest.partition(n - 2 * k - 1, axis=0)  # rows [n - 2k, n - k) of rest: the k largest
    return np.asarray(rest[: n - 2 * k].mean(axis=0))


def krum_scores(dist: Matrix, f: int) -> Matrix:
    """Score each row by the sum of its n - f - 2 smallest squared distances to the others.

    Blanchard et al. 2017 (see `federa.strategy.krum`); requires n - f - 2 >= 1.
    """
    n = dist.shape[0]
    k = n - f - 2
    if f < 0 or k < 1:
        raise AggregationError(f"Krum scores need n - f - 2 >= 1, got n={n}, f={f}")
    others = np.array(dist, dtype=np.float64)
    np.fill_diagonal(others, np.inf)
    return np.asarray(np.partition(others, k - 1, axis=1)[:, :k].sum(axis=1))


def krum_select(matrix: Matrix, f: int, m: int) -> Matrix:
    """Return the indices of the m rows with the lowest Krum scores, best first (Multi-Krum).

    m = 1 is Krum; ties go to the lower index. Center the rows first (see
    `pairwise_sq_distances`).
    """
    n = matrix.shape[0]
    if not 1 <= m <= n:
        raise AggregationError(f"Multi-Krum selects 1 <= m <= n rows, got m={m}, n={n}")
    scores = krum_scores(pairwise_sq_distances(matrix), f)
    return np.argsort(scores, kind="stable")[:m]


def iterated_krum(dist: Matrix, f: int, count: int) -> Matrix:
    """Select `count` rows by Krum, removing each winner before choosing the next.

    This is Bulyan's first stage. Krum's neighbourhood shrinks with the remaining set R
    to |R| - f - 2 rows, kept at 1 or more for the last picks (where |R| < f + 3).
    """
    n = dist.shape[0]
    if not 1 <= count <= n:
        raise AggregationError(f"cannot select {count} of {n} results")
    others = np.array(dist, dtype=np.float64)
    np.fill_diagonal(others, np.inf)
    remaining = np.ones(n, dtype=bool)
    chosen: list[int] = []
    for _ in range(count):  # one Krum per selected client; each is vectorized over rows
        idx = np.flatnonzero(remaining)
        if idx.size == 1:
            best = int(idx[0])
        else:
            k = max(idx.size - f - 2, 1)
            sub = np.partition(others[np.ix_(idx, idx)], k - 1, axis=1)
            best = int(idx[np.argmin(sub[:, :k].sum(axis=1))])
        chosen.append(best)
        remaining[best] = False
    return np.array(chosen, dtype=np.intp)


def mean_around_median(matrix: Matrix, count: int) -> Matrix:
    """Average, per coordinate, the `count` values closest to that coordinate's median.

    This is Bulyan's second stage. Values tied at the cut-off distance enter with their
    mean, so the result does not depend on row order.
    """
    return _mean_around_median_inplace(np.array(matrix, dtype=np.float64), count)


def _mean_around_median_inplace(work: Matrix, count: int) -> Matrix:
    n = work.shape[0]
    if not 1 <= count <= n:
        raise AggregationError(f"cannot keep {count} of {n} values per coordinate")
    median = _median_inplace(work)  # reorders columns of work; order is irrelevant below
    dev = np.subtract(work, median)
    np.abs(dev, out=dev)
    dev.partition(count - 1, axis=0)
    cutoff = dev[count - 1].copy()
    np.subtract(work, median, out=dev)  # recomputed in the same buffer: cheaper than a copy
    np.abs(dev, out=dev)
    below = dev < cutoff
    at = dev == cutoff
    # Masked sums through the dev buffer: faster than sum(where=) and no new allocation.
    sum_below = np.multiply(work, below, out=dev).sum(axis=0)
    mean_at = np.multiply(work, at, out=dev).sum(axis=0) / np.count_nonzero(at, axis=0)
    num_below = np.count_nonzero(below, axis=0)
    return np.asarray((sum_below + (count - num_below) * mean_at) / count)


def bulyan(matrix: Matrix, f: int, center: Matrix | None = None) -> Matrix:
    """Aggregate by Bulyan (El Mhamdi et al. 2018; see `federa.strategy.bulyan`).

    Selects theta = n - 2f rows by iterated Krum, then averages per coordinate the
    beta = theta - 2f selected values closest to their median. Requires n >= 4f + 3.
    `center` only serves the distances (see `pairwise_sq_distances`); the average is
    taken over the rows as given, so values far smaller than the center survive.
    """
    n = matrix.shape[0]
    if f < 0 or n < 4 * f + 3:
        raise AggregationError(f"Bulyan needs n >= 4f + 3, got n={n}, f={f}")
    theta = n - 2 * f
    selected = iterated_krum(pairwise_sq_distances(matrix, center), f, theta)
    work = np.asarray(matrix[np.sort(selected)], dtype=np.float64)  # a copy: fancy indexing
    return _mean_around_median_inplace(work, theta - 2 * f)


def distance_dtype(arrays: Arrays) -> np.dtype[Any]:
    """Return the dtype to compute client distances in: float32 unless a float is wider.

    Models held in float32 or narrower are not resolved beyond float32 precision, so a
    float32 Gram matrix (half the time and memory of float64) loses nothing that matters.
    """
    wide = any(a.dtype.kind == "f" and a.dtype.itemsize > 4 for a in arrays.values())
    return np.dtype(np.float64 if wide else np.float32)
