"""Invariants every strategy keeps (ARCHITECTURE.md rule 2), parametrised over all of them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import federa as fd
from federa.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from federa.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedNova,
    FedProx,
    FedTrimmedMean,
    FedYogi,
    Krum,
    MultiKrum,
    QFedAvg,
    Scaffold,
)
from federa.strategy.scaffold import CONTROL_PREFIX

N = 8
FACTORIES: dict[str, Callable[[], fd.Strategy]] = {
    "fedavg": lambda: FedAvg(min_train_clients=1),
    "fedprox": lambda: FedProx(proximal_mu=0.1, min_train_clients=1),
    "fedavgm": lambda: FedAvgM(server_lr=1.0, server_momentum=0.0, min_train_clients=1),
    "fedadam": lambda: FedAdam(min_train_clients=1),
    "fedyogi": lambda: FedYogi(min_train_clients=1),
    "fedadagrad": lambda: FedAdagrad(min_train_clients=1),
    "scaffold": lambda: Scaffold(min_train_clients=1),
    "fednova": lambda: FedNova(min_train_clients=1),
    "qfedavg": lambda: QFedAvg(min_train_clients=1),
    "krum": lambda: Krum(num_byzantine=1, min_train_clients=1),
    "multikrum": lambda: MultiKrum(num_byzantine=1, num_selected=3, min_train_clients=1),
    "bulyan": lambda: Bulyan(num_byzantine=1, min_train_clients=1),
    "median": lambda: FedMedian(min_train_clients=1),
    "trimmedmean": lambda: FedTrimmedMean(beta=0.2, min_train_clients=1),
}
# Rules that take a step other than "replace the model by the average": the identical-
# update property is checked on the update they apply.
STEPPED = {"fedadam", "fedyogi", "fedadagrad"}


def ctx(round_num: int = 1) -> fd.RoundContext:
    return fd.RoundContext(round_num=round_num, rng=np.random.default_rng(round_num), seed=0)


def global_arrays() -> fd.Arrays:
    return fd.Arrays({"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)})


def result_for(task: fd.TrainTask, update: float, n: int = 10) -> fd.TrainResult:
    arrays = {}
    for name, value in task.arrays.items():
        if name.startswith(CONTROL_PREFIX):
            arrays[name] = np.zeros_like(value)
        else:
            arrays[name] = (value + update).astype(value.dtype)
    metrics = {"loss": 1.0, "num_steps": 5.0, "initial_loss": 2.0}
    return fd.TrainResult(arrays=fd.Arrays(arrays), num_examples=n, metrics=metrics)


def run_round(
    strategy: fd.Strategy, update: Callable[[int], float]
) -> tuple[fd.Arrays | None, Any]:
    arrays = global_arrays()
    tasks = strategy.configure_train(ctx(), arrays, range(N))
    results = [(t.client_id, result_for(t, update(t.client_id))) for t in tasks]
    return strategy.aggregate_train(ctx(), arrays, results, [])


@pytest.mark.parametrize("name", FACTORIES)
@settings(max_examples=15, deadline=None)
@given(value=st.floats(-2.0, 2.0, allow_nan=False).filter(lambda v: abs(v) > 1e-3))
def test_identical_updates_aggregate_to_that_update(name: str, value: float) -> None:
    strategy = FACTORIES[name]()
    new, _ = run_round(strategy, lambda cid: value)
    assert new is not None
    if name in STEPPED:
        # Adaptive rules move along the update's sign: x + lr * m / (sqrt(v) + tau).
        assert np.all(np.sign(new["w"]) == np.sign(value))
    elif name == "qfedavg":
        # q-FedAvg rescales the step by L and h_k; the direction is the update's.
        assert np.all(np.sign(new["w"]) == np.sign(value))
    else:
        np.testing.assert_allclose(new["w"], np.full((2, 3), value, np.float32), rtol=1e-5)


@pytest.mark.parametrize("name", FACTORIES)
def test_aggregation_never_mutates_its_inputs(name: str) -> None:
    strategy = FACTORIES[name]()
    arrays = global_arrays()
    tasks = strategy.configure_train(ctx(), arrays, range(N))
    results = [(t.client_id, result_for(t, 0.1 * t.client_id)) for t in tasks]
    before = [r.arrays.copy() for _, r in results]
    arrays_before = arrays.copy()
    strategy.aggregate_train(ctx(), arrays, results, [])
    assert all(r.arrays == b for (_, r), b in zip(results, before, strict=True))
    assert arrays == arrays_before


@pytest.mark.parametrize("name", FACTORIES)
def test_non_finite_updates_are_ignored(name: str) -> None:
    strategy = FACTORIES[name]()
    arrays = global_arrays()
    tasks = strategy.configure_train(ctx(), arrays, range(N))
    results = [(t.client_id, result_for(t, 0.5)) for t in tasks]
    poisoned = dict(results[0][1].arrays)
    poisoned["w"] = np.full((2, 3), np.nan, np.float32)
    results[0] = (
        results[0][0],
        fd.TrainResult(arrays=fd.Arrays(poisoned), num_examples=10, metrics=results[0][1].metrics),
    )
    new, _ = strategy.aggregate_train(ctx(), arrays, results, [])
    assert new is not None
    assert new.is_finite()


@pytest.mark.parametrize("name", FACTORIES)
def test_state_dict_survives_a_checkpoint_and_resumes_identically(name: str, tmp_path: Any) -> None:
    first = FACTORIES[name]()
    run_round(first, lambda cid: 0.1 * (cid + 1))
    save_checkpoint(
        tmp_path,
        Checkpoint(
            round_num=1,
            arrays=global_arrays(),
            strategy_state=first.state_dict(),
            history=fd.History(),
            seed=0,
            run_id="x",
            config={},
        ),
    )
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    second = FACTORIES[name]()
    second.load_state_dict(loaded.strategy_state)
    a, _ = run_round(first, lambda cid: 0.2)
    b, _ = run_round(second, lambda cid: 0.2)
    assert a == b


@pytest.mark.parametrize("name", FACTORIES)
def test_sampling_uses_only_the_given_generator(name: str) -> None:
    np.random.seed(1)
    a = [t.client_id for t in FACTORIES[name]().configure_train(ctx(3), global_arrays(), range(50))]
    np.random.seed(2)
    b = [t.client_id for t in FACTORIES[name]().configure_train(ctx(3), global_arrays(), range(50))]
    assert a == b
