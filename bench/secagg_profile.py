"""Per-stage CPU of SecAgg+ for one client and for the server, in one process.

Runs `SecAggPlus.aggregate` for --clients clients holding a --params float32 model (4
arrays) with every stage task run in-process on long-lived `SecAggPlusClient`s (no
transport), and reports per stage the median client's CPU time (and its parts when
--cprofile is given), plus the server's own compute (everything outside the clients).
The same computation runs over gRPC in bench/secagg.py; this isolates the CPU.

Run: python bench/secagg_profile.py [--clients 100] [--params 1000000] [--rounds 3]
Prints one JSON line (and a cProfile table of the clients' and server's hot spots
with --cprofile).
"""

# ruff: noqa: E402  (the imports after the sys.path fix below must stay after it)
from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse
import cProfile
import json
import pstats
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

import federa as fd
from federa.client.runner import run_task
from federa.client.secagg import SecAggPlusClient
from federa.privacy.secagg import SecAggPlus, recover, stages, wire

NUM_ARRAYS = 4


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


SERVER_PARTS: dict[str, float] = {}


def timed_part(module: Any, name: str) -> None:
    """Replace `module.name` by a wrapper adding its CPU time to SERVER_PARTS[name]."""
    inner = getattr(module, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            SERVER_PARTS[name] = SERVER_PARTS.get(name, 0.0) + time.process_time() - start

    setattr(module, name, wrapper)


def profile_round(
    n: int, arrays: fd.Arrays, round_num: int, profiler: cProfile.Profile | None
) -> dict[str, Any]:
    clients = {cid: SecAggPlusClient(StepClient(cid)) for cid in range(n)}
    cpu: dict[str, list[float]] = {s: [] for s in wire.STAGES}
    fit_cpu: list[float] = []
    in_clients = [0.0]

    def collect(
        batch: Sequence[fd.TrainTask],
    ) -> tuple[list[tuple[int, fd.TrainResult]], list[fd.Failure]]:
        stage = wire.stage_of(batch[0].config) or "?"
        results, failures = [], []
        start_all = time.process_time()
        for task in batch:
            start = time.process_time()
            if profiler is not None:
                profiler.enable()
            out = run_task(clients[task.client_id], task)
            if profiler is not None:
                profiler.disable()
            cpu[stage].append(time.process_time() - start)
            if isinstance(out, fd.Failure):
                failures.append(out)
            else:
                assert isinstance(out, fd.TrainResult)
                results.append((task.client_id, out))
        in_clients[0] += time.process_time() - start_all
        if stage == wire.SETUP:  # the wrapped client's own fit, to subtract
            for task in batch:
                start = time.process_time()
                StepClient(task.client_id).fit(task.arrays, {})
                fit_cpu.append(time.process_time() - start)
        return results, failures

    tasks = [
        fd.TrainTask(round_num=round_num, client_id=cid, arrays=arrays, seed=1000 + cid)
        for cid in range(n)
    ]
    SERVER_PARTS.clear()
    start = time.process_time()
    results, failures = SecAggPlus(clip=0.1).aggregate(tasks, collect, seed=7)
    total = time.process_time() - start
    assert results and not failures, failures
    stages = {s: 1e3 * statistics.median(v) for s, v in cpu.items()}
    stages["setup"] -= 1e3 * statistics.median(fit_cpu)
    fastest = {s: 1e3 * min(v) for s, v in cpu.items()}
    fastest["setup"] -= 1e3 * min(fit_cpu)
    return {
        "client_ms": stages,
        "client_min_ms": fastest,
        "client_total_ms": sum(stages.values()),
        "server_s": total - in_clients[0],
        **{f"server_{k}_s": v for k, v in SERVER_PARTS.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--params", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the first round warms up and is not measured)")
    timed_part(stages, "recover_secrets")
    timed_part(recover, "unmasked_sum")
    timed_part(recover, "decode")
    rng = np.random.default_rng(0)
    per = args.params // NUM_ARRAYS
    arrays = fd.Arrays(
        {f"layer{i}": rng.standard_normal(per, dtype=np.float32) for i in range(NUM_ARRAYS)}
    )
    client_profile = cProfile.Profile() if args.cprofile else None
    rounds = [
        profile_round(args.clients, arrays, r, client_profile if r > 1 else None)
        for r in range(1, args.rounds + 1)
    ][1:]  # the first round warms up
    out = {
        "bench": "secagg_profile",
        "clients": args.clients,
        "params": args.params,
        "client_ms": {
            s: round(statistics.median(r["client_ms"][s] for r in rounds), 2) for s in wire.STAGES
        },
        "client_total_ms": round(statistics.median(r["client_total_ms"] for r in rounds), 2),
        # The fastest client, over all measured rounds: least disturbed by other load.
        "client_min_ms": {
            s: round(min(r["client_min_ms"][s] for r in rounds), 2) for s in wire.STAGES
        },
        "server_s": round(statistics.median(r["server_s"] for r in rounds), 3),
        **{
            key: round(statistics.median(r[key] for r in rounds), 3)
            for key in rounds[0]
            if key.startswith("server_") and key != "server_s"
        },
    }
    print(json.dumps(out))
    if client_profile is not None:
        pstats.Stats(client_profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
