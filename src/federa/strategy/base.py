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
from typing import Any

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


class Strategy(ABC):
    """A federated algorithm, seen from the server.

    The round loop calls, in order: `configure_train`, `aggregate_train`,
    `configure_evaluate`, `aggregate_evaluate` and `evaluate`. Results arrive as
    `(client_id, result)` pairs sorted by client id, whatever order they finished in.

    NaN and Inf: the client runner and the gRPC server already turn non-finite arrays
    into Failures; as a last line every built-in strategy also ignores a result whose
    arrays are not finite, and aggregates the rest.
    """

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
