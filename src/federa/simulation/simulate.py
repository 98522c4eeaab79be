"""`simulate`: many clients on one machine, through the one round loop."""

from __future__ import annotations

from federa.client.runner import ClientFn
from federa.core.arrays import Arrays
from federa.errors import ConfigError
from federa.server.history import History
from federa.server.loop import OnRound, SecureAggregation, run_rounds
from federa.simulation.executors import ProcessExecutor, SerialExecutor
from federa.simulation.heterogeneity import Heterogeneity, HeterogeneousTransport
from federa.strategy.base import Strategy
from federa.transport.base import Transport
from federa.transport.inprocess import Executor, InProcessTransport


def make_executor(workers: int | str | Executor | None) -> Executor:
    """Return the executor for `workers`: 0 or None is serial, N >= 1 is N processes.

    "vectorized" trains each round's cohort of standard `TorchClient`s together in this
    process (`federa.simulation.vectorized.VectorizedExecutor`; needs PyTorch).
    """
    if workers is None:
        return SerialExecutor()
    if isinstance(workers, str):
        if workers != "vectorized":
            raise ConfigError(
                f"executor must be a number of worker processes or 'vectorized', got {workers!r}"
            )
        from federa.simulation.vectorized import VectorizedExecutor  # imports torch

        return VectorizedExecutor()
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
    executor: int | str | Executor | None = None,
    on_round: OnRound | None = None,
    heterogeneity: Heterogeneity | None = None,
    secure_aggregation: SecureAggregation | None = None,
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
            processes, "vectorized" to train each cohort of standard `TorchClient`s in
            batched chunks in this process (the same History up to floating-point
            rounding), or an executor object.
        on_round: Called with each round's record as it completes.
        heterogeneity: Simulate devices of different speed and availability, with an
            optional round deadline that turns stragglers into failures (see
            `federa.simulation.heterogeneity`); None simulates identical, always-online
            clients.
        secure_aggregation: Aggregate each round's training results securely, for
            example with `federa.privacy.secagg.SecAggPlus`; every client is then wrapped
            in `federa.client.secagg.SecAggPlusClient`, as a deployed one would be.

    Returns:
        The History, with the final arrays in `History.arrays`.
    """
    if secure_aggregation is not None:
        from federa.client.secagg import with_secagg  # needs the cryptography package

        secure_aggregation.check_strategy(strategy)
        client_fn = with_secagg(client_fn)
    runner = make_executor(executor)
    transport: Transport = InProcessTransport(client_fn, num_clients, runner)
    if heterogeneity is not None:
        profiles = heterogeneity.client_profiles(num_clients, seed)
        transport = HeterogeneousTransport(transport, profiles, heterogeneity, seed=seed)
    try:
        return run_rounds(
            strategy,
            transport,
            num_rounds=num_rounds,
            initial=initial,
            seed=seed,
            on_round=on_round,
            secure_aggregation=secure_aggregation,
        )
    finally:
        transport.close()
