"""Chains of dense layers are stepped by hand, and give what the one-at-a-time loop gives."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from federa.torch import TrainConfig, arrays_to_module, module_to_arrays, train, train_cohort
from federa.torch._mlp import DenseChain, DenseLayer, dense_chain
from federa.torch.models import build_model
from federa.torch.vectorized import _plan
from tests.torch.test_vectorized import CONFIGS, SEEDS, SIZES, TOLERANCE, cohort_data


class FunctionalMLP(nn.Module):
    """torch.flatten and F.relu as functions, a layer without bias, ReLU on the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(36, 12, bias=False)
        self.out = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.out(F.relu(self.hidden(torch.flatten(x, 1)))))


class Residual(nn.Module):
    """Not a chain: the input of the second layer is used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(36, 36)
        self.b = nn.Linear(36, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(x, 1)
        return self.b(self.a(h) + h)


def mnist_2nn() -> nn.Module:
    return build_model("mnist_2nn", (1, 6, 6), 4)


def frozen_first_layer() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 10), nn.ReLU(), nn.Linear(10, 4))
    for p in model[1].parameters():
        p.requires_grad_(False)
    return model


def chain_of(model: nn.Module) -> tuple[DenseLayer, ...] | None:
    chain = dense_chain(torch.fx.symbolic_trace(model))
    return None if chain is None else chain.layers


def test_dense_chains_are_recognised_and_other_models_are_not() -> None:
    assert chain_of(mnist_2nn()) == (
        DenseLayer(weight="layers.0.weight", bias="layers.0.bias", relu=True),
        DenseLayer(weight="layers.2.weight", bias="layers.2.bias", relu=True),
        DenseLayer(weight="layers.4.weight", bias="layers.4.bias", relu=False),
    )
    assert chain_of(FunctionalMLP()) == (
        DenseLayer(weight="hidden.weight", bias=None, relu=True),
        DenseLayer(weight="out.weight", bias="out.bias", relu=True),
    )
    assert chain_of(Residual()) is None
    assert chain_of(build_model("mnist_cnn", (1, 6, 6), 4)) is None
    assert chain_of(nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.Dropout(0.2))) is None
    assert chain_of(nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.Tanh())) is None
    assert chain_of(nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(36, 8))) is None
    assert chain_of(nn.Sequential(nn.Flatten(2), nn.Linear(6, 8))) is None
    assert _plan(mnist_2nn()).dense is not None  # type: ignore[union-attr]  # a plan, not a reason


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize(
    "build", [mnist_2nn, FunctionalMLP, frozen_first_layer], ids=["2nn", "functional", "frozen"]
)
def test_dense_chain_matches_one_at_a_time_loop(
    build: Callable[[], nn.Module], cfg: TrainConfig
) -> None:
    torch.manual_seed(0)
    model = build()
    start = [module_to_arrays(model)] * len(SIZES)
    data = cohort_data()
    got = train_cohort(model, start, data, cfg, SEEDS)
    for arrays, (x, y), seed, (trained, metrics) in zip(start, data, SEEDS, got, strict=True):
        arrays_to_module(model, arrays)
        want = train(model, x, y, cfg, seed)
        want_arrays = module_to_arrays(model)
        for name in want_arrays:
            np.testing.assert_allclose(trained[name], want_arrays[name], rtol=0, atol=TOLERANCE)
        assert metrics["accuracy"] == want["accuracy"]
        assert metrics["num_steps"] == want["num_steps"]
        assert metrics["loss"] == pytest.approx(want["loss"], rel=TOLERANCE)
    if build is frozen_first_layer:  # the frozen layer stays, the other one trains
        for (trained, _), n in zip(got, SIZES, strict=True):
            np.testing.assert_array_equal(trained["1.weight"], start[0]["1.weight"])
            assert np.array_equal(trained["3.weight"], start[0]["3.weight"]) == (n == 0)


def test_chain_without_flatten_trains_vector_examples_by_hand() -> None:
    torch.manual_seed(0)
    tabular = nn.Sequential(nn.Linear(36, 10), nn.ReLU(), nn.Linear(10, 4))
    assert dense_chain(torch.fx.symbolic_trace(tabular)) == DenseChain(
        layers=(
            DenseLayer(weight="0.weight", bias="0.bias", relu=True),
            DenseLayer(weight="2.weight", bias="2.bias", relu=False),
        ),
        flattens=False,
    )
    cfg = CONFIGS["sgd_momentum_weight_decay"]
    data = [(x.reshape(len(x), 36), y) for x, y in cohort_data()]
    start = [module_to_arrays(tabular)] * len(SIZES)
    got = train_cohort(tabular, start, data, cfg, SEEDS)
    for arrays, (x, y), seed, (trained, _) in zip(start, data, SEEDS, got, strict=True):
        arrays_to_module(tabular, arrays)
        train(tabular, x, y, cfg, seed)
        for name, want in module_to_arrays(tabular).items():
            np.testing.assert_allclose(trained[name], want, rtol=0, atol=TOLERANCE)
