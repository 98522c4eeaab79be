"""A model over 2 GiB through serve() and connect(): exact, and within a memory budget.

The run happens in a child process, so its peak RSS (getrusage) is the run's alone and
not whatever the test session touched before. Server and client are threads of that
one process, so the peak counts both sides: the server's global arrays, the client's
task (which this client edits in place and returns as its result) and the server's
copy of the result are the copies no implementation can avoid; the new global arrays
the aggregation builds come on top.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import federa as fd

ROOT = Path(__file__).resolve().parents[2]
# Three float32 arrays of 179M elements: 2.148e9 bytes > 2 GiB (2.147e9), so chunk
# offsets pass 2**31 inside the third array. Each array stays under 2 GiB: the
# aggregation's float64 accumulator of a single larger array would not fit in memory.
ELEMENTS = 179_000_000
NAMES = ("a", "b", "c")


def model() -> fd.Arrays:
    """Distinct values everywhere a chunk could land (arange, its negative, reversed)."""
    a = np.arange(ELEMENTS, dtype=np.float32)
    return fd.Arrays({"a": a, "b": np.negative(a), "c": a[::-1].copy()})


class PlusOne(fd.Client):
    """Returns the arrays it was sent, with 1 added to a[0], editing them in place."""

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        arrays["a"][0] += 1
        return fd.TrainResult(arrays=arrays, num_examples=3)

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        return fd.EvalResult(loss=0.0, num_examples=1)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def run() -> dict[str, Any]:
    """The child process: one round of serve() with one connect() thread."""
    from federa.server.serve import serve
    from federa.transport.grpc import connect

    baseline = rss_bytes()
    start = time.monotonic()
    initial = model()
    ports: list[int] = []
    ready = threading.Event()

    def on_ready(port: int) -> None:
        ports.append(port)
        ready.set()

    outcome: dict[str, Any] = {}

    def client() -> None:
        ready.wait()
        outcome["client"] = connect(PlusOne(), f"127.0.0.1:{ports[0]}", client_id=0)

    thread = threading.Thread(target=client)
    thread.start()
    history = serve(
        fd.FedAvg(min_train_clients=1),
        address="127.0.0.1:0",
        num_rounds=1,
        initial=initial,
        min_clients=1,
        wait_timeout=60,
        on_ready=on_ready,
    )
    thread.join(60)
    seconds = time.monotonic() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    got = history.arrays
    assert got is not None
    rec = history.rounds[0]
    a = got["a"]
    return {
        "model_bytes": initial.num_bytes,
        "baseline_rss": baseline,
        "peak_rss": peak,
        "seconds": seconds,
        "train_s": rec.timings["train_s"],
        "num_results": rec.num_results,
        "failures": [f.message for f in rec.failures],
        "client_ended": outcome.get("client"),
        "spec": got.spec(),
        "a0": float(a[0]),
        "a_rest_exact": bool(np.array_equal(a[1:], initial["a"][1:])),
        "b_exact": bool(np.array_equal(got["b"], initial["b"])),
        "c_exact": bool(np.array_equal(got["c"], initial["c"])),
    }


def main() -> None:
    print(json.dumps(run()))


def available_memory() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.fixture(scope="module")
def large_run() -> dict[str, Any]:
    need = 7 * 3 * 4 * ELEMENTS
    if available_memory() < need:
        pytest.skip(f"needs {need / 2**30:.0f} GiB of free memory")
    code = "from tests.transport.test_large_model import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"\nlarge model: {result['model_bytes'] / 2**30:.2f} GiB, train phase "
        f"{result['train_s']:.1f}s, run {result['seconds']:.1f}s, peak RSS "
        f"{(result['peak_rss'] - result['baseline_rss']) / result['model_bytes']:.2f}x the model"
    )
    return result


def peak_in_models(result: dict[str, Any]) -> float:
    return float((result["peak_rss"] - result["baseline_rss"]) / result["model_bytes"])


@pytest.mark.slow
def test_a_model_over_2_gib_round_trips_exactly(large_run: dict[str, Any]) -> None:
    assert large_run["model_bytes"] > 2**31
    assert large_run["failures"] == []
    assert large_run["num_results"] == 1
    assert large_run["client_ended"] == "the run is complete"
    assert [tuple(s[:2]) for s in large_run["spec"]] == [(n, "<f4") for n in NAMES]
    assert all(tuple(s[2]) == (ELEMENTS,) for s in large_run["spec"])
    assert large_run["a0"] == 1.0
    assert large_run["a_rest_exact"]
    assert large_run["b_exact"]
    assert large_run["c_exact"]


@pytest.mark.slow
def test_a_model_over_2_gib_never_needs_a_serialized_copy(large_run: dict[str, Any]) -> None:
    """Regression guard at today's ~5.1x: server global, client task, server result, the
    new global and the aggregation's float64 accumulator and temporary (2/3 of the model
    each with three equal arrays). A whole-model serialized buffer would add 1x."""
    assert peak_in_models(large_run) < 5.5


@pytest.mark.slow
def test_a_model_over_2_gib_peaks_under_5_copies(large_run: dict[str, Any]) -> None:
    """The target: the copies that cannot be avoided, with room for the new global."""
    assert peak_in_models(large_run) < 5.0
