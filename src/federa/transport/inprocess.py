"""In-process transport: clients are built by a `client_fn` on this machine."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Protocol

from federa.client.runner import ClientFn
from federa.core.arrays import Arrays
from federa.core.messages import Task, TaskResult, TrainResult, TrainTask
from federa.errors import ConfigError


class Executor(Protocol):
    """Runs client tasks: serially, in worker processes, or on a Ray cluster.

    Executors should yield results in task order and keep only a bounded number of
    tasks in flight: the round loop then aggregates each result as it arrives and a
    round holds O(workers) results, not the cohort's. Any order is still correct (the
    loop reorders), only less frugal.
    """

    def run(self, client_fn: ClientFn, tasks: Sequence[Task]) -> Iterator[tuple[int, TaskResult]]:
        """Run every task and yield `(position in tasks, result)` pairs, best in task order."""
        ...

    def close(self) -> None:
        """Stop workers."""
        ...


class InProcessTransport:
    """Simulated clients 0..num_clients-1, all available every round.

    Args:
        client_fn: Builds client `cid`; it runs wherever the executor runs tasks.
        num_clients: How many clients exist.
        executor: Where tasks run.
    """

    def __init__(self, client_fn: ClientFn, num_clients: int, executor: Executor) -> None:
        if num_clients < 1:
            raise ConfigError(f"num_clients must be >= 1, got {num_clients}")
        self._client_fn = client_fn
        self._clients = tuple(range(num_clients))
        self._executor = executor
        # Each client's state between rounds (Client.state), kept here because a
        # simulated client is rebuilt for every task.
        self._states: dict[int, Arrays] = {}

    def available_clients(self) -> Sequence[int]:
        """Return every client id."""
        return self._clients

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, TaskResult]]:
        """Run the tasks on the executor and pair each result with its client id.

        Results are passed on one at a time as the executor yields them, never gathered.
        """
        unknown = [t.client_id for t in tasks if not 0 <= t.client_id < len(self._clients)]
        if unknown:
            raise ConfigError(
                f"tasks name unknown clients {unknown}; valid ids are 0..{len(self._clients) - 1}"
            )
        tasks = [
            replace(t, state=self._states.get(t.client_id)) if isinstance(t, TrainTask) else t
            for t in tasks
        ]
        for index, result in self._executor.run(self._client_fn, tasks):
            client_id = tasks[index].client_id
            if isinstance(result, TrainResult) and result.state is not None:
                if len(result.state):
                    self._states[client_id] = result.state
                result = replace(result, state=None)
            yield client_id, result

    def close(self) -> None:
        """Stop the executor's workers."""
        self._executor.close()
