"""`run_rounds`: the only round loop in federa.

Simulation, Ray and gRPC deployment all come here with a different `Transport`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from federa.core.arrays import Arrays
from federa.core.messages import (
    EvalResult,
    EvalTask,
    Failure,
    Task,
    TaskResult,
    TrainResult,
    TrainTask,
)
from federa.core.rng import round_rng
from federa.errors import ConfigError, TransportError
from federa.server.history import History, RoundRecord
from federa.strategy.base import RoundContext, Strategy
from federa.transport.base import Transport

logger = logging.getLogger(__name__)

OnRound = Callable[[RoundRecord], None]
R = TypeVar("R", TrainResult, EvalResult)
T = TypeVar("T", bound=TrainTask | EvalTask)


@runtime_checkable
class RoundAwareTransport(Protocol):
    """A transport that wants to know round boundaries (optional, on top of `Transport`).

    Simulated heterogeneity uses it: which clients are available depends on the round,
    and the simulated wall-clock time of a round is reported back into its timings.
    """

    def begin_round(self, round_num: int) -> None:
        """Prepare for round `round_num` (called before its clients are listed)."""
        ...

    def end_round(self, round_num: int) -> Mapping[str, float]:
        """Finish round `round_num` and return timings to add to its record."""
        ...


def _outcome(task: Task, outcome: TaskResult, kind: type[R]) -> R | Failure:
    if isinstance(outcome, kind | Failure):
        return outcome
    return Failure(
        client_id=task.client_id,
        round_num=task.round_num,
        phase=task.phase,
        message=f"expected a {kind.__name__}, got {type(outcome).__name__}",
    )


def _gather(
    transport: Transport, tasks: Sequence[Task], kind: type[R], on_result: Callable[[int, R], None]
) -> list[Failure]:
    """Run tasks and hand each result to `on_result` in the order of `tasks`.

    The callers sort tasks by client id, so results are aggregated in client-id order.
    Results that arrive early wait in a small reorder buffer until every client before
    them has answered, so aggregation never depends on the order in which clients
    finished; with an executor that yields in task order the buffer stays empty, and no
    more than one result is held here at a time.

    Returns:
        The failures, sorted by client id (clients that never answered included).
    """
    expected = {t.client_id: t for t in tasks}
    if len(expected) != len(tasks):
        raise ConfigError("a strategy sampled the same client twice in one round")
    order = [t.client_id for t in tasks]
    buffer: dict[int, R | Failure] = {}
    failures: list[Failure] = []
    seen: set[int] = set()
    position = 0

    def release(outcome: R | Failure) -> None:
        nonlocal position
        position += 1
        if isinstance(outcome, Failure):
            failures.append(outcome)
        else:
            on_result(order[position - 1], outcome)

    outcomes = transport.run(tasks)
    try:
        for client_id, outcome in outcomes:
            task = expected.get(client_id)
            if task is None or client_id in seen:
                raise TransportError(
                    f"transport returned an unexpected result for client {client_id}"
                )
            seen.add(client_id)
            buffer[client_id] = _outcome(task, outcome, kind)
            while position < len(order) and order[position] in buffer:
                release(buffer.pop(order[position]))
    finally:
        close = getattr(outcomes, "close", None)
        if close is not None:
            close()  # stop a generator (and its workers) left behind by an exception
    while position < len(order):
        task = expected[order[position]]
        missing = Failure(
            client_id=task.client_id,
            round_num=task.round_num,
            phase=task.phase,
            message="no result received",
        )
        release(buffer.pop(task.client_id, missing))
    return failures


def _collect(
    transport: Transport, tasks: Sequence[Task], kind: type[R]
) -> tuple[list[tuple[int, R]], list[Failure]]:
    """Run tasks and return all results and failures, both sorted by client id."""
    results: list[tuple[int, R]] = []
    failures = _gather(transport, _by_client(tasks), kind, lambda cid, r: results.append((cid, r)))
    return results, failures


def _by_client(tasks: Sequence[T]) -> list[T]:
    return sorted(tasks, key=lambda t: t.client_id)


Collect = Callable[[Sequence[TrainTask]], tuple[list[tuple[int, TrainResult]], list[Failure]]]


class SecureAggregation(Protocol):
    """Aggregates a round's training results so the server sees only their weighted sum.

    See `federa.privacy.secagg.SecAggPlus`, the implementation federa ships.
    """

    def check_strategy(self, strategy: Strategy) -> None:
        """Raise ConfigError if `strategy` needs more than the weighted sum."""
        ...

    def aggregate(
        self, tasks: Sequence[TrainTask], collect: Collect, *, seed: int
    ) -> tuple[list[tuple[int, TrainResult]], list[Failure]]:
        """Run the protocol's stages through `collect`; return one aggregated result."""
        ...


def _train(
    strategy: Strategy,
    transport: Transport,
    ctx: RoundContext,
    arrays: Arrays,
    rec: RoundRecord,
    secure_aggregation: SecureAggregation | None = None,
) -> Arrays:
    """Run the training phase and return the arrays for the next round.

    A strategy that offers a streaming accumulator aggregates each result as it arrives
    (in client-id order); the others get every result at once. Under secure
    aggregation the strategy gets one result: the cohort's weighted mean.
    """
    tasks = _by_client(strategy.configure_train(ctx, arrays, transport.available_clients()))
    rec.num_sampled = len(tasks)
    if not tasks:
        return arrays
    accumulator = None if secure_aggregation else strategy.begin_train_aggregation(ctx, arrays)
    if secure_aggregation is not None:
        results, failures = secure_aggregation.aggregate(
            tasks, lambda batch: _collect(transport, batch, TrainResult), seed=ctx.seed
        )
        rec.num_results = len(tasks) - len(failures)  # every client in the sum
        new, metrics = strategy.aggregate_train(ctx, arrays, results, failures)
    elif accumulator is None:
        results, failures = _collect(transport, tasks, TrainResult)
        rec.num_results = len(results)
        new, metrics = strategy.aggregate_train(ctx, arrays, results, failures)
    else:
        counted = _Counted(accumulator.add)
        failures = _gather(transport, tasks, TrainResult, counted)
        rec.num_results = counted.count
        new, metrics = accumulator.finish(failures)
    rec.failures = list(failures)
    rec.train_metrics = {k: float(v) for k, v in metrics.items()}
    if new is None:
        return arrays
    rec.is_accepted = True
    return new


class _Counted:
    """Call `fn` and count the calls (results handed to a streaming accumulator)."""

    def __init__(self, fn: Callable[[int, TrainResult], None]) -> None:
        self.fn = fn
        self.count = 0

    def __call__(self, client_id: int, result: TrainResult) -> None:
        self.fn(client_id, result)
        self.count += 1


def _evaluate(
    strategy: Strategy, transport: Transport, ctx: RoundContext, arrays: Arrays, rec: RoundRecord
) -> None:
    """Run the distributed evaluation phase."""
    tasks = _by_client(strategy.configure_evaluate(ctx, arrays, transport.available_clients()))
    rec.num_eval_sampled = len(tasks)
    if not tasks:
        return
    results, failures = _collect(transport, tasks, EvalResult)
    rec.num_eval_results = len(results)
    rec.failures.extend(failures)
    loss, metrics = strategy.aggregate_evaluate(ctx, results, failures)
    rec.eval_loss = None if loss is None else float(loss)
    rec.eval_metrics = {k: float(v) for k, v in metrics.items()}


def _centralized(strategy: Strategy, ctx: RoundContext, arrays: Arrays, rec: RoundRecord) -> None:
    start = time.perf_counter()
    outcome = strategy.evaluate(ctx, arrays)
    if outcome is not None:
        loss, metrics = outcome
        rec.centralized_loss = float(loss)
        rec.centralized_metrics = {k: float(v) for k, v in metrics.items()}
    rec.timings["centralized_s"] = time.perf_counter() - start


def run_round(
    strategy: Strategy,
    transport: Transport,
    arrays: Arrays,
    round_num: int,
    seed: int,
    secure_aggregation: SecureAggregation | None = None,
) -> tuple[Arrays, RoundRecord]:
    """Run one round (train, distributed evaluation, centralized evaluation)."""
    ctx = RoundContext(round_num=round_num, rng=round_rng(seed, round_num), seed=seed)
    rec = RoundRecord(round_num=round_num)
    hooks = transport if isinstance(transport, RoundAwareTransport) else None
    if hooks is not None:
        hooks.begin_round(round_num)
    t0 = time.perf_counter()
    arrays = _train(strategy, transport, ctx, arrays, rec, secure_aggregation)
    t1 = time.perf_counter()
    _evaluate(strategy, transport, ctx, arrays, rec)
    t2 = time.perf_counter()
    if hooks is not None:
        rec.timings.update({k: float(v) for k, v in hooks.end_round(round_num).items()})
    _centralized(strategy, ctx, arrays, rec)
    rec.timings.update(train_s=t1 - t0, evaluate_s=t2 - t1)
    rec.timings["total_s"] = time.perf_counter() - t0
    logger.info(
        "round %d: sampled %d, received %d, failed %d, accepted %s, %.2fs",
        round_num,
        rec.num_sampled,
        rec.num_results,
        len(rec.failures),
        rec.is_accepted,
        rec.timings["total_s"],
    )
    return arrays, rec


OnCheckpoint = Callable[[int, Arrays, History], None]


def run_rounds(
    strategy: Strategy,
    transport: Transport,
    *,
    num_rounds: int,
    initial: Arrays,
    seed: int = 0,
    on_round: OnRound | None = None,
    resume_from: History | None = None,
    on_checkpoint: OnCheckpoint | None = None,
    secure_aggregation: SecureAggregation | None = None,
) -> History:
    """Drive `strategy` for `num_rounds` rounds over `transport` from `initial` arrays.

    Args:
        strategy: The federated algorithm.
        transport: Where the clients are.
        num_rounds: Total rounds of the run (>= 1), counting resumed ones.
        initial: The starting global arrays (when resuming, the arrays after the last
            completed round).
        seed: Run seed; cohort sampling and every client seed derive from it.
        on_round: Called with each round's record as soon as it is complete (round 0,
            the initial centralized evaluation, included).
        resume_from: History of the rounds already completed; the run continues with the
            next round, and since every round's randomness derives from (seed,
            round_num) it continues exactly as an uninterrupted run would.
        on_checkpoint: Called after round 0 and every round with (round_num, arrays,
            history), for example to write a checkpoint.
        secure_aggregation: Aggregate every round's training results securely (see
            `federa.privacy.secagg.SecAggPlus`); the strategy must only need their
            weighted sum.

    Returns:
        The run's History, with the final arrays in `History.arrays`.
    """
    if num_rounds < 1:
        raise ConfigError(f"num_rounds must be >= 1, got {num_rounds}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if secure_aggregation is not None:
        secure_aggregation.check_strategy(strategy)
    arrays = initial
    if resume_from is not None:
        history = resume_from
        done = history.rounds[-1].round_num if history.rounds else 0
    else:
        history, done = History(), 0
        initial_rec = RoundRecord(round_num=0)
        ctx = RoundContext(round_num=0, rng=round_rng(seed, 0), seed=seed)
        _centralized(strategy, ctx, arrays, initial_rec)
        if initial_rec.centralized_loss is not None:
            history.initial = initial_rec
            if on_round is not None:
                on_round(initial_rec)
        if on_checkpoint is not None:
            on_checkpoint(0, arrays, history)
    for round_num in range(done + 1, num_rounds + 1):
        arrays, rec = run_round(strategy, transport, arrays, round_num, seed, secure_aggregation)
        history.rounds.append(rec)
        if on_round is not None:
            on_round(rec)
        if on_checkpoint is not None:
            on_checkpoint(round_num, arrays, history)
    history.arrays = arrays
    return history
