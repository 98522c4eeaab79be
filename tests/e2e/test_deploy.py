"""End to end: `federa server` and `federa client` processes talking gRPC on localhost.

Every command runs as a real child process (`python -m federa ...`) whose stdout and
stderr go to a log file in tmp_path. Waits poll those logs for the lines the commands
print ("listening on ...", "round   N ...") and every wait has a deadline, so a hang
fails the test instead of blocking it; the `spawn` fixture kills every process it
started when the test ends, passed or failed, and prints their logs (shown on failure).

The processes run PyTorch with one intra-op thread: a CPU convolution's last bits
depend on the thread count, so the simulation and the deployment must use the same
one to give equal histories, and four processes share this machine's cores better so.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, NoReturn

import numpy as np
import pytest

import federa
from federa import History, RoundContext
from federa.core.rng import round_rng
from federa.strategy.fedavg import sample_cohort

pytest.importorskip("grpc")  # the deployment extras
pytest.importorskip("torch")

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NUM_CLIENTS = 3
FRACTION_TRAIN = 0.5
SEED = 0
STARTUP_TIMEOUT = 60.0  # a command imports torch and builds the data set before it listens
RUN_TIMEOUT = 180.0  # a whole run; each takes 10-30 s on a 2-core machine
LISTENING = re.compile(r"federa server listening on 127\.0\.0\.1:(\d+)")
ROUND_LINE = re.compile(r"^round +(\d+) ", re.MULTILINE)
FINAL_ACCURACY = re.compile(r"final test accuracy (\S+)")

# The children import the federa this test imported, print plain unbuffered text, and use
# one thread each.
_SRC = str(Path(federa.__file__).resolve().parents[1])
ENV = {
    **{k: v for k, v in os.environ.items() if k != "FORCE_COLOR"},
    "PYTHONPATH": os.pathsep.join([_SRC, *filter(None, [os.environ.get("PYTHONPATH")])]),
    "PYTHONUNBUFFERED": "1",
    "NO_COLOR": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


class Proc:
    """One `federa` command in a child process; its stdout and stderr go to `log`."""

    def __init__(self, name: str, args: Sequence[str], log: Path) -> None:
        self.name = name
        self.log = log
        self._file: IO[bytes] = log.open("wb")
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "federa", *args],
                stdin=subprocess.DEVNULL,
                stdout=self._file,
                stderr=subprocess.STDOUT,
                env=ENV,
                cwd=log.parent,
            )
        except BaseException:
            self._file.close()
            raise

    def output(self) -> str:
        """Return everything the process has printed so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")

    def fail(self, problem: str) -> NoReturn:
        """Fail the test with `problem`, naming this process and showing its output."""
        pytest.fail(f"{self.name}: {problem}\n--- output ---\n{self.output()}")

    def wait_for(self, pattern: re.Pattern[str], timeout: float = STARTUP_TIMEOUT) -> re.Match[str]:
        """Wait until the output matches `pattern`; fail if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            exited = self.popen.poll() is not None  # read the output after, to miss nothing
            if match := pattern.search(self.output()):
                return match
            if exited:
                self.fail(f"exited ({self.popen.returncode}) before printing {pattern.pattern!r}")
            if time.monotonic() > deadline:
                self.fail(f"printed no {pattern.pattern!r} within {timeout:g}s")
            time.sleep(0.05)

    def wait(self, timeout: float = RUN_TIMEOUT) -> int:
        """Wait for the process to exit and return its exit status; fail on timeout."""
        try:
            code: int | None = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            self.fail(f"still running after {timeout:g}s")
        return code

    def expect_success(self, timeout: float = RUN_TIMEOUT) -> str:
        """Wait for the process, fail unless it exits 0, and return its output."""
        if (code := self.wait(timeout)) != 0:
            self.fail(f"exited with status {code}")
        return self.output()

    def kill(self) -> None:
        """SIGKILL the process (if still running) and reap it."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=30)

    def close(self) -> None:
        """Kill the process and close its log."""
        try:
            self.kill()
        finally:
            self._file.close()


Spawn = Callable[..., Proc]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Return `spawn(name, *args)`, which runs `python -m federa *args` as process `name`.

    Every process started is killed at teardown, and the logs are printed (pytest shows
    them when the test failed).
    """
    started: list[Proc] = []

    def start(name: str, *args: object) -> Proc:
        assert all(p.name != name for p in started), f"two processes named {name}"
        proc = Proc(name, [str(a) for a in args], tmp_path / f"{name}.log")
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in started:
            try:
                proc.close()
            except Exception as exc:  # keep killing the others
                print(f"cannot stop {proc.name}: {exc!r}")
        for proc in started:
            print(f"===== {proc.name} (exit {proc.popen.returncode}) =====\n{proc.output()}")


# ---- the commands ----


def data_args(rounds: int) -> list[object]:
    return ["--num-clients", NUM_CLIENTS, "--rounds", rounds, "--fraction-train", FRACTION_TRAIN]


def start_server(
    spawn: Spawn,
    out: Path,
    rounds: int,
    *extra: object,
    name: str = "server",
    address: str = "127.0.0.1:0",
) -> tuple[Proc, int]:
    """Start `federa server` and return it with the port it listens on."""
    server = spawn(
        name,
        "server",
        "--address",
        address,
        "--min-clients",
        NUM_CLIENTS,
        "--wait-timeout",
        RUN_TIMEOUT,
        "--out",
        out,
        *data_args(rounds),
        *extra,
    )
    port = int(server.wait_for(LISTENING)[1])
    return server, port


def start_client(
    spawn: Spawn,
    port: int,
    partition_id: int,
    *extra: object,
    name: str | None = None,
    reconnect_timeout: float = 30.0,
) -> Proc:
    return spawn(
        name or f"client-{partition_id}",
        "client",
        "--address",
        f"127.0.0.1:{port}",
        "--partition-id",
        partition_id,
        "--num-partitions",
        NUM_CLIENTS,
        "--reconnect-timeout",
        reconnect_timeout,
        *extra,
    )


def simulate(spawn: Spawn, out: Path, rounds: int) -> Proc:
    """Start `federa run` with the settings the deployments use."""
    return spawn("simulation", "run", "-q", "--out", out, *data_args(rounds))


def rounds_printed(output: str) -> list[int]:
    return [int(n) for n in ROUND_LINE.findall(output)]


def final_accuracy(output: str) -> str:
    match = FINAL_ACCURACY.search(output)
    assert match is not None, output
    return match[1]


def assert_same_run(deployed: Path, simulated: Path) -> History:
    """Assert two run directories hold equal histories and identical final models."""
    history = History.from_json(deployed / "history.json")
    assert history == History.from_json(simulated / "history.json")
    with np.load(deployed / "model.npz") as a, np.load(simulated / "model.npz") as b:
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    return history


def cohort(round_num: int, available: Sequence[int]) -> list[int]:
    """Return the clients FedAvg samples to train in `round_num` (as `federa server` does)."""
    ctx = RoundContext(round_num=round_num, rng=round_rng(SEED, round_num), seed=SEED)
    return sample_cohort(ctx, available, FRACTION_TRAIN, 1)


def one_line_error(output: str) -> str:
    """Return the error line of a command that failed; assert it is one line, no traceback."""
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("federa: error: ")]
    assert len(errors) == 1, output
    assert output.rstrip("\n").endswith(errors[0]), output  # the last thing printed
    return errors[0]


# ---- the tests ----


def test_grpc_run_history_equals_simulation(spawn: Spawn, tmp_path: Path) -> None:
    simulation = simulate(spawn, tmp_path / "sim", 3)  # alongside, to use idle cores
    server, port = start_server(spawn, tmp_path / "srv", 3)
    clients = [start_client(spawn, port, i) for i in range(NUM_CLIENTS)]
    served = server.expect_success()
    for client in clients:
        assert "done (the run is complete)" in client.expect_success()
    simulated = simulation.expect_success()

    history = assert_same_run(tmp_path / "srv", tmp_path / "sim")
    assert [r.round_num for r in history.rounds] == [1, 2, 3]
    assert all(r.num_results == r.num_sampled == 2 and not r.failures for r in history.rounds)
    assert final_accuracy(served) == final_accuracy(simulated)
    assert rounds_printed(served) == [0, 1, 2, 3]


def test_killing_a_client_mid_round_still_completes_the_run(spawn: Spawn, tmp_path: Path) -> None:
    round_timeout = 30.0
    server, port = start_server(spawn, tmp_path / "srv", 3, "--round-timeout", round_timeout)
    clients = [start_client(spawn, port, i) for i in range(NUM_CLIENTS)]
    # Kill a client of round 2's cohort as soon as round 1 ends: it is training then.
    victim = cohort(2, range(NUM_CLIENTS))[0]
    server.wait_for(re.compile(r"^round +1 ", re.MULTILINE), RUN_TIMEOUT)
    clients[victim].kill()
    assert clients[victim].popen.returncode == -signal.SIGKILL

    served = server.expect_success()
    for i, client in enumerate(clients):
        if i != victim:
            assert "done (the run is complete)" in client.expect_success()
    history = History.from_json(tmp_path / "srv" / "history.json")
    assert [r.round_num for r in history.rounds] == [1, 2, 3]
    assert rounds_printed(served) == [0, 1, 2, 3]
    first, *after_kill = history.rounds
    assert first.num_results == first.num_sampled == 2
    assert not first.failures
    for rec in after_kill:
        assert rec.num_results >= 1, rec
        assert rec.is_accepted, rec
        # Every task either came back or failed, and only the dead client's failed ...
        assert rec.num_results + len(rec.failures) == rec.num_sampled, rec
        assert all(f.client_id == victim and f.phase == "train" for f in rec.failures), rec
        # ... at once, when its stream broke, not at the round deadline.
        assert rec.timings["total_s"] < round_timeout, rec
    # Once gone, it is no longer sampled: round 3 draws from the two survivors.
    assert not history.rounds[2].failures
    survivors = [i for i in range(NUM_CLIENTS) if i != victim]
    assert history.rounds[2].num_sampled == len(cohort(3, survivors))


def test_server_killed_and_resumed_runs_every_round_exactly_once(
    spawn: Spawn, tmp_path: Path
) -> None:
    simulation = simulate(spawn, tmp_path / "sim", 4)  # alongside, to use idle cores
    out, checkpoints = tmp_path / "srv", tmp_path / "checkpoints"
    server, port = start_server(spawn, out, 4, "--checkpoint-dir", checkpoints)
    clients = [start_client(spawn, port, i, reconnect_timeout=60) for i in range(NUM_CLIENTS)]
    server.wait_for(re.compile(r"^round +2 ", re.MULTILINE), RUN_TIMEOUT)
    # The checkpoint is written just after the round's line: wait for it, then crash.
    latest = checkpoints / "LATEST"
    deadline = time.monotonic() + 30
    while not (latest.exists() and latest.read_text().strip() >= "round-000002"):
        if time.monotonic() > deadline:
            server.fail(f"no checkpoint of round 2 in {checkpoints} within 30s")
        time.sleep(0.05)
    server.kill()
    assert server.popen.returncode == -signal.SIGKILL
    resumed_after = int(latest.read_text().strip().removeprefix("round-"))
    assert resumed_after in (2, 3)
    assert all(client.popen.poll() is None for client in clients), "a client gave up"

    resumed, resumed_port = start_server(
        spawn,
        out,
        4,
        "--checkpoint-dir",
        checkpoints,
        "--resume",
        name="server-resumed",
        address=f"127.0.0.1:{port}",
    )
    assert resumed_port == port
    # The clients were not restarted: they reconnect to the new server by themselves.
    served = resumed.expect_success()
    for client in clients:
        assert "done (the run is complete)" in client.expect_success()
    simulated = simulation.expect_success()

    history = assert_same_run(out, tmp_path / "sim")
    assert [r.round_num for r in history.rounds] == [1, 2, 3, 4]
    assert all(not r.failures for r in history.rounds)
    assert final_accuracy(served) == final_accuracy(simulated)
    # The first server did the rounds up to its checkpoint; the resumed one did only the
    # rest (no initial evaluation, no repeated round).
    assert rounds_printed(server.output())[: resumed_after + 1] == list(range(resumed_after + 1))
    assert rounds_printed(served) == list(range(resumed_after + 1, 5))


def test_unauthenticated_client_is_refused(spawn: Spawn, tmp_path: Path) -> None:
    tokens = {i: secrets.token_hex(16) for i in range(NUM_CLIENTS)}
    table = tmp_path / "tokens.toml"
    table.write_text("[tokens]\n" + "".join(f'{i} = "{t}"\n' for i, t in tokens.items()))
    server, port = start_server(spawn, tmp_path / "srv", 1, "--auth-tokens", table)
    clients = {i: start_client(spawn, port, i, "--token", tokens[i]) for i in (1, 2)}
    # Client 0 with another client's token, and without a token: both are refused at
    # once (they do not retry for their reconnect timeout) while the server, with two
    # of its three clients, still waits for a third.
    impostors = [
        start_client(spawn, port, 0, *token, name=name, reconnect_timeout=RUN_TIMEOUT)
        for name, token in [
            ("client-0-wrong-token", ["--token", tokens[1]]),
            ("client-0-no-token", []),
        ]
    ]
    for proc in impostors:
        if (code := proc.wait(timeout=STARTUP_TIMEOUT)) == 0:
            proc.fail("joined without a valid token")
        assert code == 2
        error = one_line_error(proc.output())
        assert "refused" in error
        assert "client 0 is unknown or its token is wrong" in error
    assert server.popen.poll() is None
    assert rounds_printed(server.output()) == []  # it never had a third client

    clients[0] = start_client(spawn, port, 0, "--token", tokens[0])
    server.expect_success()
    for client in clients.values():
        assert "done (the run is complete)" in client.expect_success()
    history = History.from_json(tmp_path / "srv" / "history.json")
    assert [r.round_num for r in history.rounds] == [1]
    assert history.rounds[0].num_results == history.rounds[0].num_sampled == 2
    assert not history.rounds[0].failures


def test_tls_and_mutual_tls_walkthrough(spawn: Spawn, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    names = [f"client-{i}" for i in range(NUM_CLIENTS)]
    made = spawn("certs", "certs", "--out", certs, *(a for n in names for a in ("--client", n)))
    assert "mutual TLS" in made.expect_success(timeout=60)
    server, port = start_server(
        spawn,
        tmp_path / "srv",
        1,
        "--tls-cert",
        certs / "server.pem",
        "--tls-key",
        certs / "server.key",
        "--tls-client-ca",
        certs / "ca.pem",
    )

    def tls_client(i: int) -> Proc:
        return start_client(
            spawn,
            port,
            i,
            "--tls-ca",
            certs / "ca.pem",
            "--tls-cert",
            certs / f"{names[i]}.pem",
            "--tls-key",
            certs / f"{names[i]}.key",
        )

    clients = {i: tls_client(i) for i in (1, 2)}
    # Trusts the server but has no certificate of its own: the handshake fails, it
    # retries as for a server that is down, and gives up after its reconnect timeout,
    # while the server, with two of its three clients, still waits for a third.
    no_cert = start_client(
        spawn, port, 0, "--tls-ca", certs / "ca.pem", name="client-0-no-cert", reconnect_timeout=5
    )
    if (code := no_cert.wait(timeout=60)) == 0:
        no_cert.fail("joined a mutual-TLS server without a client certificate")
    assert code == 2
    assert "cannot reach the server" in one_line_error(no_cert.output())
    assert server.popen.poll() is None
    assert rounds_printed(server.output()) == []  # it never had a third client

    clients[0] = tls_client(0)
    server.expect_success()
    for client in clients.values():
        assert "done (the run is complete)" in client.expect_success()
    history = History.from_json(tmp_path / "srv" / "history.json")
    assert [r.round_num for r in history.rounds] == [1]
    assert history.rounds[0].num_results == history.rounds[0].num_sampled == 2
    assert not history.rounds[0].failures
