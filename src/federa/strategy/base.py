"""The `Strategy` contract: how a round is configured and how results are combined.

Strategies are pure (ARCHITECTURE.md rule 2): they never sleep, log to the console,
touch the network or mutate their inputs, and sample only with the generator in the
`RoundContext` they are handed. Server-side state lives in attributes exposed through
`state_dict()` / `load_state_dict()` so checkpoints capture it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

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
from federa.core.rng import derive_seed


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundContext:
    """What a strategy knows about the round it is asked to act on.

    Attributes:
        round_num: 1-based round number (0 for the evaluation of the initial model).
        rng: The only source of randomness a strategy may use this round.
        seed: The run seed; client task seeds derive from it.
    """

    round_num: int
    rng: np.random.Generator
    seed: int = 0

    def train_task(self, client_id: int, arrays: Arrays, config: Config) -> TrainTask:
        """Build a training task whose seed depends only on (seed, round_num, client_id)."""
        return TrainTask(
            round_num=self.round_num,
            client_id=client_id,
            arrays=arrays,
            config=config,
            seed=derive_seed(self.seed, self.round_num, client_id, "train"),
        )

    def eval_task(self, client_id: int, arrays: Arrays, config: Config) -> EvalTask:
        """Build an evaluation task whose seed depends only on (seed, round_num, client_id)."""
        return EvalTask(
            round_num=self.round_num,
            client_id=client_id,
            arrays=arrays,
            config=config,
            seed=derive_seed(self.seed, self.round_num, client_id, "evaluate"),
        )


class TrainAccumulator(Protocol):
    """A streaming form of a strategy's `aggregate_train`, fed one result at a time.

    The round loop calls `add` once per training result, in increasing client-id order,
    then `finish` once. Fed the same results in that order, `finish` returns exactly the
    floats `aggregate_train` returns, while holding O(1) model copies instead of the
    whole cohort's.
    """

    def add(self, client_id: int, result: TrainResult) -> None:
        """Fold one client's result into the running aggregate."""
        ...

    def finish(self, failures: Sequence[Failure]) -> tuple[Arrays | None, Metrics]:
        """Return what `aggregate_train` would: the new arrays (or None) and metrics."""
        ...


def accumulate(
    accumulator: TrainAccumulator,
    results: Sequence[tuple[int, TrainResult]],
    failures: Sequence[Failure],
) -> tuple[Arrays | None, Metrics]:
    """Feed `results` (sorted by client id) to `accumulator` and finish it."""
    for client_id, result in results:
        accumulator.add(client_id, result)
    return accumulator.finish(failures)


class Strategy(ABC):
    """A federated algorithm, seen from the server.

    The round loop calls, in order: `configure_train`, `begin_train_aggregation` and
    then either the accumulator it returns or `aggregate_train`, `configure_evaluate`,
    `aggregate_evaluate` and `evaluate`. Results arrive as `(client_id, result)` pairs
    sorted by client id, whatever order they finished in.

    NaN and Inf: the client runner and the gRPC server already turn non-finite arrays
    into Failures; as a last line every built-in strategy also ignores a result whose
    arrays are not finite, and aggregates the rest.
    """

    is_sum_only: bool = False
    """Whether `aggregate_train` needs only the results' example-weighted mean (arrays
    and metrics) and their total `num_examples`: then one result holding that mean gives
    the same aggregate, and secure aggregation (`federa.privacy.secagg`) can stand in for
    the individual results."""

    @abstractmethod
    def configure_train(
        self, ctx: RoundContext, arrays: Arrays, available: Sequence[int]
    ) -> list[TrainTask]:
        """Choose the training cohort among `available` clients and what to send each."""

    @abstractmethod
    def aggregate_train(
        self,
        ctx: RoundContext,
        arrays: Arrays,
        results: Sequence[tuple[int, TrainResult]],
        failures: Sequence[Failure],
    ) -> tuple[Arrays | None, Metrics]:
        """Combine the cohort's results into the next global arrays.

        Returns:
            The new arrays, or None to keep `arrays` (the round is rejected), and
            aggregated training metrics.
        """

    def begin_train_aggregation(self, ctx: RoundContext, arrays: Arrays) -> TrainAccumulator | None:
        """Return an accumulator that aggregates this round's results as they arrive.

        Rules whose aggregation is a running weighted sum (FedAvg and its kin) return one,
        so a round never holds the whole cohort's arrays; the accumulator must give the
        same floats as `aggregate_train`. Rules that need every result at once (Krum, the
        coordinate-wise median, ...) return None, the default, and the round loop calls
        `aggregate_train` with all results.
        """
        return None

    def configure_evaluate(
        self, ctx: RoundContext, arrays: Arrays, available: Sequence[int]
    ) -> list[EvalTask]:
        """Choose the clients that evaluate `arrays` on their local data (none by default)."""
        return []

    def aggregate_evaluate(
        self,
        ctx: RoundContext,
        results: Sequence[tuple[int, EvalResult]],
        failures: Sequence[Failure],
    ) -> tuple[float | None, Metrics]:
        """Combine the clients' evaluation results into one loss and metrics."""
        return None, {}

    def evaluate(self, ctx: RoundContext, arrays: Arrays) -> tuple[float, Metrics] | None:
        """Evaluate `arrays` centrally on the server (none by default)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Return the server-side state a checkpoint must hold (empty for stateless rules)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state returned by `state_dict`."""
        if state:
            raise ValueError(f"{type(self).__name__} is stateless but got state {sorted(state)}")
