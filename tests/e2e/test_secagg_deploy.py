"""End to end: `federa server --secagg` with local DP and five `federa client` processes.

The server learns only the sum of each round's clipped, noised updates (SecAgg+ on top
of client-side DP); one client is killed while a round is under way, and the run still
completes and learns the digits. Processes are started and cleaned up by the `spawn`
fixture of test_deploy.py.
"""

from __future__ import annotations

import re
import signal
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from federa import History
from tests.e2e.test_deploy import (
    LISTENING,
    RUN_TIMEOUT,
    Proc,
    Spawn,
    final_accuracy,
    rounds_printed,
    spawn,
)

pytest.importorskip("grpc")
pytest.importorskip("torch")
pytest.importorskip("cryptography")

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

__all__ = ["spawn"]  # the fixture, used by name below

NUM_CLIENTS = 5
ROUNDS = 4
# A small MLP: it learns the 8x8 digits in a few rounds (the CNN needs about twenty).
DATA = ["--num-clients", NUM_CLIENTS, "--partition", "iid", "--seed", 1, "--model", "mnist_2nn"]
# Each client clips its update to norm 2 and adds N(0, (0.02 * 2)^2) per coordinate.
DP = ["--dp", "local", "--noise-multiplier", 0.02, "--clip-norm", 2]


def start_server(spawn: Spawn, out: Path) -> tuple[Proc, int]:
    server = spawn(
        "server",
        "server",
        "--address",
        "127.0.0.1:0",
        "--min-clients",
        NUM_CLIENTS,
        "--wait-timeout",
        RUN_TIMEOUT,
        "--round-timeout",
        120,
        "--out",
        out,
        "--rounds",
        ROUNDS,
        "--fraction-train",
        1.0,
        "--secagg",
        *DATA,
        *DP,
    )
    return server, int(server.wait_for(LISTENING)[1])


def start_client(spawn: Spawn, port: int, partition_id: int) -> Proc:
    return spawn(
        f"client-{partition_id}",
        "client",
        "--address",
        f"127.0.0.1:{port}",
        "--partition-id",
        partition_id,
        "--threads",
        1,
        "--reconnect-timeout",
        30,
        *DATA,
        *DP,
    )


def test_secagg_with_local_dp_survives_a_killed_client_and_learns(
    spawn: Spawn, tmp_path: Path
) -> None:
    server, port = start_server(spawn, tmp_path / "srv")
    clients = [start_client(spawn, port, i) for i in range(NUM_CLIENTS)]
    # Round 2 starts as round 1 ends: every client is training for it then.
    server.wait_for(re.compile(r"^round +1 ", re.MULTILINE), RUN_TIMEOUT)
    victim = 3
    clients[victim].kill()
    assert clients[victim].popen.returncode == -signal.SIGKILL

    served = server.expect_success(timeout=3 * RUN_TIMEOUT)
    for i, client in enumerate(clients):
        if i != victim:
            assert "done (the run is complete)" in client.expect_success()
    config = tomllib.loads((tmp_path / "srv" / "config.toml").read_text())
    assert config["secagg"] is True and config["dp"] == "local"
    assert rounds_printed(served) == list(range(ROUNDS + 1))
    history = History.from_json(tmp_path / "srv" / "history.json")
    assert all(r.is_accepted for r in history.rounds), history.rounds
    first, second, *later = history.rounds
    assert first.num_results == NUM_CLIENTS and not first.failures
    # The killed client dropped out of round 2's protocol; the others' sum still counted.
    assert [f.client_id for f in second.failures] == [victim]
    assert "secure aggregation" in second.failures[0].message
    assert second.num_results == NUM_CLIENTS - 1
    for rec in later:  # then it is no longer sampled
        assert rec.num_sampled == rec.num_results == NUM_CLIENTS - 1
    assert all(r.train_metrics["epsilon"] > 0 for r in history.rounds)
    assert float(final_accuracy(served)) >= 0.8
