"""SecAgg+: the server learns the weighted sum of the cohort's updates and nothing else.

Bell, Bonawitz, Gascón, Lepoint, Raykova. "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead." CCS 2020, on Bonawitz et al. "Practical Secure Aggregation
for Privacy-Preserving Machine Learning." CCS 2017. One training round becomes four
round trips of tasks through the transport, in simulation and over gRPC alike:

1. setup: clients train, encode their update and advertise two public keys;
2. share: each client sends its neighbours Shamir shares of its two secrets, encrypted;
3. mask: each client sends its update masked by pairwise and self masks;
4. unmask: survivors send the shares that let the server strip the masks: of the self
   mask seed of every survivor, of the mask key of every client that dropped out.

Clients may drop out at any stage; the round completes while every secret the server
needs still has `threshold` holders online. Security model: an honest-but-curious
server (it follows the protocol but reads everything it sees) and clients that may
drop out; the consistency check against a server that lies about who dropped out
(Bonawitz et al. round 3, with signatures) is not implemented.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from federa.core.messages import Failure, TrainResult, TrainTask
from federa.core.rng import derive_seed
from federa.errors import ConfigError
from federa.privacy.secagg import graph, quantize, recover, stages, wire
from federa.privacy.secagg.stages import Collect

logger = logging.getLogger(__name__)

AGGREGATE_ID = -1
"""Client id of the one aggregated result handed to the strategy."""


class SecAggPlus:
    """Secure aggregation of each round's training results (SecAgg+, Bell et al. 2020).

    Pass it to `simulate(..., secure_aggregation=...)` or `serve(...)`; the clients must
    be wrapped in `federa.client.secagg.SecAggPlusClient` (simulate does it, and so
    does `federa client`). The strategy then sees one result per round: the weighted
    mean of the cohort's arrays (to quantisation error), its total `num_examples` and
    the weighted mean of its metrics. Only strategies that need nothing more (their
    `is_sum_only` is True: FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad) can
    be combined with it.

    Updates (trained arrays minus the arrays sent) are clipped to [-clip, clip] per
    coordinate, weighted by min(num_examples, max_weight) / max_weight, and encoded
    with floor((2^32 - 1) / n) levels for a cohort of n, so the mean is exact to about
    2 clip n / 2^32 per coordinate.

    Args:
        threshold: Shares needed to recover a client's secret, in (degree / 2, degree];
            default floor(2 degree / 3) + 1.
        degree: Neighbours per client in [1, n - 1]; default 2 ceil(log2 n) + 1, capped at
            n - 1 (the complete graph of the original SecAgg).
        clip: Per-coordinate bound on a client's update.
        max_weight: Example count at which a client's weight stops growing.
        metric_clip: Bound on the absolute value of a training metric.
    """

    def __init__(
        self,
        *,
        threshold: int | None = None,
        degree: int | None = None,
        clip: float = 1.0,
        max_weight: float = 10_000.0,
        metric_clip: float = 1_000.0,
    ) -> None:
        for name, value in (("threshold", threshold), ("degree", degree)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f"secure aggregation {name} must be an integer, got {value!r}")
            if value is not None and value < 1:
                raise ConfigError(f"secure aggregation {name} must be >= 1, got {value}")
        for name, number in (("clip", clip), ("max_weight", max_weight)):
            if not (math.isfinite(number) and number > 0):
                raise ConfigError(
                    f"secure aggregation {name} must be a positive number, got {number}"
                )
        if not (math.isfinite(metric_clip) and metric_clip > 0):
            raise ConfigError(f"metric_clip must be a positive number, got {metric_clip}")
        if threshold is not None and degree is not None and not degree / 2 < threshold <= degree:
            graph.resolve(degree + 1, degree, threshold)  # raises the one-line error
        self.threshold = threshold
        self.degree = degree
        self.clip = float(clip)
        self.max_weight = float(max_weight)
        self.metric_clip = float(metric_clip)

    def __repr__(self) -> str:
        return (
            f"SecAggPlus(threshold={self.threshold}, degree={self.degree}, clip={self.clip}, "
            f"max_weight={self.max_weight})"
        )

    def check_strategy(self, strategy: object) -> None:
        """Raise ConfigError unless `strategy` only needs the weighted sum of the results."""
        if not getattr(strategy, "is_sum_only", False):
            raise ConfigError(
                f"{type(strategy).__name__} needs every client's own update, which secure "
                "aggregation hides from the server; use a strategy that only needs their "
                "weighted sum (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad) or "
                "turn secure aggregation off"
            )

    def check_cohort(self, num_clients: int) -> tuple[int, int]:
        """Return (degree, threshold) for a cohort of `num_clients`; ConfigError if invalid."""
        return graph.resolve(num_clients, self.degree, self.threshold)

    def aggregate(
        self, tasks: Sequence[TrainTask], collect: Collect, *, seed: int
    ) -> tuple[list[tuple[int, TrainResult]], list[Failure]]:
        """Run the four stages for the cohort of `tasks` and return the aggregated result.

        Args:
            tasks: The strategy's training tasks (one round, the same arrays for all).
            collect: Runs tasks through the transport (see `Collect`).
            seed: The run seed; the neighbour graph derives from (seed, round_num).

        Returns:
            ([(AGGREGATE_ID, result)], failures) with every client that dropped out or
            misbehaved among the failures; no result when no client had examples.

        Raises:
            ConfigError: the cohort is too small for the degree and threshold, or the
                tasks do not all carry the same arrays.
            AggregationError: too many clients dropped out for the round to complete.
        """
        if not tasks:
            return [], []
        degree, threshold = self.check_cohort(len(tasks))
        reference = tasks[0].arrays
        if any(t.arrays is not reference and not t.arrays.equals(reference) for t in tasks):
            raise ConfigError(
                "secure aggregation needs every client of a round to be sent the same arrays"
            )
        rnd = stages.Round(
            round_num=tasks[0].round_num,
            tasks={t.client_id: t for t in tasks},
            degree=degree,
            threshold=threshold,
        )
        settings = {
            wire.CLIP: self.clip,
            wire.MAX_WEIGHT: self.max_weight,
            wire.METRIC_CLIP: self.metric_clip,
        }
        setups = stages.setup(rnd, settings, collect)
        rnd.graph = graph.neighbour_graph(
            sorted(setups), degree, derive_seed(seed, rnd.round_num, -1, "secagg")
        )
        ciphertexts = stages.share(rnd, setups, collect)
        alive = stages.select(rnd, ciphertexts)
        names = sorted(set().union(*(setups[u].metric_names for u in alive)))
        length = reference.num_params + 2 + 4 * len(names)
        masked = stages.mask(rnd, alive, ciphertexts, names, length, collect)
        total = stages.unmask(rnd, setups, alive, masked, collect)
        encoding = recover.Encoding(
            reference=reference,
            clip=self.clip,
            levels=quantize.levels_for(len(tasks)),
            max_weight=self.max_weight,
            metric_clip=self.metric_clip,
            metric_names=names,
        )
        decoded = recover.decode(total, len(masked), encoding)
        failures = [rnd.failures[k] for k in sorted(rnd.failures)]
        logger.info(
            "round %d: securely aggregated %d of %d clients (%d dropped after sharing keys)",
            rnd.round_num,
            len(masked),
            len(tasks),
            len(alive) - len(masked),
        )
        if decoded is None:
            return [], failures
        arrays, num_examples, metrics = decoded
        result = TrainResult(arrays=arrays, num_examples=num_examples, metrics=metrics)
        return [(AGGREGATE_ID, result)], failures
