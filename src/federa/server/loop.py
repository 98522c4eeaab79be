"""`run_rounds`: the only round loop in federa.

Simulation, Ray and gRPC deployment all come here with a different `Transport`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from federa.core.arrays import Arrays
from federa.core.messages import EvalResult, Failure, Task, TrainResult
from federa.core.rng import round_rng
from federa.errors import ConfigError, TransportError
from federa.server.history import History, RoundRecord
from federa.strategy.base import RoundContext, Strategy
from federa.transport.base import Transport

logger = logging.getLogger(__name__)

OnRound = Callable[[RoundRecord], None]
R = TypeVar("R", TrainResult, EvalResult)


def _collect(
    transport: Transport, tasks: Sequence[Task], kind: type[R]
) -> tuple[list[tuple[int, R]], list[Failure]]:
    """Run tasks and split the outcome into results and failures, both sorted by client id.

    Sorting makes aggregation independent of the order in which clients finished.
    """
    expected = {t.client_id: t for t in tasks}
    if len(expected) != len(tasks):
        raise ConfigError("a strategy sampled the same client twice in one round")
    results: dict[int, R] = {}
    failures: dict[int, Failure] = {}
    for client_id, outcome in transport.run(tasks):
        task = expected.get(client_id)
        if task is None or client_id in results or client_id in failures:
            raise TransportError(f"transport returned an unexpected result for client {client_id}")
        if isinstance(outcome, kind):
            results[client_id] = outcome
        elif isinstance(outcome, Failure):
            failures[client_id] = outcome
        else:
            failures[client_id] = Failure(
                client_id=client_id,
                round_num=task.round_num,
                phase=task.phase,
                message=f"expected a {kind.__name__}, got {type(outcome).__name__}",
            )
    missing = sorted(set(expected) - set(results) - set(failures))
    for client_id in missing:
        task = expected[client_id]
        failures[client_id] = Failure(
            client_id=client_id,
            round_num=task.round_num,
            phase=task.phase,
            message="no result received",
        )
    return sorted(results.items()), [failures[k] for k in sorted(failures)]


def _centralized(strategy: Strategy, ctx: RoundContext, arrays: Arrays, rec: RoundRecord) -> None:
    start = time.perf_counter()
    outcome = strategy.evaluate(ctx, arrays)
    if outcome is not None:
        loss, metrics = outcome
        rec.centralized_loss = float(loss)
        rec.centralized_metrics = {k: float(v) for k, v in metrics.items()}
    rec.timings["centralized_s"] = time.perf_counter() - start


def run_round(
    strategy: Strategy, transport: Transport, arrays: Arrays, round_num: int, seed: int
) -> tuple[Arrays, RoundRecord]:
    """Run one round (train, distributed evaluation, centralized evaluation)."""
    ctx = RoundContext(round_num=round_num, rng=round_rng(seed, round_num), seed=seed)
    rec = RoundRecord(round_num=round_num)
    t0 = time.perf_counter()

    tasks = strategy.configure_train(ctx, arrays, transport.available_clients())
    rec.num_sampled = len(tasks)
    if tasks:
        results, failures = _collect(transport, tasks, TrainResult)
        rec.num_results, rec.failures = len(results), list(failures)
        new, metrics = strategy.aggregate_train(ctx, arrays, results, failures)
        rec.train_metrics = {k: float(v) for k, v in metrics.items()}
        if new is not None:
            arrays, rec.is_accepted = new, True
    t1 = time.perf_counter()

    eval_tasks = strategy.configure_evaluate(ctx, arrays, transport.available_clients())
    rec.num_eval_sampled = len(eval_tasks)
    if eval_tasks:
        eval_results, eval_failures = _collect(transport, eval_tasks, EvalResult)
        rec.num_eval_results = len(eval_results)
        rec.failures.extend(eval_failures)
        loss, eval_metrics = strategy.aggregate_evaluate(ctx, eval_results, eval_failures)
        rec.eval_loss = None if loss is None else float(loss)
        rec.eval_metrics = {k: float(v) for k, v in eval_metrics.items()}
    t2 = time.perf_counter()

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

    Returns:
        The run's History, with the final arrays in `History.arrays`.
    """
    if num_rounds < 1:
        raise ConfigError(f"num_rounds must be >= 1, got {num_rounds}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
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
        arrays, rec = run_round(strategy, transport, arrays, round_num, seed)
        history.rounds.append(rec)
        if on_round is not None:
            on_round(rec)
        if on_checkpoint is not None:
            on_checkpoint(round_num, arrays, history)
    history.arrays = arrays
    return history
