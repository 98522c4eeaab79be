"""Dense weights written once per window of steps give the one-at-a-time loop's result."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import federa as fd
from federa.torch import (
    TrainConfig,
    _windowed,
    arrays_to_module,
    module_to_arrays,
    train,
    train_cohort,
    vectorized,
)
from tests.torch.test_vectorized import SEEDS, SIZES, TOLERANCE, cohort_data, conv_dropout_model
from tests.torch.test_vectorized_dense import FunctionalMLP, mnist_2nn

PLAIN = {
    "sgd": TrainConfig(epochs=2, batch_size=5, lr=0.1),
    "sgd_weight_decay": TrainConfig(epochs=2, batch_size=4, lr=0.1, weight_decay=0.05),
    "sgd_one_epoch_big_batch": TrainConfig(epochs=1, batch_size=16, lr=0.2),
}


def tabular() -> nn.Module:
    return nn.Sequential(nn.Linear(36, 10), nn.ReLU(), nn.Linear(10, 4))


class Spy:
    """Counts the windows that end (one per window and windowed weight)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.closed = 0
        close = _windowed.WindowedLinear._close

        def count(window: _windowed.WindowedLinear) -> None:
            self.closed += 1
            close(window)

        monkeypatch.setattr(_windowed.WindowedLinear, "_close", count)


def check_against_loop(
    build: Callable[[], nn.Module], cfg: TrainConfig, shared: bool, vector_examples: bool = False
) -> None:
    torch.manual_seed(0)
    model = build()
    base = module_to_arrays(model)
    if shared:  # every client starts from the one global model (one product for all)
        start = [base] * len(SIZES)
    else:  # each client from its own arrays
        start = [
            fd.Arrays({k: v + np.float32(0.01 * i) for k, v in base.items()})
            for i in range(len(SIZES))
        ]
    data = cohort_data()
    if vector_examples:
        data = [(x.reshape(len(x), 36), y) for x, y in data]
    got = train_cohort(model, start, data, cfg, SEEDS)
    for arrays0, (x, y), seed, (arrays, metrics), n in zip(
        start, data, SEEDS, got, SIZES, strict=True
    ):
        arrays_to_module(model, arrays0)
        want_metrics = train(model, x, y, cfg, seed)
        want = module_to_arrays(model)
        assert list(arrays) == list(want)
        for name in want:
            np.testing.assert_allclose(arrays[name], want[name], rtol=0, atol=TOLERANCE)
        assert metrics["num_steps"] == want_metrics["num_steps"]
        assert metrics["accuracy"] == want_metrics["accuracy"]
        assert metrics["loss"] == pytest.approx(want_metrics["loss"], rel=TOLERANCE)
        for name in want:  # every trained weight moved iff the client had data
            assert np.array_equal(arrays[name], arrays0[name]) == (n == 0)


def expected_windows(cfg: TrainConfig, window_rows: int) -> int:
    """Windows per windowed weight: they restart every L steps up to the longest client's end."""
    window = window_rows // cfg.batch_size
    steps = max(cfg.epochs * -(-n // cfg.batch_size) for n in SIZES)
    return -(-steps // window) if window >= 2 else 0


@pytest.mark.parametrize("window_rows", [64, 12, 8], ids=["window64", "window12", "window8"])
@pytest.mark.parametrize("cfg", PLAIN.values(), ids=PLAIN.keys())
@pytest.mark.parametrize(
    ("build", "shared", "large"),
    [
        (mnist_2nn, True, _windowed.LARGE),
        (mnist_2nn, True, 1),
        (mnist_2nn, False, 1),
        (FunctionalMLP, True, 1),
        (tabular, True, 1),
    ],
    ids=["2nn_first", "2nn_all", "2nn_all_own_starts", "functional_all", "tabular_all"],
)
def test_windowed_dense_chain_matches_one_at_a_time_loop(
    build: Callable[[], nn.Module],
    shared: bool,
    large: int,
    cfg: TrainConfig,
    window_rows: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A chain's first weight is windowed; with `large` = 1 all of its weights are."""
    monkeypatch.setattr(_windowed, "WINDOW_ROWS", window_rows)
    monkeypatch.setattr(vectorized, "LARGE", large)
    spy = Spy(monkeypatch)
    check_against_loop(build, cfg, shared, vector_examples=build is tabular)
    layers = sum(isinstance(m, nn.Linear) for m in build().modules()) if large == 1 else 1
    assert spy.closed == layers * expected_windows(cfg, window_rows)


@pytest.mark.parametrize("window_rows", [64, 8], ids=["window64", "window8"])
@pytest.mark.parametrize("cfg", PLAIN.values(), ids=PLAIN.keys())
@pytest.mark.parametrize("shared", [True, False], ids=["shared_start", "own_starts"])
def test_windowed_layers_of_a_convolutional_model_match_one_at_a_time_loop(
    shared: bool, cfg: TrainConfig, window_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dense layers after convolutions and dropout: inputs arrive step by step."""
    monkeypatch.setattr(_windowed, "WINDOW_ROWS", window_rows)
    monkeypatch.setattr(vectorized, "LARGE", 1)
    spy = Spy(monkeypatch)
    check_against_loop(conv_dropout_model, cfg, shared)
    assert spy.closed == 2 * expected_windows(cfg, window_rows)


def test_only_large_weights_of_a_convolutional_model_are_windowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = Spy(monkeypatch)
    model = conv_dropout_model()  # its dense layers have 432 and 64 weights
    windows = expected_windows(PLAIN["sgd"], _windowed.WINDOW_ROWS)
    for large, closed in ((_windowed.LARGE, 0), (65, windows), (64, 3 * windows)):
        monkeypatch.setattr(vectorized, "LARGE", large)
        start = [module_to_arrays(model)] * len(SIZES)
        train_cohort(model, start, cohort_data(), PLAIN["sgd"], SEEDS)
        assert spy.closed == closed


@pytest.mark.parametrize(
    "cfg",
    [
        TrainConfig(epochs=2, batch_size=5, lr=0.1, momentum=0.9),
        TrainConfig(epochs=2, batch_size=5, lr=0.1, proximal_mu=0.1),
        TrainConfig(epochs=2, batch_size=5, lr=0.01, optimizer="adam"),
        TrainConfig(epochs=2, batch_size=5, lr=0.5, weight_decay=1.0),
    ],
    ids=["momentum", "fedprox", "adam", "decay_halving_the_weight"],
)
def test_other_optimizers_update_weights_every_step(
    cfg: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vectorized, "LARGE", 1)
    spy = Spy(monkeypatch)
    model = mnist_2nn()
    train_cohort(model, [module_to_arrays(model)] * len(SIZES), cohort_data(), cfg, SEEDS)
    assert spy.closed == 0


def test_frozen_weights_are_not_windowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectorized, "LARGE", 1)
    spy = Spy(monkeypatch)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 10), nn.ReLU(), nn.Linear(10, 4))
    model[1].weight.requires_grad_(False)
    start = [module_to_arrays(model)] * len(SIZES)
    got = train_cohort(model, start, cohort_data(), PLAIN["sgd"], SEEDS)
    windows = expected_windows(PLAIN["sgd"], _windowed.WINDOW_ROWS)
    assert spy.closed == windows  # the last layer only
    for arrays, _ in got:
        np.testing.assert_array_equal(arrays["1.weight"], start[0]["1.weight"])


def test_windows_with_clients_doing_different_numbers_of_epochs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stragglers (fewer epochs) leave the stack mid-window; their weights stop there."""
    monkeypatch.setattr(vectorized, "LARGE", 1)
    spy = Spy(monkeypatch)
    cfg = PLAIN["sgd_weight_decay"]
    epochs = [3, 1, 2, 1, 2, 1]
    torch.manual_seed(0)
    model = mnist_2nn()
    start = [module_to_arrays(model)] * len(SIZES)
    data = cohort_data()
    got = train_cohort(model, start, data, cfg, SEEDS, epochs)
    assert spy.closed > 0
    for arrays0, (x, y), seed, e, (arrays, metrics) in zip(
        start, data, SEEDS, epochs, got, strict=True
    ):
        arrays_to_module(model, arrays0)
        want_metrics = train(model, x, y, replace(cfg, epochs=e), seed)
        for name, want in module_to_arrays(model).items():
            np.testing.assert_allclose(arrays[name], want, rtol=0, atol=TOLERANCE)
        assert metrics["num_steps"] == want_metrics["num_steps"]
