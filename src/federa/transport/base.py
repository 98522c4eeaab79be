"""The `Transport` seam between the round loop and wherever clients live."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from federa.core.messages import Task, TaskResult


class Transport(Protocol):
    """Delivers tasks to clients and yields their results.

    In-process for simulation, gRPC for deployment, Ray for a cluster: the round loop
    sees only this.
    """

    def available_clients(self) -> Sequence[int]:
        """Return the ids of the clients that can be sampled now."""
        ...

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, TaskResult]]:
        """Run `tasks` and yield `(client_id, result)` pairs as they finish.

        Every task yields exactly one pair; a client that fails yields a `Failure`.
        """
        ...

    def close(self) -> None:
        """Release workers, connections and other resources."""
        ...
