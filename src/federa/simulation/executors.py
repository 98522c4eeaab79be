"""Executors for the in-process transport: run client tasks serially or in worker processes."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from federa.client.runner import ClientFn, run_client_task
from federa.core.messages import Failure, Task, TaskResult
from federa.errors import ConfigError, TransportError


class SerialExecutor:
    """Run every task in this process, one after the other."""

    def run(self, client_fn: ClientFn, tasks: Sequence[Task]) -> Iterator[tuple[int, TaskResult]]:
        """Yield `(index, result)` for each task in order."""
        for index, task in enumerate(tasks):
            yield index, run_client_task(client_fn, task)

    def close(self) -> None:
        """Nothing to release."""


# Worker-process globals: set once by the pool initializer, reused by every task.
_worker_client_fn: ClientFn | None = None


def _init_worker(client_fn_bytes: bytes, num_threads: int) -> None:
    global _worker_client_fn
    # Fix the thread count before any numeric library starts its thread pool
    # (unpickling client_fn may import torch).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(num_threads)
    _worker_client_fn = pickle.loads(client_fn_bytes)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(num_threads)


def _run_in_worker(task: Task) -> TaskResult:
    assert _worker_client_fn is not None, "worker was not initialised"
    return run_client_task(_worker_client_fn, task)


class ProcessExecutor:
    """Run tasks in a pool of long-lived worker processes.

    The pool starts on first use and lives until `close`, so each worker builds its
    client function (and whatever it caches, such as one model per worker) once for the
    whole run rather than once per task. Workers use the "spawn" start method, which is
    safe with PyTorch's thread pools.

    Results come back in task order, with at most `max_in_flight` tasks submitted and
    not yet handed back, so the round loop can aggregate them as they arrive without
    ever holding the cohort's results. They do not depend on the number of workers:
    the round loop aggregates in client-id order, and every worker computes with the
    same number of intra-op threads. That number is part of the result, not only of the
    speed: PyTorch's CPU kernels (convolutions in particular) reduce in a different
    order with a different thread count, which changes the last bits of a model. It
    therefore defaults to 1 for every worker count, and a serial run matches a process
    run bit for bit when it uses the same count (`torch.set_num_threads(1)`).

    Args:
        num_workers: Worker processes (>= 1).
        threads_per_worker: Intra-op threads in each worker (default 1).
        max_in_flight: Most tasks submitted but not yet handed back (default twice the
            workers, which keeps every worker busy while the head of the queue finishes).
    """

    def __init__(
        self, num_workers: int, threads_per_worker: int = 1, max_in_flight: int | None = None
    ) -> None:
        if num_workers < 1:
            raise ConfigError(f"workers must be >= 1, got {num_workers}")
        if threads_per_worker < 1:
            raise ConfigError(f"threads_per_worker must be >= 1, got {threads_per_worker}")
        if max_in_flight is not None and max_in_flight < 1:
            raise ConfigError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.num_workers = num_workers
        self.threads_per_worker = threads_per_worker
        self.max_in_flight = max_in_flight if max_in_flight is not None else 2 * num_workers
        self._pool: ProcessPoolExecutor | None = None
        self._client_fn: ClientFn | None = None

    def _ensure_pool(self, client_fn: ClientFn) -> ProcessPoolExecutor:
        if self._pool is not None and self._client_fn is client_fn:
            return self._pool
        self.close()
        try:
            payload = pickle.dumps(client_fn)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise ConfigError(
                "client_fn must be picklable to run in worker processes (define it at module "
                f"level or use functools.partial), or use workers=0 for serial execution: {exc}"
            ) from None
        self._pool = ProcessPoolExecutor(
            max_workers=self.num_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(payload, self.threads_per_worker),
        )
        self._client_fn = client_fn
        return self._pool

    def run(self, client_fn: ClientFn, tasks: Sequence[Task]) -> Iterator[tuple[int, TaskResult]]:
        """Yield `(index, result)` in task order, keeping at most `max_in_flight` submitted."""
        pool = self._ensure_pool(client_fn)
        pending: deque[tuple[int, Future[Any]]] = deque()
        submitted = 0
        try:
            while submitted < len(tasks) or pending:
                while submitted < len(tasks) and len(pending) < self.max_in_flight:
                    pending.append((submitted, pool.submit(_run_in_worker, tasks[submitted])))
                    submitted += 1
                index, future = pending.popleft()
                yield index, self._outcome(future, tasks[index])
        finally:
            for _, future in pending:  # the consumer stopped early: drop what has not started
                future.cancel()

    def _outcome(self, future: Future[Any], task: Task) -> TaskResult:
        try:
            result: TaskResult = future.result()
        except BrokenProcessPool:
            self.close()
            raise TransportError(
                "a worker process died (out of memory or killed); rerun with fewer workers"
            ) from None
        except Exception as exc:  # e.g. a result that cannot be pickled back
            return Failure(
                client_id=task.client_id,
                round_num=task.round_num,
                phase=task.phase,
                message=f"{type(exc).__name__}: {exc}",
            )
        return result

    def close(self) -> None:
        """Shut the worker processes down."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._client_fn = None
