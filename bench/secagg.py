"""SecAgg+ against plain FedAvg: round time and bytes per client, over gRPC on loopback.

n = --clients connect() clients (default 100) hold a --params float32 model (default 1M,
in 4 arrays). They run as threads of --procs child processes (each with its own gRPC
channel and TCP connection, as separate machines would), and their fit adds a small
step to the arrays (about 1 ms: the rounds measure the protocol, not training). One run
alternates plain FedAvg rounds and SecAgg+ rounds (FedAvg on the secure sum), so both
see the same machine load; the first pair is warm-up, the figures are medians of the
other pairs.

- round time: the train phase of a round, from sampling to the new arrays (the server's
  unmasking included), as the round loop times it;
- bytes per client: what crosses the wire for one client in one round, both directions:
  array payloads plus configs (protobuf framing, tens of bytes per message, left out);
- the SecAgg+ round broken down into its four stages (server wall time per stage, the
  slowest client's wall time and the median client's CPU time per stage), and the
  server's own compute (graph, routing, share recovery, unmasking);
- the CPU time one client spends per round, plain and SecAgg+ (inside fit; the decoding
  and encoding of arrays for gRPC, the same in both, is not counted);
- the CPU time of a whole round, server and client processes together (from /proc on
  Linux), plain and SecAgg+, and its ratio: what a round costs whatever else the
  machine is running, where wall times on a shared machine are noisy.

On a 2-core machine all n clients compute on the same two cores, so their SecAgg+ work
(encoding the update, 16 AES-256-CTR mask streams of 4 MB each with the default degree
15, about 10 ms of AES alone at 6 GB/s) is serialized, and so are the three extra round
trips of 2n small messages; a deployment spreads the client work over n machines. The
client CPU figures show how much that is. The receive buffers the server allocates for
the masked inputs differ in layout from those of the plain results (one 4 MB array
against 4 of 1 MB), so with alternating rounds one side or the other faults fresh pages
in: with the model as one array instead of 4 the plain rounds pay it instead.

Run: python bench/secagg.py [--clients 100] [--params 1000000] [--pairs 5] [--procs 4]
Prints one JSON line.
"""

# ruff: noqa: E402  (the imports after the sys.path fix below must stay after it)
from __future__ import annotations

import sys
from pathlib import Path

# Keep this folder off the import path (bench/grpc.py would shadow the grpc package).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

import federa as fd
from federa.client.secagg import SecAggPlusClient
from federa.core.messages import Task, TaskResult
from federa.privacy.secagg import SecAggPlus, wire
from federa.server.loop import Collect, run_rounds
from federa.strategy.base import Strategy
from federa.transport.grpc import client as grpc_client
from federa.transport.grpc import connect
from federa.transport.grpc.server import GrpcServer, GrpcTransport

CLIENT_TIMEOUT_S = 600.0
NUM_ARRAYS = 4


# ---- clients (child processes: python bench/secagg.py --role clients ...) ------------


class StepClient(fd.Client):
    """Adds a small client-specific step to every array (a stand-in for training)."""

    def __init__(self, cid: int) -> None:
        self.cid = cid

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        step = np.float32(1e-3 * (1 + self.cid % 7))
        new = fd.Arrays({name: a + step for name, a in arrays.items()})
        return fd.TrainResult(arrays=new, num_examples=10 + self.cid % 50)

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        return fd.EvalResult(loss=0.0, num_examples=1)


class TimedClient(SecAggPlusClient):
    """Reports how long each task took on the client (for the server's breakdown)."""

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        start, cpu = time.perf_counter(), time.thread_time()
        result = super().fit(arrays, config)
        timing = {"client_s": time.perf_counter() - start, "client_cpu_s": time.thread_time() - cpu}
        return replace(result, metrics={**result.metrics, **timing})


def run_clients(args: argparse.Namespace) -> None:
    """Child process: serve clients first..first+count-1 to the server, as threads."""
    grpc_client.CHANNEL_OPTIONS.append(("grpc.use_local_subchannel_pool", 1))
    address = f"127.0.0.1:{args.port}"
    threads = [
        threading.Thread(
            target=connect,
            args=(TimedClient(StepClient(cid)), address),
            kwargs={"client_id": cid, "reconnect_timeout": 30},
        )
        for cid in range(args.first, args.first + args.count)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# ---- server --------------------------------------------------------------------------


def payload_bytes(arrays: fd.Arrays, config: fd.Config) -> int:
    """Array bytes plus config keys and values (as they are encoded, roughly)."""
    return arrays.num_bytes + sum(len(k) + len(str(v)) for k, v in config.items())


class CountingTransport:
    """A transport that counts the bytes each round's tasks and results carry."""

    def __init__(self, inner: GrpcTransport) -> None:
        self.inner = inner
        self.bytes: dict[int, int] = {}

    def available_clients(self) -> Sequence[int]:
        return self.inner.available_clients()

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, TaskResult]]:
        if not tasks:
            return
        round_num = tasks[0].round_num
        count = sum(payload_bytes(t.arrays, t.config) for t in tasks)
        self.bytes[round_num] = self.bytes.get(round_num, 0) + count
        for cid, outcome in self.inner.run(tasks):
            if isinstance(outcome, fd.TrainResult):
                self.bytes[round_num] += outcome.arrays.num_bytes
            yield cid, outcome

    def close(self) -> None:
        self.inner.close()


def process_cpu_s(pids: Sequence[int]) -> float:
    """Return the CPU seconds (user + system) this process and `pids` have used so far.

    The children's figures come from /proc (Linux); elsewhere only this process counts.
    """
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


class Alternating:
    """Plain FedAvg on odd rounds, SecAgg+ on even rounds; times the SecAgg+ stages.

    Both kinds of round collect every result before aggregating (the round loop hands
    all of them to `aggregate`), and each round's CPU time is measured the same way:
    the server process and the client processes together, from the first task sent to
    the aggregate.
    """

    def __init__(self, secagg: SecAggPlus, client_pids: Sequence[int] = ()) -> None:
        self.secagg = secagg
        self.client_pids = list(client_pids)
        self.stages: dict[int, list[dict[str, Any]]] = {}
        self.totals: dict[int, float] = {}
        self.plain_cpu: dict[int, float] = {}
        self.round_cpu: dict[int, float] = {}

    def check_strategy(self, strategy: Strategy) -> None:
        self.secagg.check_strategy(strategy)

    def aggregate(
        self, tasks: Sequence[fd.TrainTask], collect: Collect, *, seed: int
    ) -> tuple[list[tuple[int, fd.TrainResult]], list[fd.Failure]]:
        round_num = tasks[0].round_num
        cpu_start = process_cpu_s(self.client_pids)
        try:
            return self._aggregate(tasks, collect, seed=seed)
        finally:
            self.round_cpu[round_num] = process_cpu_s(self.client_pids) - cpu_start

    def _aggregate(
        self, tasks: Sequence[fd.TrainTask], collect: Collect, *, seed: int
    ) -> tuple[list[tuple[int, fd.TrainResult]], list[fd.Failure]]:
        round_num = tasks[0].round_num
        if round_num % 2:
            results, failures = collect(tasks)
            cpu = [r.metrics.get("client_cpu_s", 0.0) for _, r in results]
            self.plain_cpu[round_num] = statistics.median(cpu)
            return results, failures
        log = self.stages.setdefault(round_num, [])

        def timed(batch: Sequence[fd.TrainTask]) -> Any:
            start = time.perf_counter()
            results, failures = collect(batch)
            wall = time.perf_counter() - start
            slowest = max((r.metrics.get("client_s", 0.0) for _, r in results), default=0.0)
            cpu = statistics.median(r.metrics.get("client_cpu_s", 0.0) for _, r in results)
            stage = wire.stage_of(batch[0].config) or "?"
            log.append({"stage": stage, "wall_s": wall, "client_s": slowest, "cpu_s": cpu})
            return results, failures

        start = time.perf_counter()
        out = self.secagg.aggregate(tasks, timed, seed=seed)
        self.totals[round_num] = time.perf_counter() - start
        return out


def spawn(args: argparse.Namespace, port: int) -> list[subprocess.Popen[bytes]]:
    per = -(-args.clients // args.procs)
    children = []
    for first in range(0, args.clients, per):
        count = min(per, args.clients - first)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--role", "clients"]
        cmd += ["--port", str(port), "--first", str(first), "--count", str(count)]
        children.append(subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}))
    return children


def model(params: int) -> fd.Arrays:
    rng = np.random.default_rng(0)
    per = params // NUM_ARRAYS
    return fd.Arrays(
        {f"layer{i}": rng.standard_normal(per, dtype=np.float32) for i in range(NUM_ARRAYS)}
    )


def bench(args: argparse.Namespace) -> dict[str, Any]:
    transport = GrpcTransport(round_timeout=CLIENT_TIMEOUT_S)
    server = GrpcServer("127.0.0.1:0", transport, max_clients=args.clients + 8)
    children = spawn(args, server.port)
    counting = CountingTransport(transport)
    alternating = Alternating(SecAggPlus(clip=0.1), [child.pid for child in children])
    try:
        transport.wait_for_clients(args.clients, CLIENT_TIMEOUT_S)
        history = run_rounds(
            fd.FedAvg(fraction_train=1.0, min_train_clients=args.clients),
            counting,  # type: ignore[arg-type]  # a Transport by structure
            num_rounds=2 * args.pairs,
            initial=model(args.params),
            secure_aggregation=alternating,
        )
    finally:
        server.stop()
        for child in children:
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    rounds = {r.round_num: r for r in history.rounds}
    assert all(r.is_accepted and not r.failures for r in rounds.values()), "a round failed"
    measured = range(3, 2 * args.pairs + 1)  # the first pair warms up
    plain = [rounds[r].timings["train_s"] for r in measured if r % 2]
    secure = [rounds[r].timings["train_s"] for r in measured if not r % 2]
    plain_bytes = [counting.bytes[r] / args.clients for r in measured if r % 2]
    secure_bytes = [counting.bytes[r] / args.clients for r in measured if not r % 2]
    secure_rounds = [r for r in measured if not r % 2]

    def stage_median(name: str, key: str) -> float:
        values = [
            s[key] for r in secure_rounds for s in alternating.stages[r] if s["stage"] == name
        ]
        return statistics.median(values)

    breakdown = {
        name: {
            "wall_s": stage_median(name, "wall_s"),
            "slowest_client_s": stage_median(name, "client_s"),
            "client_cpu_ms": 1e3 * stage_median(name, "cpu_s"),
        }
        for name in wire.STAGES
    }
    server_compute = statistics.median(
        alternating.totals[r] - sum(s["wall_s"] for s in alternating.stages[r])
        for r in measured
        if not r % 2
    )
    time_ratio = statistics.median(secure) / statistics.median(plain)
    plain_cpu = statistics.median(alternating.round_cpu[r] for r in measured if r % 2)
    secure_cpu = statistics.median(alternating.round_cpu[r] for r in measured if not r % 2)
    bytes_ratio = statistics.median(secure_bytes) / statistics.median(plain_bytes)
    return {
        "bench": "secagg",
        "transport": f"gRPC loopback, {args.procs} client processes x threads",
        "clients": args.clients,
        "params": args.params,
        "pairs_measured": len(plain),
        "plain_round_s": round(statistics.median(plain), 3),
        "secagg_round_s": round(statistics.median(secure), 3),
        "time_ratio": round(time_ratio, 3),
        "time_ratio_per_pair": [
            round(rounds[r + 1].timings["train_s"] / rounds[r].timings["train_s"], 3)
            for r in measured
            if r % 2
        ],
        # CPU seconds of the server and all clients in the round: what the round costs
        # whatever else the machine runs (timings on a shared machine are noisy).
        "plain_round_cpu_s": round(plain_cpu, 3),
        "secagg_round_cpu_s": round(secure_cpu, 3),
        "cpu_ratio": round(secure_cpu / plain_cpu, 3),
        "plain_bytes_per_client": int(statistics.median(plain_bytes)),
        "secagg_bytes_per_client": int(statistics.median(secure_bytes)),
        "bytes_ratio": round(bytes_ratio, 4),
        "secagg_stages": {k: {m: round(v, 3) for m, v in d.items()} for k, d in breakdown.items()},
        "secagg_server_compute_s": round(server_compute, 3),
        # CPU one client spends on a SecAgg+ round (its fit included), median client:
        # what each of n machines would spend in a deployment.
        "plain_client_cpu_ms_per_round": round(
            1e3 * statistics.median(alternating.plain_cpu[r] for r in measured if r % 2), 1
        ),
        "secagg_client_cpu_ms_per_round": round(
            sum(d["client_cpu_ms"] for d in breakdown.values()), 1
        ),
        "goal_time_ratio_le_2": time_ratio <= 2.0,
        "goal_bytes_ratio_le_1_5": bytes_ratio <= 1.5,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--pairs", type=int, default=5, help="plain/SecAgg+ round pairs")
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--role", default="server", choices=["server", "clients"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--first", type=int)
    parser.add_argument("--count", type=int)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.role == "clients":
        run_clients(args)
        return
    if args.pairs < 2:
        parser.error("--pairs must be >= 2 (the first pair is warm-up)")
    print(json.dumps(bench(args)))


if __name__ == "__main__":
    main()
