"""Pure numpy reductions over client arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from federa.core.arrays import Arrays
from federa.core.messages import Metrics
from federa.errors import AggregationError


def weighted_mean(arrays: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
    """Return sum_k w_k * x_k / sum_k w_k for every named array.

    Floating arrays are accumulated in float64 and cast back to their own dtype, so the
    result does not depend on the float32 rounding of partial sums. Integer arrays (for
    example BatchNorm's `num_batches_tracked`) are averaged and rounded.

    Raises:
        AggregationError: if there is nothing to average, the weights are not positive,
            or the arrays disagree in names, shapes or dtypes.
    """
    if not arrays:
        raise AggregationError("cannot average zero results")
    if len(arrays) != len(weights):
        raise AggregationError(f"{len(arrays)} arrays but {len(weights)} weights")
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise AggregationError(f"weights must be >= 0 with a positive sum, got {w.tolist()}")
    reference = arrays[0]
    for i, a in enumerate(arrays[1:], start=1):
        if not a.same_spec(reference):
            raise AggregationError(
                f"result {i} has arrays {a.spec()} but result 0 has {reference.spec()}"
            )
    w = w / w.sum()
    out: dict[str, np.ndarray] = {}
    for name, ref in reference.items():
        # Average the differences from the first result and add them back: identical
        # results then give that result bit for bit (even subnormals), and values far
        # from zero lose less precision than in a plain weighted sum.
        base = ref.astype(np.float64)
        acc = np.zeros(ref.shape, dtype=np.float64)
        scratch = np.empty(ref.shape, dtype=np.float64)
        for wk, a in zip(w[1:], arrays[1:], strict=True):
            np.subtract(a[name], base, out=scratch)
            scratch *= wk
            acc += scratch
        acc += base
        if ref.dtype.kind in "iub":
            acc = np.rint(acc)
        out[name] = acc.astype(ref.dtype)
    return Arrays(out)


def weighted_metrics(metrics: Sequence[tuple[int, Metrics]]) -> dict[str, float]:
    """Average metrics weighted by example count.

    A metric a client did not report is averaged over the clients that did.
    """
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for num_examples, m in metrics:
        for name, value in m.items():
            totals[name] = totals.get(name, 0.0) + num_examples * float(value)
            counts[name] = counts.get(name, 0) + num_examples
    return {k: totals[k] / counts[k] for k in sorted(totals) if counts[k] > 0}
