"""`serve`: run the round loop over gRPC for clients that connect from anywhere."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from federa.core.arrays import Arrays
from federa.errors import ConfigError
from federa.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from federa.server.history import History
from federa.server.loop import OnRound, SecureAggregation, run_rounds
from federa.strategy.base import Strategy
from federa.transport.grpc.server import GrpcServer, GrpcTransport

logger = logging.getLogger(__name__)


def serve(
    strategy: Strategy,
    *,
    address: str,
    num_rounds: int,
    initial: Arrays,
    seed: int = 0,
    min_clients: int = 2,
    round_timeout: float | None = None,
    wait_timeout: float | None = None,
    credentials: grpc.ServerCredentials | None = None,
    tokens: Mapping[int, str] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    run_config: Mapping[str, Any] | None = None,
    on_round: OnRound | None = None,
    on_ready: Callable[[int], None] | None = None,
    secure_aggregation: SecureAggregation | None = None,
) -> History:
    """Serve a federated run to clients connecting over gRPC.

    Waits until `min_clients` clients are connected, then runs `num_rounds` rounds of
    `strategy` through the same round loop as a simulation. Clients that connect later
    join later cohorts; clients that disconnect are dropped from sampling.

    Args:
        strategy: The federated algorithm.
        address: "host:port" to listen on (port 0 picks a free one; see on_ready).
        num_rounds: Rounds in the run.
        initial: Starting global arrays.
        seed: Run seed; with the same clients the History equals a simulation's.
        min_clients: Clients to wait for before the first round.
        round_timeout: Seconds a round waits for results before failing stragglers.
        wait_timeout: Seconds to wait for `min_clients` (None waits forever).
        credentials: TLS server credentials, or None for plaintext.
        tokens: Per-client tokens (client id -> token); clients without one are refused.
        checkpoint_dir: Write a checkpoint here after every round.
        resume: Continue from the last checkpoint in `checkpoint_dir`.
        run_config: What describes this run (for example the resolved CLI config); a
            checkpoint of a run with another description is refused on resume.
        on_round: Called with each round's record.
        on_ready: Called with the bound port once the server listens.
        secure_aggregation: Aggregate each round's training results securely, for
            example with `federa.privacy.secagg.SecAggPlus` (the clients must wrap
            themselves in `federa.client.secagg.SecAggPlusClient`; `federa client` does).

    Returns:
        The run's History with the final arrays.
    """
    if min_clients < 1:
        raise ConfigError(f"--min-clients must be >= 1, got {min_clients}")
    if secure_aggregation is not None:
        secure_aggregation.check_strategy(strategy)  # before anyone waits for the run
    config = dict(run_config or {})
    history: History | None = None
    arrays = initial
    run_id: str | None = None
    if resume:
        if checkpoint_dir is None:
            raise ConfigError("--resume needs --checkpoint-dir")
        found = load_checkpoint(checkpoint_dir)
        if found is None:
            logger.info("no checkpoint in %s; starting a new run", checkpoint_dir)
        else:
            if found.seed != seed or found.config != config:
                raise ConfigError(
                    f"the checkpoint in {checkpoint_dir} belongs to a run with other settings; "
                    "resume with the same settings or use another --checkpoint-dir"
                )
            strategy.load_state_dict(found.strategy_state)
            arrays, history, run_id = found.arrays, found.history, found.run_id
            logger.info("resuming after round %d", found.round_num)

    transport = GrpcTransport(round_timeout=round_timeout)
    if run_id is not None:
        transport.run_id = run_id  # a resumed run keeps its identity

    def checkpoint(round_num: int, current: Arrays, hist: History) -> None:
        if checkpoint_dir is None:
            return
        state = Checkpoint(
            round_num=round_num,
            arrays=current,
            strategy_state=strategy.state_dict(),
            history=hist,
            seed=seed,
            run_id=transport.run_id,
            config=config,
        )
        save_checkpoint(checkpoint_dir, state)

    server = GrpcServer(address, transport, credentials=credentials, tokens=tokens)
    try:
        if on_ready is not None:
            on_ready(server.port)
        logger.info("listening on port %d; waiting for %d clients", server.port, min_clients)
        transport.wait_for_clients(min_clients, wait_timeout)
        return run_rounds(
            strategy,
            transport,
            num_rounds=num_rounds,
            initial=arrays,
            seed=seed,
            on_round=on_round,
            resume_from=history,
            on_checkpoint=checkpoint,
            secure_aggregation=secure_aggregation,
        )
    finally:
        server.stop()
