"""An executor that trains a round's cohort of `TorchClient`s together, in chunks.

Clients that train with federa's standard PyTorch loop (`TorchClient.fit` as shipped,
no SCAFFOLD control variates) are grouped by model, hyper-parameters and example shape,
and each group is trained in chunks by `federa.torch.vectorized.train_cohort`: one
batched step moves every client of a chunk. The results are the `TrainResult`s the
per-client path produces (same arrays up to floating-point rounding, same
`num_examples`, metrics and client state), passed through the same checks. Everything
else (other clients, models the trainer cannot vectorize, evaluation tasks) runs one
task at a time in this process, as `SerialExecutor` runs it; each reason for falling
back is logged once per executor.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from federa.client.base import Client
from federa.client.runner import ClientFn, run_client_task, run_task
from federa.core.arrays import Arrays
from federa.core.messages import (
    Config,
    EvalResult,
    Failure,
    Task,
    TaskResult,
    TrainResult,
    TrainTask,
)
from federa.errors import ConfigError
from federa.strategy.scaffold import split_control
from federa.torch.arrays import arrays_to_module
from federa.torch.client import TorchClient, shared_model
from federa.torch.train import TrainConfig, evaluate
from federa.torch.vectorized import train_cohort, vectorize_reason

logger = logging.getLogger(__name__)

_INITIAL_LOSS = "report_initial_loss"  # TorchClient.fit's config key (q-FedAvg sets it)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Job:
    """One train task bound to its client and resolved hyper-parameters."""

    index: int
    task: TrainTask
    client: TorchClient
    model: nn.Module
    cfg: TrainConfig


class _Trained(Client):
    """Hands a precomputed result to `run_task`, so it gets the per-client checks."""

    def __init__(self, result: TrainResult) -> None:
        self._result = result

    def fit(self, arrays: Arrays, config: Config) -> TrainResult:
        """Return the result computed for this client by the vectorized trainer."""
        return self._result

    def evaluate(self, arrays: Arrays, config: Config) -> EvalResult:
        """Never called: evaluation tasks run on the real client."""
        raise NotImplementedError("a vectorized result only answers fit()")


class VectorizedExecutor:
    """Train cohorts of standard `TorchClient`s in batched chunks, in this process.

    Args:
        chunk_size: Clients trained together (>= 1). Larger chunks amortise more
            per-step overhead; memory grows with it (every client's parameters,
            optimizer state and activations are held at once).

    The stacked arrays of a chunk (1 MiB and up) are reused by later chunks once their
    results are gone, instead of new memory for each; up to 256 MiB of such free
    buffers stay with the process (`federa.torch.vectorized.release_buffers` drops them).
    """

    def __init__(self, chunk_size: int = 32) -> None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"chunk_size must be an int >= 1, got {chunk_size!r}")
        self.chunk_size = chunk_size
        self._warned: set[str] = set()
        self._specs: weakref.WeakKeyDictionary[nn.Module, list[tuple[str, str, tuple[int, ...]]]]
        self._specs = weakref.WeakKeyDictionary()

    def run(self, client_fn: ClientFn, tasks: Sequence[Task]) -> Iterator[tuple[int, TaskResult]]:
        """Yield `(index, result)` for every task, in task order.

        Chunks hold consecutive (in task order) train tasks of one group, split into
        chunks of nearly equal size, and results are handed back as soon as every
        earlier task's result is, so at most about a chunk of results is held at a time.
        """
        groups: dict[tuple[Any, ...], list[_Job]] = {}
        units: list[tuple[int, Task | Failure | _Job, Client | None]] = []
        for index, task in enumerate(tasks):
            if not isinstance(task, TrainTask):
                units.append((index, task, None))
                continue
            try:
                client = client_fn(task.client_id)
            except Exception as exc:  # building the client is part of the client's work
                units.append((index, _client_fn_failure(task, exc), None))
                continue
            job = self._job(index, task, client)
            if job is None:
                units.append((index, task, client))
                continue
            groups.setdefault(_group_key(job), []).append(job)
            units.append((index, job, None))
        chunks = {
            chunk[0].index: chunk
            for jobs in groups.values()
            for chunk in _balanced_chunks(jobs, self.chunk_size)
        }
        yield from self._results(client_fn, units, chunks)

    def _results(
        self,
        client_fn: ClientFn,
        units: list[tuple[int, Task | Failure | _Job, Client | None]],
        chunks: dict[int, list[_Job]],
    ) -> Iterator[tuple[int, TaskResult]]:
        """Run the units in order (a chunk where its first job stands), yield in task order."""
        done: dict[int, TaskResult] = {}
        next_index = 0
        for index, unit, owner in units:
            if isinstance(unit, _Job):
                if index in chunks:
                    done.update(self._train_chunk(chunks[index]))
            elif isinstance(unit, Failure):
                done[index] = unit
            elif owner is None:
                done[index] = run_client_task(client_fn, unit)
            else:
                done[index] = run_task(owner, unit)
            while next_index in done:
                yield next_index, done.pop(next_index)
                next_index += 1

    def _job(self, index: int, task: TrainTask, client: Client) -> _Job | None:
        """Return the task as a vectorizable job, or None (saying why, once)."""
        if not isinstance(client, TorchClient) or type(client).fit is not TorchClient.fit:
            self._fall_back(f"{type(client).__name__} does not use TorchClient's standard fit")
            return None
        if client.dp_sgd is not None:
            self._fall_back("DP-SGD clips per example and is trained per client")
            return None
        if split_control(task.arrays)[1]:
            self._fall_back("SCAFFOLD's corrected steps are trained per client")
            return None
        try:
            cfg = client.train_config.updated(task.config)
        except (ConfigError, TypeError):
            return None  # the per-client path reports the bad config as the client's failure
        if cfg.augment:
            self._fall_back("augmented minibatches are trained per client")
            return None
        # The trainer only reads the architecture, so every client of a model_fn shares
        # this process's model, whether or not the client itself shares it.
        model = shared_model(client.model_fn)
        reason = vectorize_reason(model)
        if reason is not None:
            self._fall_back(reason)
            return None
        if task.arrays.spec() != self._spec(model):
            return None  # the per-client path reports the mismatch as the client's failure
        return _Job(index=index, task=task, client=client, model=model, cfg=cfg)

    def _spec(self, model: nn.Module) -> list[tuple[str, str, tuple[int, ...]]]:
        """Return the spec of the arrays `model` takes (what `Arrays.spec` would give)."""
        spec = self._specs.get(model)
        if spec is None:
            spec = [
                (name, torch.empty((), dtype=t.dtype).numpy().dtype.str, tuple(t.shape))
                for name, t in model.state_dict().items()
            ]
            self._specs[model] = spec
        return spec

    def _train_chunk(self, jobs: list[_Job]) -> Iterator[tuple[int, TaskResult]]:
        first = jobs[0]
        try:
            trained = train_cohort(
                first.model,
                [job.task.arrays for job in jobs],
                [(job.client.x, job.client.y) for job in jobs],
                first.cfg,
                [job.task.seed for job in jobs],
                [job.cfg.epochs for job in jobs],
            )
        except Exception as exc:  # any model the trainer cannot run trains per client
            self._fall_back(f"vectorized training failed ({type(exc).__name__}: {exc})")
            for job in jobs:
                yield job.index, run_task(job.client, job.task)
            return
        for job, (arrays, metrics) in zip(jobs, trained, strict=True):
            if job.task.config.get(_INITIAL_LOSS):
                metrics = {"initial_loss": _initial_loss(job), **metrics}
            result = TrainResult(arrays=arrays, num_examples=len(job.client.x), metrics=metrics)
            yield job.index, run_task(_Trained(result), job.task)

    def _fall_back(self, reason: str) -> None:
        if reason not in self._warned:
            self._warned.add(reason)
            logger.warning("training clients one at a time: %s", reason)

    def close(self) -> None:
        """Nothing to release."""


def _balanced_chunks(jobs: list[_Job], chunk_size: int) -> list[list[_Job]]:
    """Split a group into the fewest chunks of at most `chunk_size`, sizes within one.

    100 clients in chunks of at most 32 train as 4 x 25, not 32 + 32 + 32 + 4: a small
    last chunk pays a full chunk's per-step overhead for a few clients.
    """
    count = -(-len(jobs) // chunk_size)
    size, extra = divmod(len(jobs), count)
    out, start = [], 0
    for i in range(count):
        end = start + size + (i < extra)
        out.append(jobs[start:end])
        start = end
    return out


def _group_key(job: _Job) -> tuple[Any, ...]:
    """Return what clients trained together must share (not their number of epochs)."""
    client = job.client
    return (
        id(job.model),
        replace(job.cfg, epochs=1),
        tuple(job.task.arrays.spec()),
        tuple(client.x.shape[1:]),
        client.x.dtype,
        client.y.dtype,
    )


def _initial_loss(job: _Job) -> float:
    """Return the loss of the starting arrays on the training data, as TorchClient.fit does."""
    model = job.model
    arrays_to_module(model, job.task.arrays)
    loss, _ = evaluate(model, job.client.x, job.client.y)
    return loss


def _client_fn_failure(task: Task, exc: Exception) -> Failure:
    return Failure(
        client_id=task.client_id,
        round_num=task.round_num,
        phase=task.phase,
        message=f"client_fn({task.client_id}) raised {type(exc).__name__}: {exc}",
    )
