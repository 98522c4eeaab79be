"""The first dense layer under plain SGD, written once per window, gives the loop's result."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import federa as fd
from federa.torch import (
    TrainConfig,
    _lazy_dense,
    arrays_to_module,
    module_to_arrays,
    train,
    train_cohort,
)
from tests.torch.test_vectorized import SEEDS, SIZES, TOLERANCE, cohort_data
from tests.torch.test_vectorized_dense import FunctionalMLP, mnist_2nn

PLAIN = {
    "sgd": TrainConfig(epochs=2, batch_size=5, lr=0.1),
    "sgd_weight_decay": TrainConfig(epochs=2, batch_size=4, lr=0.1, weight_decay=0.05),
    "sgd_one_epoch_big_batch": TrainConfig(epochs=1, batch_size=16, lr=0.2),
}


def tabular() -> nn.Module:
    return nn.Sequential(nn.Linear(36, 10), nn.ReLU(), nn.Linear(10, 4))


def one_at_a_time(
    model: nn.Module,
    start: list[fd.Arrays],
    data: list[tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
) -> list[tuple[fd.Arrays, dict[str, float]]]:
    out = []
    for arrays, (x, y), seed in zip(start, data, SEEDS, strict=True):
        arrays_to_module(model, arrays)
        metrics = train(model, x, y, cfg, seed)
        out.append((module_to_arrays(model), metrics))
    return out


class Spy:
    """Counts the windows LazyFirstLayer opens."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.windows = 0
        opened = _lazy_dense.LazyFirstLayer._open

        def count(layer: _lazy_dense.LazyFirstLayer, step: int, m: int) -> None:
            self.windows += 1
            opened(layer, step, m)

        monkeypatch.setattr(_lazy_dense.LazyFirstLayer, "_open", count)


@pytest.mark.parametrize("window_rows", [64, 12, 8], ids=["window64", "window12", "window8"])
@pytest.mark.parametrize("cfg", PLAIN.values(), ids=PLAIN.keys())
@pytest.mark.parametrize(
    ("build", "shared"),
    [(mnist_2nn, True), (FunctionalMLP, True), (tabular, True), (mnist_2nn, False)],
    ids=["2nn", "functional", "tabular", "2nn_own_starts"],
)
def test_windowed_first_layer_matches_one_at_a_time_loop(
    build: Callable[[], nn.Module],
    shared: bool,
    cfg: TrainConfig,
    window_rows: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_lazy_dense, "WINDOW_ROWS", window_rows)
    spy = Spy(monkeypatch)
    torch.manual_seed(0)
    model = build()
    base = module_to_arrays(model)
    if shared:  # every client starts from the one global model (one product for all)
        start = [base] * len(SIZES)
    else:  # each client from its own arrays
        start = [
            fd.Arrays({k: v + np.float32(0.01 * i) for k, v in base.items()}) for i in range(6)
        ]
    data = cohort_data()
    if build is tabular:
        data = [(x.reshape(len(x), 36), y) for x, y in data]
    got = train_cohort(model, start, data, cfg, SEEDS)
    want = one_at_a_time(model, start, data, cfg)
    steps = [cfg.epochs * -(-n // cfg.batch_size) for n in SIZES]
    window = window_rows // cfg.batch_size
    if window >= 2:  # windows restart every `window` steps, up to the longest client's end
        assert spy.windows == -(-max(steps) // window)
    else:  # a window of one step saves nothing: the layer is updated every step
        assert spy.windows == 0
    results = zip(got, want, start, SIZES, strict=True)
    for (arrays, metrics), (want_arrays, want_metrics), arrays0, n in results:
        assert list(arrays) == list(want_arrays)
        for name in want_arrays:
            np.testing.assert_allclose(arrays[name], want_arrays[name], rtol=0, atol=TOLERANCE)
        assert metrics["num_steps"] == want_metrics["num_steps"]
        assert metrics["accuracy"] == want_metrics["accuracy"]
        assert metrics["loss"] == pytest.approx(want_metrics["loss"], rel=TOLERANCE)
        first = next(iter(arrays))  # the windowed weight moved iff the client had data
        assert np.array_equal(arrays[first], arrays0[first]) == (n == 0)


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
def test_other_optimizers_update_the_first_layer_every_step(
    cfg: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    model = mnist_2nn()
    train_cohort(model, [module_to_arrays(model)] * len(SIZES), cohort_data(), cfg, SEEDS)
    assert spy.windows == 0


def test_frozen_first_layer_is_not_windowed(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 10), nn.ReLU(), nn.Linear(10, 4))
    model[1].weight.requires_grad_(False)
    start = [module_to_arrays(model)] * len(SIZES)
    got = train_cohort(model, start, cohort_data(), PLAIN["sgd"], SEEDS)
    assert spy.windows == 0
    for arrays, _ in got:
        np.testing.assert_array_equal(arrays["1.weight"], start[0]["1.weight"])
