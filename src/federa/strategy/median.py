"""Coordinate-wise median aggregation.

Yin, Chen, Ramchandran, Bartlett. "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates." ICML 2018.

Each coordinate of the new model is the median of that coordinate over the clients'
results, so fewer than half of the clients cannot drag it outside the range of the honest
values. Results whose arrays hold NaN or Inf are ignored (see
`federa.strategy.robust.finite_results`) and the rest are aggregated. Every client counts
once: `num_examples` weights the metrics but not the median, because a Byzantine client
could claim any number of examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from federa.core.arrays import Arrays
from federa.core.messages import Failure, Metrics, TrainResult
from federa.strategy.aggregate import weighted_metrics
from federa.strategy.base import RoundContext
from federa.strategy.fedavg import FedAvg
from federa.strategy.robust import coordinate_median, finite_results, flatten

NDArray = npt.NDArray[np.floating[Any]]


class CoordinateWise(FedAvg):
    """Base of rules that reduce each coordinate over the finite results independently.

    Subclasses implement `reduce(matrix)` over a (clients x parameters) matrix.
    """

    is_sum_only = False  # reduces individual results per coordinate

    def reduce(self, matrix: NDArray) -> NDArray:
        """Return one value per column of `matrix`."""
        raise NotImplementedError

    def min_cohort(self) -> int:
        """Return the smallest number of results the rule accepts."""
        return 1

    def aggregate_train(
        self,
        ctx: RoundContext,
        arrays: Arrays,
        results: Sequence[tuple[int, TrainResult]],
        failures: Sequence[Failure],
    ) -> tuple[Arrays | None, Metrics]:
        """Reduce the finite results coordinate by coordinate; weight their metrics."""
        usable = finite_results([(cid, r) for cid, r in results if r.num_examples > 0])
        if not usable or (failures and not self.accept_failures):
            return None, {}
        matrix, unflatten = flatten([r.arrays for _, r in usable])
        new = unflatten(self.reduce(matrix))
        return new, weighted_metrics([(r.num_examples, r.metrics) for _, r in usable])


class FedMedian(CoordinateWise):
    """Sample a cohort like `FedAvg`; take the coordinate-wise median of its results.

    Accepts `FedAvg`'s keyword arguments.
    """

    def reduce(self, matrix: NDArray) -> NDArray:
        """Return the median of every column."""
        return coordinate_median(matrix)
