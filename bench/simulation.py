"""Seconds per round of McMahan et al.'s MNIST workload: federa against a plain PyTorch loop.

Workload (McMahan et al. 2017, section 3): 100 clients x 600 examples (IID), C = 0.1
(10 clients per round), E = 1 local epoch, B = 10, SGD, for the 2NN and the CNN. Both
sides do the same work per round: load the global weights into a model, run one
epoch of minibatch SGD on each sampled client's 600 examples, and average the results
weighted by example count. Rounds of the two sides are interleaved so machine noise
hits both alike; the figure is the median seconds per round.

Run: python bench/simulation.py [--data-dir ../shared/data/mnist] [--rounds 4]
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

import federa as fd
from federa.data import load_mnist
from federa.torch.arrays import module_to_arrays
from federa.torch.client import TorchClient
from federa.torch.models import build_model
from federa.torch.train import TrainConfig

NUM_CLIENTS, PER_CLIENT, FRACTION, EPOCHS, BATCH, LR = 100, 600, 0.1, 1, 10, 0.05
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def load_data(data_dir: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Return the 60,000 MNIST training images, or random tensors of that shape."""
    if (data_dir / "train-images-idx3-ubyte.gz").exists():
        split = load_mnist(data_dir)
        return torch.from_numpy(split.train.x), torch.from_numpy(split.train.y), str(data_dir)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(NUM_CLIENTS * PER_CLIENT, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (NUM_CLIENTS * PER_CLIENT,), generator=g)
    return x, y, f"random tensors ({data_dir} not found)"


def partitions(n: int) -> list[torch.Tensor]:
    order = torch.from_numpy(np.random.default_rng(0).permutation(n)[: NUM_CLIENTS * PER_CLIENT])
    return list(order.view(NUM_CLIENTS, PER_CLIENT))


def make_client(
    model_fn: Any, x: torch.Tensor, y: torch.Tensor, parts: list[torch.Tensor], cid: int
) -> TorchClient:
    idx = parts[cid]
    cfg = TrainConfig(epochs=EPOCHS, batch_size=BATCH, lr=LR)
    return TorchClient(model_fn, (x[idx], y[idx]), train_config=cfg)


class PlainLoop:
    """FedAvg written directly in PyTorch, the way a tutorial would, without federa."""

    def __init__(self, model_fn: Any, x: torch.Tensor, y: torch.Tensor, parts: list[torch.Tensor]):
        self.model = model_fn()
        self.global_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.x, self.y, self.parts = x, y, parts
        self.rng = np.random.default_rng(1)

    def round(self) -> None:
        cohort = self.rng.choice(NUM_CLIENTS, size=int(FRACTION * NUM_CLIENTS), replace=False)
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


def measure(model_name: str, x: torch.Tensor, y: torch.Tensor, rounds: int) -> dict[str, float]:
    model_fn = functools.partial(build_model, model_name, (1, 28, 28), 10)
    parts = partitions(len(x))
    torch.manual_seed(0)
    initial = module_to_arrays(model_fn())
    client_fn = functools.partial(make_client, model_fn, x, y, parts)
    strategy = fd.FedAvg(fraction_train=FRACTION, min_train_clients=1)
    plain = PlainLoop(model_fn, x, y, parts)
    federa_times: list[float] = []
    plain_times: list[float] = []
    # Warm-up round for each side (allocator, kernels), then interleave measured rounds.
    plain.round()
    fd.simulate(client_fn, strategy, num_clients=NUM_CLIENTS, num_rounds=1, initial=initial)
    for r in range(rounds):
        start = time.perf_counter()
        plain.round()
        plain_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        fd.simulate(
            client_fn, strategy, num_clients=NUM_CLIENTS, num_rounds=1, initial=initial, seed=r
        )
        federa_times.append(time.perf_counter() - start)
    federa_s = statistics.median(federa_times)
    plain_s = statistics.median(plain_times)
    return {
        "federa_s_per_round": round(federa_s, 4),
        "plain_s_per_round": round(plain_s, 4),
        "ratio": round(federa_s / plain_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per model")
    parser.add_argument("--models", default="mnist_2nn,mnist_cnn")
    args = parser.parse_args()
    x, y, source = load_data(args.data_dir)
    results = {name: measure(name, x, y, args.rounds) for name in args.models.split(",")}
    print(
        json.dumps(
            {
                "bench": "simulation",
                "workload": "McMahan MNIST: 100 clients x 600, C=0.1, E=1, B=10, SGD",
                "data": source,
                "torch_threads": torch.get_num_threads(),
                "machine": platform.machine(),
                "rounds_measured": args.rounds,
                "results": results,
                "goal": "ratio <= 1.10",
            }
        )
    )


if __name__ == "__main__":
    main()
