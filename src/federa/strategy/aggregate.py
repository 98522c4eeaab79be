"""Pure numpy reductions over client arrays."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from federa.core.arrays import Arrays, NDArray
from federa.core.messages import Metrics
from federa.errors import AggregationError

FLOAT64_REFERENCE_MAX = 1 << 22  # values (a 16 MiB float32 model; its copy takes 32 MiB)


class RunningWeightedMean:
    """Accumulate sum_k w_k (x_k - r) one result at a time, for a streaming weighted mean.

    The reference r is either given (the global arrays, for a server optimizer's
    pseudo-gradient) or the first result added. Averaging differences from the first
    result makes identical results give that result bit for bit (even subnormals), and
    values far from zero lose less precision than in a plain weighted sum. Sums are kept
    in float64 whatever the arrays' dtype.

    Memory is O(1) model copies however many results are added: the reference, one
    float64 sum per array and one float64 scratch buffer, and for models of up to
    `FLOAT64_REFERENCE_MAX` values a float64 copy of the reference (numpy subtracts a
    float32 array from a float64 one about 1.5x faster than it subtracts two float32
    arrays into float64, with the same result bit for bit). The floats depend on the
    order of `add` calls, so callers add results in client-id order.

    Args:
        reference: The arrays differences are taken from; the first result if None.
            It is read, never written, and must not change while the mean is used.
        names: The arrays to average (all of the reference's, or of the first result's,
            if None); the other arrays of each result are ignored.
    """

    def __init__(
        self,
        *,
        reference: Mapping[str, NDArray] | None = None,
        names: Collection[str] | None = None,
    ) -> None:
        self._names = None if names is None else set(names)
        self._first: Arrays | None = None
        self._reference: dict[str, NDArray] = {}
        self._subtrahends: dict[str, NDArray] = {}  # the reference, in float64 if small
        self._sums: dict[str, NDArray] = {}
        self._scratch = np.empty(0, dtype=np.float64)
        self._has_given_reference = reference is not None
        if reference is not None:
            self._start(reference)
        self.total_weight = 0.0
        self.count = 0

    def _start(self, reference: Mapping[str, NDArray]) -> None:
        self._reference = {
            n: a for n, a in reference.items() if self._names is None or n in self._names
        }
        self._sums = {n: np.zeros(a.shape, dtype=np.float64) for n, a in self._reference.items()}
        small = sum(a.size for a in self._reference.values()) <= FLOAT64_REFERENCE_MAX
        self._subtrahends = {
            n: a.astype(np.float64) if small and a.dtype.kind == "f" else a
            for n, a in self._reference.items()
        }
        size = max((a.size for a in self._reference.values()), default=0)
        self._scratch = np.empty(size, dtype=np.float64)

    def add(self, arrays: Arrays, weight: float) -> None:
        """Add one result with weight `weight` (>= 0).

        Raises:
            AggregationError: The weight is negative or not finite, or the arrays differ
                in names, shapes or dtypes from the first result added.
        """
        if not (math.isfinite(weight) and weight >= 0):
            raise AggregationError(f"weights must be finite and >= 0, got {weight}")
        if self._first is None:
            self._first = arrays
            if not self._has_given_reference:
                # The first result is the reference: its difference from itself is zero.
                self._start(arrays)
                self.total_weight += float(weight)
                self.count += 1
                return
        elif not arrays.same_spec(self._first):
            raise AggregationError(
                f"result {self.count} has arrays {arrays.spec()} but result 0 has "
                f"{self._first.spec()}"
            )
        w = float(weight)
        for name, ref in self._subtrahends.items():
            scratch = self._scratch[: ref.size].reshape(ref.shape)
            np.subtract(arrays[name], ref, out=scratch, dtype=np.float64)
            scratch *= w
            self._sums[name] += scratch
        self.total_weight += w
        self.count += 1

    def _check_nonempty(self) -> None:
        if self.count == 0:
            raise AggregationError("cannot average zero results")
        if not self.total_weight > 0:
            raise AggregationError("weights must have a positive sum, got 0")

    def offsets(self) -> dict[str, NDArray]:
        """Return sum_k w_k (x_k - r) / sum_k w_k per array, in float64."""
        self._check_nonempty()
        return {name: s / self.total_weight for name, s in self._sums.items()}

    def float_means(self) -> dict[str, NDArray]:
        """Return every array's weighted mean in float64: r + sum_k w_k (x_k - r) / sum_k w_k."""
        self._check_nonempty()
        return {name: self._float_mean(name) for name in self._reference}

    def mean(self) -> Arrays:
        """Return the weighted mean, cast back to each array's dtype.

        Integer and boolean arrays (for example BatchNorm's `num_batches_tracked`) are
        averaged and rounded. One array's float64 mean exists at a time.
        """
        self._check_nonempty()
        out: dict[str, NDArray] = {}
        for name, ref in self._reference.items():
            acc = self._float_mean(name)
            out[name] = (np.rint(acc) if ref.dtype.kind in "iub" else acc).astype(ref.dtype)
        return Arrays(out)

    def _float_mean(self, name: str) -> NDArray:
        acc: NDArray = self._sums[name] / self.total_weight
        acc += self._reference[name]
        return acc


def weighted_mean(arrays: Sequence[Arrays], weights: Sequence[float]) -> Arrays:
    """Return sum_k w_k * x_k / sum_k w_k for every named array.

    Floating arrays are accumulated in float64 and cast back to their own dtype, so the
    result does not depend on the float32 rounding of partial sums. Integer arrays (for
    example BatchNorm's `num_batches_tracked`) are averaged and rounded. The result is
    bit for bit that of a `RunningWeightedMean` fed the same arrays in the same order.

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
    running = RunningWeightedMean()
    for a, wk in zip(arrays, w, strict=True):
        running.add(a, float(wk))
    return running.mean()


class RunningMetrics:
    """Accumulate example-weighted metrics one client at a time (see `weighted_metrics`)."""

    def __init__(self) -> None:
        self._totals: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, num_examples: int, metrics: Metrics) -> None:
        """Add one client's metrics, weighted by its example count."""
        for name, value in metrics.items():
            self._totals[name] = self._totals.get(name, 0.0) + num_examples * float(value)
            self._counts[name] = self._counts.get(name, 0) + num_examples

    def result(self) -> dict[str, float]:
        """Return the weighted means, sorted by name."""
        return {
            k: self._totals[k] / self._counts[k]
            for k in sorted(self._totals)
            if self._counts[k] > 0
        }


def weighted_metrics(metrics: Sequence[tuple[int, Metrics]]) -> dict[str, float]:
    """Average metrics weighted by example count.

    A metric a client did not report is averaged over the clients that did.
    """
    running = RunningMetrics()
    for num_examples, m in metrics:
        running.add(num_examples, m)
    return running.result()
