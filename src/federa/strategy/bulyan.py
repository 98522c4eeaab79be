"""Bulyan aggregation.

El Mhamdi, Guerraoui, Rouault. "The Hidden Vulnerability of Distributed Learning in
Byzantium." ICML 2018.

Bulyan first selects theta = n - 2f results by Krum, removing each winner before the next
pick, then takes, coordinate by coordinate, the mean of the beta = theta - 2f selected
values closest to their median. The second stage bounds what a Byzantine result that
survives Krum can do to any single coordinate. It needs n >= 4f + 3 results. Distances
are computed between the results minus the global model (the updates), which leaves them
unchanged but keeps them accurate. Results whose arrays hold NaN or Inf are ignored (see
`federa.strategy.robust.finite_results`) and the rest are aggregated. Every client counts
once: `num_examples` weights the metrics but not the aggregate.
"""

from __future__ import annotations

from collections.abc import Sequence

from federa.core.arrays import Arrays
from federa.core.messages import Failure, Metrics, TrainResult
from federa.strategy.aggregate import weighted_metrics
from federa.strategy.base import RoundContext
from federa.strategy.krum import ByzantineFedAvg
from federa.strategy.robust import bulyan, finite_results, flatten


class Bulyan(ByzantineFedAvg):
    """Sample a cohort like `FedAvg`; aggregate its results by Bulyan.

    Args:
        num_byzantine: Number f of Byzantine clients to tolerate per round; every round
            needs n >= 4f + 3 results (see `min_cohort`).
        **kwargs: `FedAvg`'s keyword arguments.
    """

    condition = "n >= 4f + 3"

    def min_cohort(self) -> int:
        """Return the smallest number of results the rule accepts."""
        return 4 * self.num_byzantine + 3

    def aggregate_train(
        self,
        ctx: RoundContext,
        arrays: Arrays,
        results: Sequence[tuple[int, TrainResult]],
        failures: Sequence[Failure],
    ) -> tuple[Arrays | None, Metrics]:
        """Return the Bulyan aggregate of the finite results and everyone's weighted metrics.

        Raises:
            AggregationError: if the round has between 1 and `min_cohort() - 1` finite
                results (none at all rejects the round, as in `FedAvg`).
        """
        usable = finite_results([(cid, r) for cid, r in results if r.num_examples > 0])
        if not usable or (failures and not self.accept_failures):
            return None, {}
        self.check_num_results(ctx, len(usable))
        models = [r.arrays for _, r in usable]
        matrix, unflatten = flatten(models)
        center = flatten([arrays])[0][0] if arrays.same_spec(models[0]) else None
        new = unflatten(bulyan(matrix, self.num_byzantine, center))
        metrics = weighted_metrics([(r.num_examples, r.metrics) for _, r in usable])
        theta = len(usable) - 2 * self.num_byzantine
        return new, {**metrics, "num_selected": float(theta)}
