"""Coordinate-wise trimmed-mean aggregation.

Yin, Chen, Ramchandran, Bartlett. "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates." ICML 2018.

For each coordinate, the floor(beta * n) largest and the floor(beta * n) smallest values
among the n results are dropped and the rest averaged; it tolerates up to that many
Byzantine clients per side. Results whose arrays hold NaN or Inf are ignored (see
`federa.strategy.robust.finite_results`) and the rest are aggregated. Every client counts
once: `num_examples` weights the metrics but not the mean, because a Byzantine client
could claim any number of examples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from federa.core.arrays import Arrays
from federa.core.messages import Failure, Metrics, TrainResult
from federa.errors import ConfigError
from federa.strategy.aggregate import weighted_metrics
from federa.strategy.base import RoundContext
from federa.strategy.fedavg import FedAvg
from federa.strategy.robust import finite_results, flatten, trimmed_mean


class FedTrimmedMean(FedAvg):
    """Sample a cohort like `FedAvg`; take the coordinate-wise trimmed mean of its results.

    Args:
        beta: Fraction of the results trimmed from each end of every coordinate, in
            [0, 0.5); 0 is the unweighted mean.
        **kwargs: `FedAvg`'s keyword arguments.
    """

    def __init__(self, *, beta: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 <= beta < 0.5:
            raise ConfigError(f"beta must be a number in [0, 0.5), got {beta!r}")
        self.beta = float(beta)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, beta={self.beta})"

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
        """Return the trimmed mean of the finite results and their weighted metrics."""
        usable = finite_results([(cid, r) for cid, r in results if r.num_examples > 0])
        if not usable or (failures and not self.accept_failures):
            return None, {}
        matrix, unflatten = flatten([r.arrays for _, r in usable])
        new = unflatten(trimmed_mean(matrix, self.beta))
        return new, weighted_metrics([(r.num_examples, r.metrics) for _, r in usable])
