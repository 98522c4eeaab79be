"""Clients for simulation tests; module-level so worker processes can import them."""

from __future__ import annotations

import functools

import numpy as np
import torch

import federa as fd
from federa.torch.arrays import module_to_arrays
from federa.torch.client import TorchClient
from federa.torch.train import TrainConfig


class LinearClient(fd.Client):
    """Least-squares regression trained with seeded minibatch SGD in numpy."""

    def __init__(self, cid: int, fail_ids: frozenset[int] = frozenset()) -> None:
        rng = np.random.default_rng(1000 + cid)
        self.cid = cid
        self.x = rng.normal(size=(20 + cid, 3))
        self.y = self.x @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=20 + cid)
        self.fail_ids = fail_ids

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        if self.cid in self.fail_ids:
            raise RuntimeError(f"client {self.cid} ran out of battery")
        w = arrays["w"].copy()
        rng = np.random.default_rng(int(config["seed"]))
        for i in rng.permutation(len(self.x)):
            w -= 0.05 * (self.x[i] @ w - self.y[i]) * self.x[i]
        loss = float(np.mean((self.x @ w - self.y) ** 2))
        return fd.TrainResult(
            arrays=fd.Arrays({"w": w}), num_examples=len(self.x), metrics={"loss": loss}
        )

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        loss = float(np.mean((self.x @ arrays["w"] - self.y) ** 2))
        return fd.EvalResult(loss=loss, num_examples=len(self.x))


def linear_client(cid: int) -> LinearClient:
    return LinearClient(cid)


def flaky_client(cid: int) -> LinearClient:
    return LinearClient(cid, fail_ids=frozenset({3}))


def tiny_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(16, 8),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(8, 3),
    )


def torch_client(cid: int) -> TorchClient:
    g = torch.Generator().manual_seed(cid)
    x = torch.randn(30 + 5 * cid, 1, 4, 4, generator=g)
    y = (x.flatten(1).sum(1) > 0).long() + (x[:, 0, 0, 0] > 1).long()
    return TorchClient(
        tiny_model, (x, y), train_config=TrainConfig(batch_size=8, lr=0.1, momentum=0.9)
    )


def torch_initial() -> fd.Arrays:
    torch.manual_seed(0)
    return module_to_arrays(tiny_model())


linear_client_partial = functools.partial(LinearClient, fail_ids=frozenset())
