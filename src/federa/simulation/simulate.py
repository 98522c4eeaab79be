"""`simulate`: many clients on one machine, through the one round loop."""

from __future__ import annotations

from federa.client.runner import ClientFn
from federa.core.arrays import Arrays
from federa.errors import ConfigError
from federa.server.history import History
from federa.server.loop import OnRound, run_rounds
from federa.simulation.executors import ProcessExecutor, SerialExecutor
from federa.strategy.base import Strategy
from federa.transport.inprocess import Executor, InProcessTransport


def make_executor(workers: int | Executor | None) -> Executor:
    """Return the executor for `workers`: 0 or None is serial, N >= 1 is N processes."""
    if workers is None:
        return SerialExecutor()
    if not isinstance(workers, int):
        return workers
    if isinstance(workers, bool):
        raise ConfigError(f"workers must be an int or an executor, got {workers!r}")
    if workers == 0:
        return SerialExecutor()
    if workers < 0:
        raise ConfigError(f"workers must be >= 0 (0 runs clients serially), got {workers}")
    return ProcessExecutor(workers)


def simulate(
    client_fn: ClientFn,
    strategy: Strategy,
    *,
    num_clients: int,
    num_rounds: int,
    initial: Arrays,
    seed: int = 0,
    executor: int | Executor | None = None,
    on_round: OnRound | None = None,
) -> History:
    """Simulate a federation of `num_clients` clients for `num_rounds` rounds.

    Args:
        client_fn: Builds client `cid` (0 <= cid < num_clients). With worker processes it
            must be picklable (a module-level function or a functools.partial).
        strategy: The federated algorithm.
        num_clients: Number of simulated clients.
        num_rounds: Number of rounds.
        initial: Starting global arrays.
        seed: Run seed; the same seed gives the same History on any executor.
        executor: None or 0 for serial execution in this process, N for N worker
            processes, or an executor object.
        on_round: Called with each round's record as it completes.

    Returns:
        The History, with the final arrays in `History.arrays`.
    """
    runner = make_executor(executor)
    transport = InProcessTransport(client_fn, num_clients, runner)
    try:
        return run_rounds(
            strategy,
            transport,
            num_rounds=num_rounds,
            initial=initial,
            seed=seed,
            on_round=on_round,
        )
    finally:
        transport.close()
