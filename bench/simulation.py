"""Seconds per round on MNIST: federa vectorized, federa per-client, and a plain PyTorch loop.

Workloads (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data", section 3): 100 clients x 600 examples (IID), C = 0.1 (10 clients
per round), E = 1, B = 10, SGD, for the 2NN and the CNN; and 1,000 clients x 60
examples with 100 per round for the 2NN. Each side does the same work per round: load
the global weights, run one epoch of minibatch SGD on each sampled client's examples,
and average the results weighted by example count. federa runs the round through
`simulate` with clients trained one at a time (SerialExecutor) and with the cohort
trained together (VectorizedExecutor). Each side runs in its own process (so one side's
allocator state cannot speed up or slow down another), and their rounds are interleaved,
one side at a time, so machine noise hits all alike; the figures are medians.

It also measures, in the same run, the machine's float32 matmul throughput (torch.mm of
1024- and 2048-square matrices, best of two each, sampled before every round and after
the last; the median is the reference, the best is printed too) and reports training
FLOP/s as a fraction of it: training FLOPs are counted
analytically as 3 x the forward pass (forward 2 x MACs, backward about twice that).
Centralized evaluation on the 10,000 test images (`make_evaluate_fn`) is timed
separately.

Run: python bench/simulation.py [--data-dir ../shared/data/mnist] [--rounds 5]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import federa as fd
from federa.data import load_mnist
from federa.simulation.vectorized import VectorizedExecutor
from federa.torch.arrays import module_to_arrays
from federa.torch.client import TorchClient, make_evaluate_fn
from federa.torch.models import build_model
from federa.torch.train import TrainConfig

EPOCHS, BATCH, LR = 1, 10, 0.05
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    model: str
    num_clients: int
    per_client: int
    per_round: int


WORKLOADS = {
    "mcmahan_2nn": Workload(model="mnist_2nn", num_clients=100, per_client=600, per_round=10),
    "mcmahan_cnn": Workload(model="mnist_cnn", num_clients=100, per_client=600, per_round=10),
    "1000x60_2nn": Workload(model="mnist_2nn", num_clients=1000, per_client=60, per_round=100),
}


def load_data(data_dir: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Return MNIST's training and test images and labels, or random tensors of that shape."""
    if (data_dir / "train-images-idx3-ubyte.gz").exists():
        split = load_mnist(data_dir)
        train, test = split.train, split.test
        return (
            torch.from_numpy(train.x),
            torch.from_numpy(train.y),
            torch.from_numpy(test.x),
            torch.from_numpy(test.y),
            str(data_dir),
        )
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(70_000, 1, 28, 28, generator=g), torch.randint(0, 10, (70_000,), generator=g)
    return x[:60_000], y[:60_000], x[60_000:], y[60_000:], f"random tensors ({data_dir} not found)"


def partitions(n: int, w: Workload) -> list[torch.Tensor]:
    order = np.random.default_rng(0).permutation(n)[: w.num_clients * w.per_client]
    return list(torch.from_numpy(order).view(w.num_clients, w.per_client))


def make_client(
    model_fn: Any, x: torch.Tensor, y: torch.Tensor, parts: list[torch.Tensor], cid: int
) -> TorchClient:
    idx = parts[cid]
    cfg = TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=LR)
    return TorchClient(model_fn, (x[idx], y[idx]), train_config=cfg)


class PlainLoop:
    """FedAvg written directly in PyTorch, the way a tutorial would, without federa."""

    def __init__(
        self,
        model_fn: Any,
        x: torch.Tensor,
        y: torch.Tensor,
        parts: list[torch.Tensor],
        w: Workload,
    ):
        self.model = model_fn()
        self.global_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.x, self.y, self.parts, self.w = x, y, parts, w
        self.rng = np.random.default_rng(1)

    def round(self) -> None:
        cohort = self.rng.choice(self.w.num_clients, size=self.w.per_round, replace=False)
        states, sizes = [], []
        for cid in sorted(cohort):
            xs, ys = self.x[self.parts[cid]], self.y[self.parts[cid]]
            self.model.load_state_dict(self.global_state)
            self.model.train()
            opt = torch.optim.SGD(self.model.parameters(), lr=LR)
            for _ in range(EPOCHS):
                order = torch.randperm(len(xs))
                for start in range(0, len(xs), BATCH):
                    idx = order[start : start + BATCH]
                    loss = F.cross_entropy(self.model(xs[idx]), ys[idx])
                    opt.zero_grad()
                    loss.backward()  # type: ignore[no-untyped-call]
                    opt.step()
            states.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
            sizes.append(len(xs))
        total = sum(sizes)
        self.global_state = {
            k: sum(s[k] * (n / total) for s, n in zip(states, sizes, strict=True))
            for k in self.global_state
        }


def forward_flops(model: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Return 2 x the multiply-accumulates of one example's forward pass (Linear and Conv2d)."""
    macs = 0

    def count(module: nn.Module, _: Any, out: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features
        elif isinstance(module, nn.Conv2d):
            kernel = math.prod(module.kernel_size) * module.in_channels // module.groups
            macs += out[0].numel() * kernel

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model(torch.zeros(1, *in_shape))
    for h in hooks:
        h.remove()
    return 2 * macs


def matmul_flops_per_s(repeats: int = 5) -> float:
    """Return the best float32 torch.mm throughput on this machine (1024 and 2048 squares)."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        a @ b
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def median_s(times: list[float]) -> float:
    return round(statistics.median(times), 4)


SIDES = ("plain", "per_client", "vectorized")


def side_worker(
    conn: Connection,
    side: str,
    workload: str,
    data_dir: Path,
    chunk_size: int | None,
    threads: int | None,
) -> None:
    """Build one side of one workload, then run a round for every round number received."""
    if threads is not None:
        torch.set_num_threads(threads)
    w = WORKLOADS[workload]
    x, y, *_ = load_data(data_dir)
    model_fn = functools.partial(build_model, w.model, (1, 28, 28), 10)
    parts = partitions(len(x), w)
    torch.manual_seed(0)
    initial = module_to_arrays(model_fn())
    if side == "plain":
        plain = PlainLoop(model_fn, x, y, parts, w)
        run: Any = lambda r: plain.round()  # noqa: E731
    else:
        client_fn = functools.partial(make_client, model_fn, x, y, parts)
        strategy = fd.FedAvg(fraction_train=w.per_round / w.num_clients, min_train_clients=1)
        executor = None
        if side == "vectorized":
            executor = (
                VectorizedExecutor() if chunk_size is None else VectorizedExecutor(chunk_size)
            )
        run = lambda r: fd.simulate(  # noqa: E731
            client_fn,
            strategy,
            num_clients=w.num_clients,
            num_rounds=1,
            initial=initial,
            seed=r,
            executor=executor,
        )
    conn.send("ready")
    while (r := conn.recv()) is not None:
        start = time.perf_counter()
        run(r)
        conn.send(time.perf_counter() - start)


def measure(
    name: str, data_dir: Path, rounds: int, chunk_size: int | None, threads: int | None
) -> dict[str, Any]:
    w = WORKLOADS[name]
    model_fn = functools.partial(build_model, w.model, (1, 28, 28), 10)
    context = multiprocessing.get_context("spawn")
    workers: dict[str, tuple[Any, Connection]] = {}
    for side in SIDES:
        parent, child = context.Pipe()
        args = (child, side, name, data_dir, chunk_size, threads)
        process = context.Process(target=side_worker, args=args, daemon=True)
        process.start()
        workers[side] = (process, parent)
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    peaks: list[float] = []
    try:
        for _, conn in workers.values():
            assert conn.recv() == "ready"
        for r in range(rounds + 1):  # round 0 warms up allocators and kernels
            # The matmul throughput is sampled between rounds (the sides wait meanwhile),
            # so it sees the same machine (and the same noise) as the rounds do.
            peaks.append(matmul_flops_per_s(repeats=2))
            for side, (_, conn) in workers.items():
                conn.send(r)
                elapsed = conn.recv()
                if r:
                    times[side].append(elapsed)
        peaks.append(matmul_flops_per_s(repeats=2))
    finally:
        for process, conn in workers.values():
            if process.is_alive():
                conn.send(None)
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    peak = statistics.median(peaks)
    s = {side: median_s(t) for side, t in times.items()}
    train_flops = 3 * forward_flops(model_fn(), (1, 28, 28)) * w.per_round * w.per_client * EPOCHS
    return {
        "s_per_round": s,
        "s_per_round_all": {side: [round(t, 4) for t in ts] for side, ts in times.items()},
        "vectorized_speedup_vs_plain": round(s["plain"] / s["vectorized"], 2),
        "per_client_over_plain": round(s["per_client"] / s["plain"], 3),
        "train_gflop_per_round": round(train_flops / 1e9, 1),
        "matmul_gflop_per_s": round(peak / 1e9, 1),
        "matmul_gflop_per_s_best": round(max(peaks) / 1e9, 1),
        "flops_fraction_of_matmul": {
            name: round(train_flops / t / peak, 3) for name, t in s.items()
        },
    }


def measure_eval(model: str, test: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    model_fn = functools.partial(build_model, model, (1, 28, 28), 10)
    torch.manual_seed(0)
    arrays = module_to_arrays(model_fn())
    evaluate_fn = make_evaluate_fn(model_fn, test)
    evaluate_fn(0, arrays)
    peak = matmul_flops_per_s()
    times = []
    for r in range(3):
        start = time.perf_counter()
        evaluate_fn(r, arrays)
        times.append(time.perf_counter() - start)
    s = statistics.median(times)
    peak = max(peak, matmul_flops_per_s())
    flops = forward_flops(model_fn(), (1, 28, 28)) * len(test[0])
    return {
        "s": round(s, 4),
        "images_per_s": round(len(test[0]) / s),
        "matmul_gflop_per_s": round(peak / 1e9, 1),
        "flops_fraction_of_matmul": round(flops / s / peak, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per workload")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--chunk-size", type=int, default=None, help="vectorized chunk size")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = args.workloads.split(",")
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        parser.error(
            f"unknown workload(s) {', '.join(unknown)}: choose from {', '.join(WORKLOADS)}"
        )
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    results = {
        n: measure(n, args.data_dir, args.rounds, args.chunk_size, args.threads) for n in names
    }
    _, _, test_x, test_y, source = load_data(args.data_dir)
    models = sorted({WORKLOADS[n].model for n in names})
    evaluation = {m: measure_eval(m, (test_x, test_y)) for m in models}
    print(
        json.dumps(
            {
                "bench": "simulation",
                "workloads": {n: asdict(WORKLOADS[n]) for n in names}
                | {"all": f"E={EPOCHS}, B={BATCH}, SGD lr={LR}"},
                "data": source,
                "torch_threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "rounds_measured": args.rounds,
                "results": results,
                "centralized_eval_10k": evaluation,
                "goals": "vectorized_speedup_vs_plain >= 3 (2NN), >= 1.2 (CNN); CNN vectorized "
                "flops_fraction_of_matmul >= 0.75; per_client_over_plain <= 1.10",
            }
        )
    )


if __name__ == "__main__":
    main()
