"""The one place a task is dispatched to a client, for every transport."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import replace

from federa.client.base import Client
from federa.core.messages import (
    PROTOCOL_KEY,
    EvalResult,
    Failure,
    Task,
    TaskResult,
    TrainResult,
    TrainTask,
    validate_metrics,
)

logger = logging.getLogger(__name__)

ClientFn = Callable[[int], Client]
"""Builds the client with a given id (in simulation, the data partition of that id)."""


def _task_config(task: Task) -> dict[str, bool | int | float | str]:
    config = dict(task.config)
    config["round_num"] = task.round_num
    config["seed"] = task.seed
    return config


def _check_train(task: TrainTask, result: object) -> TrainResult:
    if not isinstance(result, TrainResult):
        raise TypeError(f"fit() must return a TrainResult, got {type(result).__name__}")
    if isinstance(result.num_examples, bool) or not isinstance(result.num_examples, int):
        raise TypeError(f"num_examples must be an int, got {result.num_examples!r}")
    if result.num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {result.num_examples}")
    # A protocol step (secure aggregation) answers with the protocol's own arrays.
    if PROTOCOL_KEY not in task.config and not result.arrays.same_spec(task.arrays):
        raise ValueError(
            f"fit() returned arrays {result.arrays.spec()} but was sent {task.arrays.spec()}"
        )
    if not result.arrays.is_finite():
        raise ValueError("fit() returned arrays containing NaN or Inf")
    return TrainResult(
        arrays=result.arrays,
        num_examples=result.num_examples,
        metrics=validate_metrics(result.metrics),
    )


def _check_eval(result: object) -> EvalResult:
    if not isinstance(result, EvalResult):
        raise TypeError(f"evaluate() must return an EvalResult, got {type(result).__name__}")
    if isinstance(result.num_examples, bool) or not isinstance(result.num_examples, int):
        raise TypeError(f"num_examples must be an int, got {result.num_examples!r}")
    if result.num_examples < 0:
        raise ValueError(f"num_examples must be >= 0, got {result.num_examples}")
    return EvalResult(
        loss=float(result.loss),
        num_examples=result.num_examples,
        metrics=validate_metrics(result.metrics),
    )


def run_task(client: Client, task: Task) -> TaskResult:
    """Run `task` on `client` and return its checked result, or a `Failure`.

    Any exception the client raises, and any result that breaks the contract (wrong
    type, arrays of another shape or dtype than those sent, NaN/Inf), becomes a
    `Failure` carrying the message; it never propagates into the round loop.
    """
    config = _task_config(task)
    try:
        if isinstance(task, TrainTask):
            if task.state is not None:
                client.state = task.state
            result = _check_train(task, client.fit(task.arrays, config))
            return replace(result, state=client.state)
        return _check_eval(client.evaluate(task.arrays, config))
    except Exception as exc:  # a client's bug must not stop the federation
        logger.debug("client %d failed: %s", task.client_id, traceback.format_exc())
        return Failure(
            client_id=task.client_id,
            round_num=task.round_num,
            phase=task.phase,
            message=f"{type(exc).__name__}: {exc}",
        )


def run_client_task(client_fn: ClientFn, task: Task) -> TaskResult:
    """Build the client for `task.client_id` with `client_fn` and run `task` on it.

    A `client_fn` that raises is the client failing, and becomes a `Failure` too.
    """
    try:
        client = client_fn(task.client_id)
    except Exception as exc:  # building the client is part of the client's work
        return Failure(
            client_id=task.client_id,
            round_num=task.round_num,
            phase=task.phase,
            message=f"client_fn({task.client_id}) raised {type(exc).__name__}: {exc}",
        )
    return run_task(client, task)
