"""Krum and Multi-Krum aggregation.

Blanchard, El Mhamdi, Guerraoui, Stainer. "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent." NeurIPS 2017.

Each result is scored by the sum of its squared distances to its n - f - 2 nearest other
results; Krum keeps the best-scored result, Multi-Krum the m best and averages them
weighted by `num_examples`. With at most f Byzantine clients among n > 2f + 2, the
selection stays close to the honest results. Distances are computed between the results
minus the global model (the updates), which leaves them unchanged but keeps them
accurate in float32. Results whose arrays hold NaN or Inf are ignored (see
`federa.strategy.robust.finite_results`) and the rest are aggregated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from federa.core.arrays import Arrays
from federa.core.messages import Failure, Metrics, TrainResult, TrainTask
from federa.errors import AggregationError, ConfigError
from federa.strategy.aggregate import weighted_mean, weighted_metrics
from federa.strategy.base import RoundContext
from federa.strategy.fedavg import FedAvg
from federa.strategy.robust import distance_dtype, finite_results, flatten, krum_select


def check_count(name: str, value: int, minimum: int) -> None:
    """Raise ConfigError unless `value` is an integer >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


class ByzantineFedAvg(FedAvg):
    """`FedAvg` sampling with a smallest cohort set by the number of Byzantine clients.

    The base of the Krum family (`Krum`, `MultiKrum`, `Bulyan`): subclasses define
    `min_cohort` and `condition` and aggregate.

    Args:
        num_byzantine: Number f of Byzantine clients to tolerate per round.
        **kwargs: `FedAvg`'s keyword arguments.
    """

    is_sum_only = False  # compares individual results

    condition = "n >= 1"
    """The rule's requirement on the number n of results, as quoted in errors."""

    def __init__(self, *, num_byzantine: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_count("num_byzantine", num_byzantine, 0)
        self.num_byzantine = int(num_byzantine)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, num_byzantine={self.num_byzantine})"

    def min_cohort(self) -> int:
        """Return the smallest number of results the rule accepts."""
        return 1

    def configure_train(
        self, ctx: RoundContext, arrays: Arrays, available: Sequence[int]
    ) -> list[TrainTask]:
        """Sample the cohort like `FedAvg`, refusing one too small for `num_byzantine`.

        Raises:
            ConfigError: if the cohort is non-empty but smaller than `min_cohort()`.
        """
        tasks = super().configure_train(ctx, arrays, available)
        if tasks and len(tasks) < self.min_cohort():
            raise ConfigError(
                f"{type(self).__name__} with num_byzantine={self.num_byzantine} needs at least "
                f"{self.min_cohort()} clients per round ({self.condition}) but round "
                f"{ctx.round_num} sampled {len(tasks)}; raise fraction_train or "
                "min_train_clients, or lower num_byzantine"
            )
        return tasks

    def check_num_results(self, ctx: RoundContext, n: int) -> None:
        """Raise AggregationError if n results are too few for the rule."""
        if n < self.min_cohort():
            raise AggregationError(
                f"{type(self).__name__} with num_byzantine={self.num_byzantine} needs at least "
                f"{self.min_cohort()} results ({self.condition}) but round {ctx.round_num} "
                f"has n={n}; sample more clients per round or lower num_byzantine"
            )


class Krum(ByzantineFedAvg):
    """Sample a cohort like `FedAvg`; keep the result with the lowest Krum score.

    Args:
        num_byzantine: Number f of Byzantine clients to tolerate per round; every round
            needs n > 2f + 2 results (see `min_cohort`).
        **kwargs: `FedAvg`'s keyword arguments.
    """

    condition = "n > 2f + 2"
    num_selected = 1
    """How many of the best-scored results are averaged."""

    def min_cohort(self) -> int:
        """Return the smallest number of results the rule accepts."""
        return 2 * self.num_byzantine + 3

    def aggregate_train(
        self,
        ctx: RoundContext,
        arrays: Arrays,
        results: Sequence[tuple[int, TrainResult]],
        failures: Sequence[Failure],
    ) -> tuple[Arrays | None, Metrics]:
        """Return the example-weighted mean of the selected results and everyone's metrics.

        Raises:
            AggregationError: if the round has between 1 and `min_cohort() - 1` finite
                results (none at all rejects the round, as in `FedAvg`).
        """
        usable = finite_results([(cid, r) for cid, r in results if r.num_examples > 0])
        if not usable or (failures and not self.accept_failures):
            return None, {}
        self.check_num_results(ctx, len(usable))
        models = [r.arrays for _, r in usable]
        matrix, _ = flatten(models, distance_dtype(models[0]), center=arrays)
        m = self.num_selected
        picked = np.sort(krum_select(matrix, self.num_byzantine, m))
        chosen = [usable[i][1] for i in picked]
        new = weighted_mean([r.arrays for r in chosen], [r.num_examples for r in chosen])
        metrics = weighted_metrics([(r.num_examples, r.metrics) for _, r in usable])
        return new, {**metrics, "num_selected": float(m)}


class MultiKrum(Krum):
    """Sample a cohort like `FedAvg`; average the m results with the lowest Krum scores.

    Args:
        num_byzantine: Number f of Byzantine clients to tolerate per round.
        num_selected: Number m of results averaged, weighted by `num_examples`; m = 1 is
            Krum. Every round needs n > 2f + 2 and n >= m + f results, so that m
            selected results can all be honest (see `min_cohort`).
        **kwargs: `FedAvg`'s keyword arguments.
    """

    condition = "n > 2f + 2 and n >= num_selected + f"

    def __init__(self, *, num_byzantine: int, num_selected: int, **kwargs: Any) -> None:
        super().__init__(num_byzantine=num_byzantine, **kwargs)
        check_count("num_selected", num_selected, 1)
        self.num_selected = int(num_selected)

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, num_selected={self.num_selected})"

    def min_cohort(self) -> int:
        """Return the smallest number of results the rule accepts."""
        return max(2 * self.num_byzantine + 3, self.num_selected + self.num_byzantine)
