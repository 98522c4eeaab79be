"""Federated Averaging.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas. "Communication-Efficient Learning of
Deep Networks from Decentralized Data." AISTATS 2017.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from federa.core.arrays import Arrays
from federa.core.messages import (
    Config,
    EvalResult,
    EvalTask,
    Failure,
    Metrics,
    TrainResult,
    TrainTask,
)
from federa.errors import ConfigError
from federa.strategy.aggregate import RunningMetrics, RunningWeightedMean, weighted_metrics
from federa.strategy.base import RoundContext, Strategy, TrainAccumulator, accumulate

EvaluateFn = Callable[[int, Arrays], "tuple[float, Metrics] | None"]
"""Centralized evaluation: (round_num, arrays) -> (loss, metrics)."""
ConfigFn = Callable[[int], Config]
"""Per-round client config: round_num -> config."""


def sample_cohort(
    ctx: RoundContext, available: Sequence[int], fraction: float, min_clients: int
) -> list[int]:
    """Sample max(ceil(fraction * n), min_clients) of the n available clients, sorted.

    Returns an empty list when fewer than `min_clients` are available: the round then
    has no cohort rather than an undersized one.
    """
    pool = sorted(available)
    if len(pool) < min_clients or fraction == 0.0:
        return []
    size = min(len(pool), max(math.ceil(fraction * len(pool)), min_clients))
    picked = ctx.rng.choice(len(pool), size=size, replace=False)
    return sorted(pool[i] for i in picked)


def _check_fraction(name: str, value: float, *, allow_zero: bool) -> None:
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value <= 1.0):
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ConfigError(f"{name} must be in {interval}, got {value}")


class FedAvg(Strategy):
    """Sample a cohort, average its returned arrays weighted by `num_examples`.

    Args:
        fraction_train: Fraction C of available clients sampled to train each round.
        min_train_clients: Smallest training cohort; fewer available clients skip the round.
        fraction_evaluate: Fraction of available clients that evaluate each round (0 turns
            distributed evaluation off).
        min_evaluate_clients: Smallest evaluation cohort.
        accept_failures: Aggregate a round that had failures (True), or keep the previous
            arrays when any sampled client failed (False).
        evaluate_fn: Optional centralized evaluation on the server.
        train_config: Config sent with every training task, or a function of round_num.
        evaluate_config: Config sent with every evaluation task, or a function of round_num.
    """

    is_sum_only = True  # the weighted mean is all it needs

    def __init__(
        self,
        *,
        fraction_train: float = 1.0,
        min_train_clients: int = 2,
        fraction_evaluate: float = 0.0,
        min_evaluate_clients: int = 2,
        accept_failures: bool = True,
        evaluate_fn: EvaluateFn | None = None,
        train_config: Config | ConfigFn | None = None,
        evaluate_config: Config | ConfigFn | None = None,
    ) -> None:
        _check_fraction("fraction_train", fraction_train, allow_zero=False)
        _check_fraction("fraction_evaluate", fraction_evaluate, allow_zero=True)
        for name, value in (
            ("min_train_clients", min_train_clients),
            ("min_evaluate_clients", min_evaluate_clients),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        self.fraction_train = fraction_train
        self.min_train_clients = min_train_clients
        self.fraction_evaluate = fraction_evaluate
        self.min_evaluate_clients = min_evaluate_clients
        self.accept_failures = accept_failures
        self.evaluate_fn = evaluate_fn
        self.train_config = train_config
        self.evaluate_config = evaluate_config

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(fraction_train={self.fraction_train}, "
            f"min_train_clients={self.min_train_clients}, "
            f"fraction_evaluate={self.fraction_evaluate}, "
            f"accept_failures={self.accept_failures})"
        )

    @staticmethod
    def _config(source: Config | ConfigFn | None, round_num: int) -> Config:
        if source is None:
            return {}
        if callable(source):
            return dict(source(round_num))
        return dict(source)

    def configure_train(
        self, ctx: RoundContext, arrays: Arrays, available: Sequence[int]
    ) -> list[TrainTask]:
        """Sample the training cohort and send each client the global arrays."""
        cohort = sample_cohort(ctx, available, self.fraction_train, self.min_train_clients)
        config = self._config(self.train_config, ctx.round_num)
        return [ctx.train_task(cid, arrays, config) for cid in cohort]

    def _train_accumulator(self, ctx: RoundContext, arrays: Arrays) -> TrainAccumulator:
        """Return this rule's aggregation in streaming form.

        Subclasses whose rule is another running sum override this; `aggregate_train`
        and `begin_train_aggregation` then both follow.
        """
        return _MeanAccumulator(accept_failures=self.accept_failures)

    def begin_train_aggregation(self, ctx: RoundContext, arrays: Arrays) -> TrainAccumulator | None:
        """Return the streaming form of `aggregate_train`.

        None for a subclass that replaced `aggregate_train` with a rule that needs every
        result at once (Krum, the coordinate-wise median, ...).
        """
        if type(self).aggregate_train is not FedAvg.aggregate_train:
            return None
        return self._train_accumulator(ctx, arrays)

    def aggregate_train(
        self,
        ctx: RoundContext,
        arrays: Arrays,
        results: Sequence[tuple[int, TrainResult]],
        failures: Sequence[Failure],
    ) -> tuple[Arrays | None, Metrics]:
        """Return the example-weighted mean of the results' arrays and metrics.

        Results with no examples, or whose arrays hold NaN or Inf, are ignored. This is
        the accumulator of `begin_train_aggregation` fed every result, so batch and
        streaming aggregation give the same floats.
        """
        return accumulate(self._train_accumulator(ctx, arrays), results, failures)

    def configure_evaluate(
        self, ctx: RoundContext, arrays: Arrays, available: Sequence[int]
    ) -> list[EvalTask]:
        """Sample the evaluation cohort (none when fraction_evaluate is 0)."""
        cohort = sample_cohort(ctx, available, self.fraction_evaluate, self.min_evaluate_clients)
        config = self._config(self.evaluate_config, ctx.round_num)
        return [ctx.eval_task(cid, arrays, config) for cid in cohort]

    def aggregate_evaluate(
        self,
        ctx: RoundContext,
        results: Sequence[tuple[int, EvalResult]],
        failures: Sequence[Failure],
    ) -> tuple[float | None, Metrics]:
        """Return the example-weighted mean loss and metrics of the evaluation cohort."""
        usable = [r for _, r in results if r.num_examples > 0]
        if not usable or (failures and not self.accept_failures):
            return None, {}
        total = sum(r.num_examples for r in usable)
        loss = sum(r.num_examples * r.loss for r in usable) / total
        return loss, weighted_metrics([(r.num_examples, r.metrics) for r in usable])

    def evaluate(self, ctx: RoundContext, arrays: Arrays) -> tuple[float, Metrics] | None:
        """Run the user's `evaluate_fn`, if any."""
        if self.evaluate_fn is None:
            return None
        return self.evaluate_fn(ctx.round_num, arrays)


class _MeanAccumulator:
    """FedAvg's aggregation, one result at a time: a running example-weighted mean."""

    def __init__(self, *, accept_failures: bool) -> None:
        self._accept_failures = accept_failures
        self._mean = RunningWeightedMean()
        self._metrics = RunningMetrics()

    def add(self, client_id: int, result: TrainResult) -> None:
        """Add a result unless it has no examples or holds NaN or Inf."""
        if result.num_examples > 0 and result.arrays.is_finite():
            self._mean.add(result.arrays, result.num_examples)
            self._metrics.add(result.num_examples, result.metrics)

    def finish(self, failures: Sequence[Failure]) -> tuple[Arrays | None, Metrics]:
        """Return the mean and metrics, or (None, {}) for no usable result or refused failures."""
        if self._mean.count == 0 or (failures and not self._accept_failures):
            return None, {}
        return self._mean.mean(), self._metrics.result()
