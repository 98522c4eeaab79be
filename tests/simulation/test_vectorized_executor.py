"""VectorizedExecutor: the per-client results, computed a cohort at a time."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import federa as fd
from federa.core.messages import EvalTask, Failure, Task, TaskResult, TrainResult, TrainTask
from federa.errors import ConfigError
from federa.simulation import SerialExecutor, make_executor, vectorized
from federa.simulation.heterogeneity import Heterogeneity
from federa.simulation.vectorized import VectorizedExecutor
from federa.strategy.fedprox import FedProx
from federa.torch.arrays import module_to_arrays
from federa.torch.client import TorchClient
from federa.torch.train import TrainConfig
from tests.simulation.clients import LinearClient

TOLERANCE = 1e-5
LOGGER = "federa.simulation.vectorized"


def dropout_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 3)
    )


def batch_norm_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))


class NoisyNet(nn.Module):
    """Draws random numbers outside nn.Dropout, which vmap refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.flatten(x, 1)
        return self.fc(h + 0.01 * torch.randn_like(h))


def client_data(cid: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(cid)
    x = torch.randn(9 + 7 * cid, 1, 4, 4, generator=g)  # unequal sizes: 9, 16, 23, ...
    return x, (x.flatten(1).sum(1) > 0).long() + (x[:, 0, 0, 0] > 1).long()


CFG = TrainConfig(epochs=2, batch_size=5, lr=0.1, momentum=0.9)


def mlp_client(cid: int) -> TorchClient:
    return TorchClient(dropout_mlp, client_data(cid), train_config=CFG)


def adam_client(cid: int) -> TorchClient:
    cfg = TrainConfig(batch_size=4, lr=0.01, optimizer="adam", weight_decay=0.01)
    return TorchClient(dropout_mlp, client_data(cid), train_config=cfg)


def mixed_client(cid: int) -> fd.Client:
    if cid == 0:
        return LinearClient(cid)
    if cid == 1:
        return TorchClient(batch_norm_net, client_data(cid), train_config=CFG)
    return mlp_client(cid)


def initial(model_fn: type[nn.Module] | object = dropout_mlp) -> fd.Arrays:
    torch.manual_seed(0)
    return module_to_arrays(model_fn())  # type: ignore[operator]  # a model builder


def train_tasks(arrays: fd.Arrays, n: int, config: fd.Config | None = None) -> list[Task]:
    return [
        TrainTask(round_num=1, client_id=cid, arrays=arrays, config=config or {}, seed=100 + cid)
        for cid in range(n)
    ]


def assert_same(got: TaskResult, want: TaskResult) -> None:
    assert type(got) is type(want)
    if not isinstance(want, TrainResult):
        assert got == want
        return
    assert isinstance(got, TrainResult)
    assert got.num_examples == want.num_examples
    assert got.state == want.state
    assert got.arrays.spec() == want.arrays.spec()
    for name in want.arrays:
        np.testing.assert_allclose(got.arrays[name], want.arrays[name], rtol=0, atol=TOLERANCE)
    assert list(got.metrics) == list(want.metrics)
    for key, value in want.metrics.items():
        assert got.metrics[key] == pytest.approx(value, rel=TOLERANCE)


def run_both(
    client_fn: fd.ClientFn, tasks: list[Task], executor: VectorizedExecutor | None = None
) -> tuple[list[tuple[int, TaskResult]], list[tuple[int, TaskResult]]]:
    got = list((executor or VectorizedExecutor()).run(client_fn, tasks))
    want = list(SerialExecutor().run(client_fn, tasks))
    return got, want


@pytest.mark.parametrize("client_fn", [mlp_client, adam_client], ids=["sgd", "adam"])
def test_train_results_match_serial_executor_for_unequal_clients(client_fn: fd.ClientFn) -> None:
    config = {"proximal_mu": 0.1, "report_initial_loss": True}  # server overrides, q-FedAvg
    got, want = run_both(client_fn, train_tasks(initial(), 5, config))
    assert [i for i, _ in got] == list(range(5))  # task order
    for (_, g), (_, w) in zip(got, want, strict=True):
        assert_same(g, w)


def test_chunks_give_the_same_results_in_task_order() -> None:
    tasks = train_tasks(initial(), 5)
    small = list(VectorizedExecutor(chunk_size=2).run(mlp_client, tasks))
    whole = list(VectorizedExecutor(chunk_size=5).run(mlp_client, tasks))
    assert [i for i, _ in small] == list(range(5))
    for (_, a), (_, b) in zip(small, whole, strict=True):
        assert_same(a, b)


def test_a_group_is_split_into_chunks_of_nearly_equal_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sizes: list[int] = []
    train_cohort = vectorized.train_cohort

    def spy(*args: Any, **kwargs: Any) -> Any:
        sizes.append(len(args[1]))
        return train_cohort(*args, **kwargs)

    monkeypatch.setattr(vectorized, "train_cohort", spy)
    list(VectorizedExecutor(chunk_size=3).run(mlp_client, train_tasks(initial(), 7)))
    assert sizes == [3, 2, 2]  # not 3 + 3 + 1


def test_other_clients_fall_back_per_client_with_one_warning_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    executor = VectorizedExecutor()
    linear = fd.Arrays({"w": np.zeros(3)})
    for _ in range(2):  # a second round warns no more
        tasks = [
            TrainTask(round_num=1, client_id=0, arrays=linear, seed=1),
            TrainTask(round_num=1, client_id=1, arrays=initial(batch_norm_net), seed=2),
            *train_tasks(initial(), 4)[2:],
            EvalTask(round_num=1, client_id=2, arrays=initial()),
        ]
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            got, want = run_both(mixed_client, tasks, executor)
        for (_, g), (_, w) in zip(got, want, strict=True):
            assert_same(g, w)
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 2
    assert any("LinearClient" in w for w in warnings)
    assert any("batch" in w for w in warnings)


def test_unsupported_layer_trains_per_client_and_names_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def client_fn(cid: int) -> TorchClient:
        return TorchClient(NoisyNet, client_data(cid), train_config=CFG)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        got, want = run_both(client_fn, train_tasks(initial(NoisyNet), 3))
    assert got == want  # the per-client path, bit for bit
    assert "NoisyNet uses call_function randn_like" in caplog.text


def test_chunk_that_fails_to_train_falls_back_per_client(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(vectorized, "train_cohort", broken)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        got, want = run_both(mlp_client, train_tasks(initial(), 3))
    assert got == want
    assert "vectorized training failed (RuntimeError: out of memory)" in caplog.text


def test_client_fn_that_raises_becomes_a_failure() -> None:
    def client_fn(cid: int) -> TorchClient:
        if cid == 1:
            raise RuntimeError("no data")
        return mlp_client(cid)

    got, want = run_both(client_fn, train_tasks(initial(), 3))
    assert isinstance(got[1][1], Failure)
    assert got[1] == want[1]
    assert_same(got[2][1], want[2][1])


def test_simulate_with_vectorized_executor_matches_serial_history() -> None:
    strategy = fd.FedAvg(fraction_train=0.8, min_train_clients=2, fraction_evaluate=0.5)
    runs = {
        name: fd.simulate(
            mlp_client, strategy, num_clients=5, num_rounds=2, initial=initial(), executor=name
        )
        for name in ("vectorized", 0)
    }
    got, want = runs["vectorized"], runs[0]
    assert got.arrays is not None and want.arrays is not None
    for name in want.arrays:
        np.testing.assert_allclose(got.arrays[name], want.arrays[name], rtol=0, atol=TOLERANCE)
    for g, w in zip(got.rounds, want.rounds, strict=True):
        assert g.num_results == w.num_results == 4
        assert g.train_metrics == pytest.approx(w.train_metrics, rel=TOLERANCE)
        assert g.eval_loss == pytest.approx(w.eval_loss, rel=TOLERANCE)


def test_stragglers_partial_epochs_train_in_one_stack_and_match_serial() -> None:
    # Li et al.'s stragglers: 3 of 6 clients per round do 1 to E-1 of E = 4 epochs.
    strategy = FedProx(proximal_mu=0.1, fraction_train=1.0, min_train_clients=2)
    h = Heterogeneity(straggler_fraction=0.5, partial_work=True, epochs=4)

    def client(cid: int) -> TorchClient:
        return TorchClient(dropout_mlp, client_data(cid), train_config=replace(CFG, epochs=4))

    runs = {
        name: fd.simulate(
            client,
            strategy,
            num_clients=6,
            num_rounds=2,
            initial=initial(),
            executor=name,
            heterogeneity=h,
        )
        for name in ("vectorized", 0)
    }
    got, want = runs["vectorized"], runs[0]
    assert got.arrays is not None and want.arrays is not None
    for name in want.arrays:
        np.testing.assert_allclose(got.arrays[name], want.arrays[name], rtol=0, atol=TOLERANCE)
    for g, w in zip(got.rounds, want.rounds, strict=True):
        assert g.num_results == w.num_results == 6
        assert g.train_metrics == pytest.approx(w.train_metrics, rel=TOLERANCE)


def test_make_executor_builds_vectorized_and_rejects_other_names() -> None:
    assert isinstance(make_executor("vectorized"), VectorizedExecutor)
    with pytest.raises(ConfigError, match="'vectorized'"):
        make_executor("gpu")
    with pytest.raises(ConfigError, match="chunk_size"):
        VectorizedExecutor(chunk_size=0)
