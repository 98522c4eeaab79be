"""The vectorized cohort trainer gives what the one-at-a-time train loop gives."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import federa as fd
from federa.torch import (
    TrainConfig,
    VectorizeError,
    arrays_to_module,
    module_to_arrays,
    train,
    train_cohort,
    vectorize_reason,
)
from federa.torch.models import build_model

# Unequal data: an empty client, sizes that do and do not divide the batch, one client
# with a single partial batch.
SIZES = (23, 7, 0, 16, 40, 3)
SEEDS = (11, 12, 13, 14, 15, 16)
TOLERANCE = 1e-5


def conv_dropout_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(3 * 3 * 3, 16),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(16, 4),
    )


def cohort_data(sizes: tuple[int, ...] = SIZES) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = []
    for i, n in enumerate(sizes):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(n, 1, 6, 6, generator=g)
        data.append((x, (x.mean((1, 2, 3)) > 0).long() + 2 * (x[:, 0, 0, 0] > 0.5).long()))
    return data


def one_at_a_time(
    start: list[fd.Arrays], data: list[tuple[torch.Tensor, torch.Tensor]], cfg: TrainConfig
) -> list[tuple[fd.Arrays, dict[str, float]]]:
    model = conv_dropout_model()
    out = []
    for arrays, (x, y), seed in zip(start, data, SEEDS, strict=True):
        arrays_to_module(model, arrays)
        metrics = train(model, x, y, cfg, seed)
        out.append((module_to_arrays(model), metrics))
    return out


def assert_same_results(
    got: list[tuple[fd.Arrays, dict[str, float]]],
    want: list[tuple[fd.Arrays, dict[str, float]]],
) -> None:
    assert len(got) == len(want)
    for (arrays, metrics), (ref_arrays, ref_metrics) in zip(got, want, strict=True):
        assert arrays.spec() == ref_arrays.spec()
        for name in ref_arrays:
            np.testing.assert_allclose(arrays[name], ref_arrays[name], rtol=0, atol=TOLERANCE)
        assert metrics.keys() == ref_metrics.keys()
        assert metrics["num_steps"] == ref_metrics["num_steps"]
        assert metrics["accuracy"] == ref_metrics["accuracy"]
        assert metrics["loss"] == pytest.approx(ref_metrics["loss"], rel=TOLERANCE)


CONFIGS = {
    "sgd": TrainConfig(epochs=2, batch_size=5, lr=0.1),
    "sgd_momentum_weight_decay": TrainConfig(
        epochs=2, batch_size=5, lr=0.05, momentum=0.9, weight_decay=0.01
    ),
    "sgd_fedprox": TrainConfig(epochs=2, batch_size=4, lr=0.1, momentum=0.5, proximal_mu=0.5),
    "adam_weight_decay": TrainConfig(
        epochs=2, batch_size=5, lr=0.01, optimizer="adam", weight_decay=0.01
    ),
    "adam_fedprox": TrainConfig(epochs=3, batch_size=4, lr=0.01, optimizer="adam", proximal_mu=1.0),
}


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_cohort_matches_one_at_a_time_loop_with_unequal_data(cfg: TrainConfig) -> None:
    model = conv_dropout_model()
    start = [module_to_arrays(model)] * len(SIZES)
    data = cohort_data()
    got = train_cohort(model, start, data, cfg, SEEDS)
    want = one_at_a_time(start, data, cfg)
    assert_same_results(got, want)
    # Training moved every client with data, and left the empty one where it started.
    for (arrays, _), n in zip(got, SIZES, strict=True):
        moved = not arrays.equals(start[0])
        assert moved == (n > 0)


@pytest.mark.parametrize("name", ["sgd_fedprox", "adam_weight_decay"])
def test_clients_with_fewer_epochs_match_their_own_loop(name: str) -> None:
    # Stragglers doing partial work (FedProx, Li et al. 2020) train in the same stack.
    epochs = (1, 3, 2, 2, 1, 3)
    model = conv_dropout_model()
    start = [module_to_arrays(model)] * len(SIZES)
    data = cohort_data()
    got = train_cohort(model, start, data, CONFIGS[name], SEEDS, epochs)
    model = conv_dropout_model()
    want = []
    for arrays, (x, y), seed, e in zip(start, data, SEEDS, epochs, strict=True):
        arrays_to_module(model, arrays)
        metrics = train(model, x, y, replace(CONFIGS[name], epochs=e), seed)
        want.append((module_to_arrays(model), metrics))
    assert_same_results(got, want)
    with pytest.raises(VectorizeError, match="epoch counts"):
        train_cohort(model, start, data, CONFIGS[name], SEEDS, epochs[:2])


def test_cohort_starts_each_client_from_its_own_arrays() -> None:
    model = conv_dropout_model()
    base = module_to_arrays(model)
    start = [
        fd.Arrays({k: v + np.float32(0.01 * i) for k, v in base.items()}) for i in range(len(SIZES))
    ]
    cfg = CONFIGS["sgd_momentum_weight_decay"]
    data = cohort_data()
    assert_same_results(
        train_cohort(model, start, data, cfg, SEEDS), one_at_a_time(start, data, cfg)
    )


def test_dropout_masks_follow_each_clients_seed() -> None:
    model = conv_dropout_model()
    start = [module_to_arrays(model)] * 2
    x, y = cohort_data((20,))[0]
    cfg = TrainConfig(batch_size=5, lr=0.1)
    same = train_cohort(model, start, [(x, y), (x, y)], cfg, [1, 1])
    other = train_cohort(model, start, [(x, y), (x, y)], cfg, [1, 2])
    assert same[0][0].equals(same[1][0])
    assert not other[0][0].equals(other[1][0])


def test_cohort_training_leaves_model_and_global_rng_alone() -> None:
    model = conv_dropout_model()
    before = module_to_arrays(model)
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    train_cohort(model, [before] * len(SIZES), cohort_data(), CONFIGS["sgd"], SEEDS)
    assert torch.equal(torch.rand(4), expected)
    assert module_to_arrays(model).equals(before)


def test_batch_norm_model_is_refused_with_the_reason() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(32, 4))
    reason = vectorize_reason(model)
    assert reason is not None and "batch" in reason
    with pytest.raises(VectorizeError, match="cannot vectorize"):
        train_cohort(model, [module_to_arrays(model)], cohort_data((8,)), CONFIGS["sgd"], [0])


def test_supported_model_has_no_reason_and_empty_cohort_trains_nothing() -> None:
    model = conv_dropout_model()
    assert vectorize_reason(model) is None
    assert train_cohort(model, [], [], CONFIGS["sgd"], []) == []


def test_clients_with_differently_shaped_examples_are_refused() -> None:
    model = conv_dropout_model()
    start = [module_to_arrays(model)] * 2
    data = [cohort_data((4,))[0], (torch.zeros(4, 1, 5, 5), torch.zeros(4, dtype=torch.long))]
    with pytest.raises(VectorizeError, match="different shapes"):
        train_cohort(model, start, data, CONFIGS["sgd"], [0, 1])


class FunctionalNet(nn.Module):
    """Element-wise functions (not modules) after a convolution, and a residual sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 6 * 6, 8)
        self.out = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.conv(x))
        h = F.relu(h) + 0.5 * h
        h = torch.flatten(h, 1)
        return self.out(F.gelu(self.fc(h)))


@pytest.mark.parametrize(
    "build",
    [
        FunctionalNet,
        lambda: build_model("mnist_cnn", (1, 6, 6), 4),
        lambda: build_model("mnist_2nn", (1, 6, 6), 4),
        lambda: build_model("symbol_cnn", (1, 6, 6), 4),
    ],
    ids=["functional", "mnist_cnn", "mnist_2nn", "symbol_cnn"],
)
def test_shipped_and_functional_models_match_one_at_a_time(build: Any) -> None:
    torch.manual_seed(0)
    model = build()
    cfg = TrainConfig(epochs=1, batch_size=5, lr=0.05, momentum=0.9)
    start = [module_to_arrays(model)] * len(SIZES)
    data = cohort_data()
    got = train_cohort(model, start, data, cfg, SEEDS)
    want = []
    for arrays, (x, y), seed in zip(start, data, SEEDS, strict=True):
        arrays_to_module(model, arrays)
        metrics = train(model, x, y, cfg, seed)
        want.append((module_to_arrays(model), metrics))
    assert_same_results(got, want)
