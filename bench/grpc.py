"""gRPC deployment costs on loopback: model transfer rate, round overhead, server memory.

(a) transfer: serve() and one connect() client in a separate process; the client's
    fit returns the arrays it was sent unchanged. Per round, server -> client is the
    time from the strategy handing out the task to the client's fit starting (the task
    fully received and decoded), client -> server the time from fit returning to the
    strategy receiving the result (the client's and the server's NaN checks included).
    Both processes read CLOCK_MONOTONIC, so their timestamps compare. Goal: >= 500 MB/s
    each way. Round 1 receives into freshly allocated arrays; later rounds receive
    into the arrays of the round before (transport/grpc/pool.py), as a deployment
    does. For scale, also the rate of a plain gRPC stream of bytes messages of the
    same size from a separate process (no federa, no protobuf): the ceiling here.
(b) round overhead: --clients connect() clients, all threads of ONE separate process
    (each with its own channel and TCP connection), a --params float32 model, and a fit
    that sleeps --sleep-ms. Overhead = train-phase wall time of the round minus the
    longest fit of the round (the clients' own compute, run in parallel).
(c) server memory per connected client: the server process's RSS (/proc/self/status)
    after the clients of (b) connected and idle, minus before, / --clients.

Run: python bench/grpc.py [--model-mb 1024] [--clients 100] [--only transfer|clients]
Quick: python bench/grpc.py --model-mb 64 --clients 10
Prints one JSON line. MB = 2**20 bytes. glibc's MALLOC_* tunables in the environment
(they change how often gRPC's buffers come back as fresh pages) are printed with it.
"""

# ruff: noqa: E402  (the imports after the sys.path fix below must stay after it)
from __future__ import annotations

import sys
from pathlib import Path

# This file is named grpc.py: drop its folder from the import path, or `import grpc`
# below would import this script instead of the grpc package.
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
from concurrent import futures
from typing import Any

import grpc
import numpy as np

import federa as fd
from federa.server.history import RoundRecord
from federa.server.serve import serve
from federa.strategy.base import RoundContext
from federa.transport.grpc import client as grpc_client
from federa.transport.grpc import codec, connect

MB = 1 << 20
CLIENT_TIMEOUT_S = 600.0


def now() -> float:
    """CLOCK_MONOTONIC: one clock for every process on the machine."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def server_rss() -> int:
    """Resident set size of this process in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# ---- clients (run in a child process: python bench/grpc.py --role ...) ----------------


class EchoClient(fd.Client):
    """Returns the arrays it was sent, with the times its fit started and ended."""

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        start = now()
        return fd.TrainResult(
            arrays=arrays, num_examples=1, metrics={"fit_start": start, "fit_end": now()}
        )

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        return fd.EvalResult(loss=0.0, num_examples=1)


class SleepClient(fd.Client):
    """Sleeps a fixed time (its 'compute') and returns the arrays it was sent."""

    def __init__(self, sleep_s: float) -> None:
        self.sleep_s = sleep_s

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        start = now()
        time.sleep(self.sleep_s)
        return fd.TrainResult(arrays=arrays, num_examples=1, metrics={"fit_s": now() - start})

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        return fd.EvalResult(loss=0.0, num_examples=1)


def run_clients(args: argparse.Namespace) -> None:
    """Child process: serve `--clients` clients to the server at `--port`, as threads."""
    if args.role == "raw":
        serve_raw(args.model_mb * MB)
        return
    # One TCP connection per client, as separate machines would have (gRPC otherwise
    # shares one connection between channels of a process that have the same target).
    grpc_client.CHANNEL_OPTIONS.append(("grpc.use_local_subchannel_pool", 1))
    address = f"127.0.0.1:{args.port}"
    if args.role == "echo":
        connect(EchoClient(), address, client_id=0, reconnect_timeout=10)
        return
    threads = [
        threading.Thread(
            target=connect,
            args=(SleepClient(args.sleep_ms / 1000), address),
            kwargs={"client_id": i, "reconnect_timeout": 10},
        )
        for i in range(args.clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def spawn_clients(role: str, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--role", role, "--port", str(port)]
    cmd += ["--clients", str(args.clients), "--sleep-ms", str(args.sleep_ms)]
    return subprocess.Popen(cmd)


# ---- server side -------------------------------------------------------------------


class TimedFedAvg(fd.FedAvg):
    """FedAvg that notes when tasks are handed out and when results are all in."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rounds: list[dict[str, Any]] = []

    def configure_train(
        self, ctx: RoundContext, arrays: fd.Arrays, available: Sequence[int]
    ) -> list[fd.TrainTask]:
        self.rounds.append({"sent": now()})
        return super().configure_train(ctx, arrays, available)

    def aggregate_train(
        self,
        ctx: RoundContext,
        arrays: fd.Arrays,
        results: Sequence[tuple[int, fd.TrainResult]],
        failures: Sequence[fd.Failure],
    ) -> tuple[fd.Arrays | None, fd.Metrics]:
        self.rounds[-1].update(
            received=now(),
            metrics=[dict(r.metrics) for _, r in results],
            failures=[f.message for f in failures],
        )
        return super().aggregate_train(ctx, arrays, results, failures)


def make_model(total_bytes: int, num_arrays: int) -> fd.Arrays:
    per = total_bytes // 4 // num_arrays
    rng = np.random.default_rng(0)
    return fd.Arrays(
        {f"layer{i}": rng.standard_normal(per, dtype=np.float32) for i in range(num_arrays)}
    )


def wait_child(child: subprocess.Popen[Any]) -> None:
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def bench_transfer(args: argparse.Namespace) -> dict[str, Any]:
    model = make_model(args.model_mb * MB, args.arrays)
    strategy = TimedFedAvg(min_train_clients=1)
    children: list[subprocess.Popen[bytes]] = []
    try:
        history = serve(
            strategy,
            address="127.0.0.1:0",
            num_rounds=args.transfer_rounds,
            initial=model,
            min_clients=1,
            wait_timeout=CLIENT_TIMEOUT_S,
            on_ready=lambda port: children.append(spawn_clients("echo", port, args)),
        )
    finally:
        for child in children:
            wait_child(child)
    assert history.arrays is not None and history.arrays.equals(model), "model changed in transit"
    size_mb = model.num_bytes / MB
    raw = bench_raw_grpc(args, model.num_bytes)
    down, up, both = [], [], []
    for r in strategy.rounds:
        if r["failures"]:
            raise RuntimeError(f"transfer round failed: {r['failures']}")
        (m,) = r["metrics"]
        down.append(size_mb / (m["fit_start"] - r["sent"]))
        up.append(size_mb / (r["received"] - m["fit_end"]))
        both.append(2 * size_mb / (r["received"] - r["sent"] - (m["fit_end"] - m["fit_start"])))
    return {
        "model_mb": round(size_mb, 1),
        "arrays": args.arrays,
        "rounds": len(strategy.rounds),
        "server_to_client_MBps": round(statistics.median(down), 1),
        "client_to_server_MBps": round(statistics.median(up), 1),
        "round_trip_MBps": round(statistics.median(both), 1),
        "per_round_server_to_client_MBps": [round(x, 1) for x in down],
        "per_round_client_to_server_MBps": [round(x, 1) for x in up],
        "client": "connect() in a separate process",
        "plain_grpc_bytes_stream_MBps": round(statistics.median(raw), 1),
        "per_call_plain_grpc_bytes_stream_MBps": [round(x, 1) for x in raw],
        "goal": ">= 500 MB/s each way",
    }


RAW_OPTIONS = [("grpc.max_receive_message_length", codec.MAX_MESSAGE_BYTES)]


def serve_raw(total_bytes: int) -> None:
    """Child process: stream `total_bytes` as CHUNK_BYTES bytes messages per call; print
    the port, serve until stdin closes."""
    payload = b"\x01" * codec.CHUNK_BYTES
    count = max(1, total_bytes // len(payload))

    def stream(request: bytes, context: Any) -> Iterator[bytes]:
        for _ in range(count):
            yield payload

    handler = grpc.method_handlers_generic_handler(
        "bench.Raw", {"Stream": grpc.unary_stream_rpc_method_handler(stream)}
    )
    with futures.ThreadPoolExecutor(2) as pool:
        server = grpc.server(pool, handlers=[handler], options=RAW_OPTIONS)
        print(server.add_insecure_port("127.0.0.1:0"), flush=True)
        server.start()
        sys.stdin.read()
        server.stop(0).wait()


def bench_raw_grpc(args: argparse.Namespace, total_bytes: int) -> list[float]:
    """MB/s of plain bytes messages of CHUNK_BYTES on one gRPC stream from a separate
    process, per call: what gRPC-Python itself manages here, without federa or protobuf."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--role", "raw"]
    cmd += ["--model-mb", str(total_bytes // MB)]
    child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    rates = []
    try:
        port = int(child.stdout.readline())
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=RAW_OPTIONS) as channel:
            call = channel.unary_stream("/bench.Raw/Stream")
            for _ in range(args.transfer_rounds):
                start = time.perf_counter()
                received = sum(len(m) for m in call(b""))
                rates.append(received / MB / (time.perf_counter() - start))
    finally:
        child.stdin.close()
        wait_child(child)
    return rates


def bench_clients(args: argparse.Namespace) -> dict[str, Any]:
    model = fd.Arrays({"w": np.zeros(args.params, dtype=np.float32)})
    rss: dict[str, int] = {}

    def at_round_zero(round_num: int, arrays: fd.Arrays) -> None:
        if round_num == 0:  # every client has connected and none has had a task yet
            time.sleep(1.0)
            rss["after"] = server_rss()

    def on_ready(port: int) -> None:
        time.sleep(0.5)
        rss["before"] = server_rss()
        children.append(spawn_clients("sleepers", port, args))

    strategy = TimedFedAvg(min_train_clients=1, evaluate_fn=at_round_zero)
    records: list[RoundRecord] = []
    children: list[subprocess.Popen[bytes]] = []
    try:
        serve(
            strategy,
            address="127.0.0.1:0",
            num_rounds=args.overhead_rounds + 1,
            initial=model,
            min_clients=args.clients,
            wait_timeout=CLIENT_TIMEOUT_S,
            on_ready=on_ready,
            on_round=records.append,
        )
    finally:
        for child in children:
            wait_child(child)
    overheads = []
    for rec, r in zip(records[1:], strategy.rounds[1:], strict=True):  # round 1 warms up
        if r["failures"] or len(r["metrics"]) != args.clients:
            raise RuntimeError(f"round {rec.round_num} failed: {r['failures'][:3]}")
        longest_fit = max(m["fit_s"] for m in r["metrics"])
        overheads.append(1000 * (rec.timings["train_s"] - longest_fit))
    per_client = (rss["after"] - rss["before"]) / args.clients
    return {
        "round_overhead": {
            "clients": args.clients,
            "params": args.params,
            "sleep_ms": args.sleep_ms,
            "rounds_measured": len(overheads),
            "median_ms": round(statistics.median(overheads), 1),
            "max_ms": round(max(overheads), 1),
            "per_round_ms": [round(x, 1) for x in overheads],
            "clients_are": "threads of one separate process, one channel and TCP connection each",
        },
        "server_memory_per_client": {
            "clients": args.clients,
            "rss_before_mb": round(rss["before"] / MB, 1),
            "rss_after_mb": round(rss["after"] / MB, 1),
            "kb_per_client": round(per_client / 1024, 1),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-mb", type=int, default=1024, help="(a) model size, MB")
    parser.add_argument("--arrays", type=int, default=4, help="(a) float32 arrays in the model")
    parser.add_argument("--transfer-rounds", type=int, default=3, help="(a) rounds measured")
    parser.add_argument("--clients", type=int, default=100, help="(b, c) connected clients")
    parser.add_argument("--params", type=int, default=10_000, help="(b) model parameters")
    parser.add_argument("--sleep-ms", type=float, default=50.0, help="(b) each client's fit")
    parser.add_argument("--overhead-rounds", type=int, default=5, help="(b) rounds measured")
    parser.add_argument(
        "--only", choices=["transfer", "clients"], help="run only (a) or only (b) and (c)"
    )
    parser.add_argument("--role", choices=["echo", "sleepers", "raw"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role is not None:
        logging.basicConfig(level=logging.ERROR)
        run_clients(args)
        return
    # Clients first, while the server process is small and fresh.
    clients = bench_clients(args) if args.only != "transfer" else {}
    transfer = {"transfer": bench_transfer(args)} if args.only != "clients" else {}
    print(
        json.dumps(
            {
                "bench": "grpc",
                "transport": "loopback, plaintext",
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
                "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")},
                "units": "MB = 2**20 bytes",
                **transfer,
                **clients,
            }
        )
    )


if __name__ == "__main__":
    main()
