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

from typing import Any

from federa.errors import ConfigError
from federa.strategy.median import CoordinateWise, NDArray
from federa.strategy.robust import trimmed_mean


class FedTrimmedMean(CoordinateWise):
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

    def reduce(self, matrix: NDArray) -> NDArray:
        """Return the trimmed mean of every column."""
        return trimmed_mean(matrix, self.beta)
