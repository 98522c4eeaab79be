"""The vectorized executor trains augmented clients one at a time, as the serial executor."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import federa as fd
from federa.core.messages import TrainTask
from federa.simulation import SerialExecutor
from federa.simulation.vectorized import VectorizedExecutor
from federa.torch.arrays import module_to_arrays
from federa.torch.client import TorchClient
from federa.torch.train import TrainConfig


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 5, stride=4), nn.Flatten(), nn.Linear(72, 3))


def client_fn(cid: int) -> fd.Client:
    g = torch.Generator().manual_seed(cid)
    x = torch.rand(10 + 3 * cid, 1, 28, 28, generator=g)
    y = torch.randint(3, (len(x),), generator=g)
    return TorchClient(cnn, (x, y), train_config=TrainConfig(batch_size=4, lr=0.05))


def test_augmented_clients_fall_back_per_client_and_match_serial(
    caplog: pytest.LogCaptureFixture,
) -> None:
    torch.manual_seed(0)
    arrays = module_to_arrays(cnn())
    tasks = [
        TrainTask(round_num=1, client_id=c, arrays=arrays, config={"augment": True}, seed=c)
        for c in range(3)
    ]
    with caplog.at_level(logging.WARNING, logger="federa.simulation.vectorized"):
        got = list(VectorizedExecutor().run(client_fn, tasks))
    want = list(SerialExecutor().run(client_fn, tasks))
    assert got == want  # the per-client path, bit for bit
    assert "augmented minibatches are trained per client" in caplog.text
