"""FedAdagrad, FedYogi, FedAdam, FedAvgM, FedNova and q-FedAvg against their papers' equations.

Expected values are worked out by hand in the comments (and written as the arithmetic
that gives them), never with the code under test.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federa import AggregationError, Arrays, ConfigError, Failure, RoundContext, TrainResult
from federa.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from federa.server.history import History
from federa.strategy.base import Strategy
from federa.strategy.fedavg import FedAvg
from federa.strategy.fedavgm import FedAvgM
from federa.strategy.fednova import FedNova, step_weight
from federa.strategy.fedopt import FedAdagrad, FedAdam, FedOpt, FedYogi
from federa.strategy.qfedavg import QFedAvg

Pairs = list[tuple[int, TrainResult]]


def ctx(round_num: int = 1) -> RoundContext:
    return RoundContext(round_num=round_num, rng=np.random.default_rng(0), seed=0)


def model(w: list[float], dtype: Any = np.float64, **extra: Any) -> Arrays:
    return Arrays({"w": np.array(w, dtype), **extra})


def result(arrays: Arrays, n: int, **metrics: float) -> TrainResult:
    return TrainResult(arrays=arrays, num_examples=n, metrics=metrics)


def cohort(x: Arrays, delta: list[float]) -> Pairs:
    """Two clients (1 and 3 examples) whose example-weighted mean change is `delta`.

    Client 0 moves by delta + 3 and client 1 by delta - 1: (delta + 3 + 3 (delta - 1)) / 4.
    """
    d = np.array(delta)
    return [
        (0, result(Arrays({"w": x["w"] + d + 3.0}), 1)),
        (1, result(Arrays({"w": x["w"] + d - 1.0}), 3)),
    ]


def step(strategy: Strategy, x: Arrays, results: Pairs, round_num: int = 1) -> Arrays:
    new, _ = strategy.aggregate_train(ctx(round_num), x, results, [])
    assert new is not None
    return new


def run(strategy: Strategy, deltas: list[list[float]], x: Arrays) -> list[Arrays]:
    out = []
    for t, delta in enumerate(deltas, start=1):
        x = step(strategy, x, cohort(x, delta), t)
        out.append(x)
    return out


X0 = [0.0, 10.0]


# --- Reddi et al. 2021, Algorithm 2 -----------------------------------------------------


def test_fedadagrad_follows_algorithm_2_over_three_rounds() -> None:
    # tau = 0.75, beta_1 = 0.9, eta = 1; v_0 = tau^2 = 0.5625, m_0 = 0.
    # Delta: [1, -1], [3, 3], [0, 0].  v = 0.5625 + 1 = 1.5625 = 1.25^2, then + 9 = 3.25^2.
    # coord 0: m = 0.1, 0.39, 0.351; steps 0.1/2 = 0.05, 0.39/4 = 0.0975, 0.351/4 = 0.08775.
    # coord 1: m = -0.1, 0.21, 0.189; steps -0.05, 0.0525, 0.04725.
    strategy = FedAdagrad(server_lr=1.0, beta_1=0.9, tau=0.75)
    xs = run(strategy, [[1.0, -1.0], [3.0, 3.0], [0.0, 0.0]], model(X0))
    expected = [[0.05, 9.95], [0.1475, 10.0025], [0.23525, 10.04975]]
    for x, want in zip(xs, expected, strict=True):
        np.testing.assert_allclose(x["w"], want, rtol=1e-12)
    assert strategy.m is not None and strategy.v is not None
    np.testing.assert_allclose(strategy.m["w"], [0.351, 0.189], rtol=1e-12)
    np.testing.assert_allclose(strategy.v["w"], [3.25**2, 3.25**2], rtol=1e-12)
    assert strategy.num_updates == 3


def test_fedadam_follows_algorithm_2_without_bias_correction() -> None:
    # tau = 1, beta_1 = beta_2 = 0.5, eta = 1; v_0 = 1. Delta: 7, 5, 1 (coord 1: the negation).
    # v = 0.5 + 24.5 = 25, 12.5 + 12.5 = 25, 12.5 + 0.5 = 13;  m = 3.5, 4.25, 2.625.
    # steps: 3.5 / (5 + 1), 4.25 / (5 + 1), 2.625 / (sqrt(13) + 1).
    strategy = FedAdam(server_lr=1.0, beta_1=0.5, beta_2=0.5, tau=1.0)
    xs = run(strategy, [[7.0, -7.0], [5.0, -5.0], [1.0, -1.0]], model(X0))
    s1, s2, s3 = 3.5 / 6, 4.25 / 6, 2.625 / (np.sqrt(13) + 1)
    expected = [s1, s1 + s2, s1 + s2 + s3]
    for x, want in zip(xs, expected, strict=True):
        np.testing.assert_allclose(x["w"], [want, 10.0 - want], rtol=1e-12)
    assert strategy.v is not None
    np.testing.assert_allclose(strategy.v["w"], [13.0, 13.0], rtol=1e-12)


def test_fedyogi_follows_algorithm_2_including_the_sign_rule() -> None:
    # tau = 1, beta_1 = beta_2 = 0.5, eta = 1; v_0 = 1.
    # coord 0, Delta 4, 2, 4: v = 1 + 0.5*16 = 9 (v < Delta^2), 9 - 0.5*4 = 7 (v > Delta^2),
    #   7 + 0.5*16 = 15; m = 2, 2, 3; steps 2/(3+1), 2/(sqrt(7)+1), 3/(sqrt(15)+1).
    # coord 1, Delta 0, 1, -1: Delta^2 = v every round after the first, so sign 0 keeps v = 1;
    #   m = 0, 0.5, -0.25; steps 0, 0.5/2, -0.25/2.
    strategy = FedYogi(server_lr=1.0, beta_1=0.5, beta_2=0.5, tau=1.0)
    xs = run(strategy, [[4.0, 0.0], [2.0, 1.0], [4.0, -1.0]], model(X0))
    c0 = np.cumsum([0.5, 2 / (np.sqrt(7) + 1), 3 / (np.sqrt(15) + 1)])
    c1 = [10.0, 10.25, 10.125]
    for x, a, b in zip(xs, c0, c1, strict=True):
        np.testing.assert_allclose(x["w"], [a, b], rtol=1e-12)
    assert strategy.v is not None
    np.testing.assert_allclose(strategy.v["w"], [15.0, 1.0], rtol=1e-12)


def test_fedopt_defaults_follow_the_documented_sources() -> None:
    for cls in (FedAdagrad, FedYogi, FedAdam):
        s = cls()
        assert (s.server_lr, s.beta_1, s.beta_2, s.tau) == (1e-2, 0.9, 0.99, 1e-3)
    with pytest.raises(TypeError):
        FedOpt()  # type: ignore[abstract]


@settings(max_examples=60, deadline=None)
@given(
    cls=st.sampled_from([FedAdagrad, FedYogi, FedAdam]),
    # Away from |d| = tau, where Yogi's sign(v0 - d^2) flips on rounding of d itself.
    change=st.floats(-100, 100, allow_nan=False).filter(lambda c: abs(c * c - 1e-6) > 1e-9),
    num_clients=st.integers(1, 5),
    sizes=st.lists(st.integers(1, 1000), min_size=5, max_size=5),
)
def test_fedopt_identical_updates_are_the_pseudo_gradient(
    cls: type[FedOpt], change: float, num_clients: int, sizes: list[int]
) -> None:
    # Identical clients make Delta the shared change d; one step from m_0 = 0, v_0 = tau^2.
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    x = model([1.0, -2.0, 0.5])
    client = Arrays({"w": x["w"] + change})
    results = [(i, result(client, sizes[i])) for i in range(num_clients)]
    new = step(cls(server_lr=eta, beta_1=b1, beta_2=b2, tau=tau), x, results)
    d = np.full(3, change)
    v0 = tau**2
    v = {
        FedAdagrad: v0 + d**2,
        FedYogi: v0 - (1 - b2) * d**2 * np.sign(v0 - d**2),
        FedAdam: b2 * v0 + (1 - b2) * d**2,
    }[cls]
    np.testing.assert_allclose(
        new["w"], x["w"] + eta * (1 - b1) * d / (np.sqrt(v) + tau), rtol=1e-9, atol=1e-12
    )


# --- Hsu et al. 2019 ---------------------------------------------------------------------


def test_fedavgm_applies_heavy_ball_momentum_over_three_rounds() -> None:
    # eta = 0.5, beta = 0.5. coord 0, Delta 1, 2, -4: v = 1, 2.5, -2.75 -> x = 0.5, 1.75, 0.375.
    # coord 1, Delta -2, 0, 2: v = -2, -1, 1.5 -> x = 9, 8.5, 9.25.
    strategy = FedAvgM(server_lr=0.5, server_momentum=0.5)
    xs = run(strategy, [[1.0, -2.0], [2.0, 0.0], [-4.0, 2.0]], model(X0))
    expected = [[0.5, 9.0], [1.75, 8.5], [0.375, 9.25]]
    for x, want in zip(xs, expected, strict=True):
        np.testing.assert_allclose(x["w"], want, rtol=1e-12)
    assert strategy.momentum is not None
    np.testing.assert_allclose(strategy.momentum["w"], [-2.75, 1.5], rtol=1e-12)


def test_fedavgm_without_momentum_and_unit_lr_is_fedavg() -> None:
    rng = np.random.default_rng(3)
    x = Arrays({"w": rng.normal(size=(4, 3)).astype(np.float32), "n": np.array(7, np.int64)})
    results = [
        (i, result(Arrays({"w": rng.normal(size=(4, 3)).astype(np.float32), "n": np.int64(n)}), n))
        for i, n in enumerate([3, 10, 5])
    ]
    want = step(FedAvg(), x, results)
    got = step(FedAvgM(server_lr=1.0, server_momentum=0.0), x, results)
    assert got.same_spec(want)
    np.testing.assert_allclose(got["w"], want["w"], rtol=1e-6)
    assert got["n"] == want["n"]


@settings(max_examples=40, deadline=None)
@given(change=st.floats(-100, 100, allow_nan=False), n=st.integers(1, 6))
def test_fedavgm_identical_updates_step_by_that_update(change: float, n: int) -> None:
    x = model([1.0, 2.0])
    results = [(i, result(Arrays({"w": x["w"] + change}), i + 1)) for i in range(n)]
    new = step(FedAvgM(server_lr=0.5, server_momentum=0.9), x, results)
    np.testing.assert_allclose(new["w"], x["w"] + 0.5 * change, rtol=1e-9, atol=1e-12)


# --- Wang et al. 2020 --------------------------------------------------------------------


def nova_results(x: Arrays, steps: tuple[float, float]) -> Pairs:
    return [
        (0, result(Arrays({"w": x["w"] + [4.0, -2.0]}), 1, num_steps=steps[0])),
        (1, result(Arrays({"w": x["w"] + [8.0, 4.0]}), 3, num_steps=steps[1])),
    ]


def test_fednova_normalizes_by_local_steps() -> None:
    # p = [1/4, 3/4], tau = [2, 4], a = tau, tau_eff = 0.5 + 3 = 3.5.
    # d_0 = -[4, -2] / 2 = [-2, 1], d_1 = -[8, 4] / 4 = [-2, -1]; sum p d = [-2, -0.5].
    # x - 3.5 [-2, -0.5] = [7, 11.75]   (FedAvg would give [7, 12.5]).
    x = model(X0)
    new = step(FedNova(), x, nova_results(x, (2.0, 4.0)))
    np.testing.assert_allclose(new["w"], [7.0, 11.75], rtol=1e-12)


def test_fednova_with_local_momentum_uses_the_momentum_step_weights() -> None:
    # rho = 0.5: a(2) = 1.5 + 1 = 2.5; a(4) = 1.875 + 1.75 + 1.5 + 1 = 6.125 (coefficients
    # sum_{j <= tau - k} rho^j of each step k). tau_eff = 0.25 * 2.5 + 0.75 * 6.125.
    # d_0 = -[4, -2] / 2.5 = [-1.6, 0.8], d_1 = -[8, 4] / 6.125 = -[64, 32] / 49.
    assert step_weight(2.0, 0.5) == pytest.approx(2.5, rel=1e-15)
    assert step_weight(4.0, 0.5) == pytest.approx(6.125, rel=1e-15)
    x = model(X0)
    new = step(FedNova(momentum=0.5), x, nova_results(x, (2.0, 4.0)))
    tau_eff = 0.25 * 2.5 + 0.75 * 6.125
    mean_d = [0.25 * -1.6 + 0.75 * -64 / 49, 0.25 * 0.8 + 0.75 * -32 / 49]
    np.testing.assert_allclose(new["w"], np.array(X0) - tau_eff * np.array(mean_d), rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    num_steps=st.floats(1, 500),
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    sizes=st.lists(st.integers(1, 1000), min_size=2, max_size=6),
)
def test_fednova_with_equal_steps_is_fedavg_bit_for_bit(
    seed: int, num_steps: float, momentum: float, sizes: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    x = Arrays({"w": rng.normal(size=5).astype(np.float32), "n": np.array(4, np.int32)})
    results = [
        (
            i,
            result(
                Arrays({"w": rng.normal(size=5).astype(np.float32), "n": np.array(i, np.int32)}),
                n,
                num_steps=num_steps,
            ),
        )
        for i, n in enumerate(sizes)
    ]
    assert step(FedNova(momentum=momentum), x, results) == step(FedAvg(), x, results)


def test_fednova_requires_num_steps_from_every_client() -> None:
    x = model(X0)
    results = [(0, result(x, 1, num_steps=3.0)), (7, result(x, 2, loss=0.1))]
    with pytest.raises(AggregationError, match=r"client 7 reported no 'num_steps' metric"):
        FedNova().aggregate_train(ctx(), x, results, [])
    bad = [(4, result(x, 2, num_steps=0.0))]
    with pytest.raises(AggregationError, match=r"client 4 reported num_steps=0\.0"):
        FedNova().aggregate_train(ctx(), x, bad, [])


# --- Li et al. 2020, Algorithm 2 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "expected_step"),
    [
        # L = 2. Client 0: Delta w = 2 * [0.5, 0] = [1, 0], F = 1; client 1: [0, 2], F = 3.
        # q = 1: Delta = [1, 0] + 3 [0, 2] = [1, 6]; h = (1 + 2) + (1 * 4 + 2 * 3) = 13.
        (1.0, [1 / 13, 6 / 13]),
        # q = 2: Delta = [1, 0] + 9 [0, 2] = [1, 18]; h = (2 + 2) + (2 * 3 * 4 + 2 * 9) = 46.
        (2.0, [1 / 46, 18 / 46]),
    ],
)
def test_qfedavg_follows_algorithm_2(q: float, expected_step: list[float]) -> None:
    x = model(X0)
    results = [
        (0, result(Arrays({"w": x["w"] - [0.5, 0.0]}), 10, initial_loss=1.0)),
        (1, result(Arrays({"w": x["w"] - [0.0, 1.0]}), 20, initial_loss=3.0)),
    ]
    new = step(QFedAvg(q=q, lipschitz=2.0), x, results)
    # F + 1e-10 stands in for F (as in the authors' code): a relative error below 1e-9.
    np.testing.assert_allclose(new["w"], np.array(X0) - expected_step, rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    lipschitz=st.floats(0.01, 100),
    losses=st.lists(st.floats(0, 10), min_size=1, max_size=5),
)
def test_qfedavg_with_q_zero_is_the_uniform_mean_of_client_models(
    seed: int, lipschitz: float, losses: list[float]
) -> None:
    # q = 0: Delta_k = L (w - w_k), h_k = L, so w - sum_k L (w - w_k) / (m L) = mean_k w_k,
    # whatever L, the losses and the example counts.
    rng = np.random.default_rng(seed)
    x = model(list(rng.normal(size=4)))
    models = [rng.normal(size=4) for _ in losses]
    results = [
        (i, result(Arrays({"w": w}), 1 + 100 * i, initial_loss=loss))
        for i, (w, loss) in enumerate(zip(models, losses, strict=True))
    ]
    new = step(QFedAvg(q=0.0, lipschitz=lipschitz), x, results)
    np.testing.assert_allclose(new["w"], np.mean(models, axis=0), rtol=1e-9, atol=1e-12)


def test_qfedavg_asks_clients_for_their_initial_loss() -> None:
    arrays = model(X0)
    for config in ({"lr": 0.5}, lambda r: {"lr": 0.5, "round": r}):
        tasks = QFedAvg(train_config=config).configure_train(ctx(3), arrays, range(4))
        assert len(tasks) == 4
        assert all(t.config["report_initial_loss"] is True for t in tasks)
        assert all(t.config["lr"] == 0.5 for t in tasks)
    assert QFedAvg(train_config={"lr": 0.5}).train_config == {"lr": 0.5}


def test_qfedavg_requires_initial_loss_from_every_client() -> None:
    x = model(X0)
    results = [(0, result(x, 1, initial_loss=1.0)), (5, result(x, 1, loss=1.0))]
    with pytest.raises(AggregationError, match=r"client 5 reported no 'initial_loss' metric"):
        QFedAvg().aggregate_train(ctx(), x, results, [])
    with pytest.raises(AggregationError, match=r"client 2 reported initial_loss=-1\.0"):
        QFedAvg().aggregate_train(ctx(), x, [(2, result(x, 1, initial_loss=-1.0))], [])


# --- Shared behaviour --------------------------------------------------------------------

FACTORIES: dict[str, Callable[[], Strategy]] = {
    "FedAdagrad": lambda: FedAdagrad(server_lr=0.1, tau=0.01),
    "FedYogi": lambda: FedYogi(server_lr=0.1, tau=0.01),
    "FedAdam": lambda: FedAdam(server_lr=0.1, tau=0.01),
    "FedAvgM": lambda: FedAvgM(server_lr=0.7, server_momentum=0.8),
    "FedNova": lambda: FedNova(momentum=0.3),
    "QFedAvg": lambda: QFedAvg(q=0.5, lipschitz=4.0),
}
each_strategy = pytest.mark.parametrize("make", FACTORIES.values(), ids=FACTORIES.keys())


def full_results(x: Arrays, round_num: int, dtype: Any = np.float32) -> Pairs:
    """Three clients with float and integer arrays and every metric any strategy needs."""
    rng = np.random.default_rng(round_num)
    return [
        (
            cid,
            TrainResult(
                arrays=Arrays(
                    {
                        "w": (x["w"] + rng.normal(size=x["w"].shape)).astype(dtype),
                        "b": (x["b"] + rng.normal()).astype(dtype),
                        "count": x["count"] + cid + 1,
                    }
                ),
                num_examples=n,
                metrics={"loss": 0.5 * cid, "num_steps": 2.0 + cid, "initial_loss": 1.0 + cid},
            ),
        )
        for cid, n in enumerate([5, 10, 20])
    ]


def initial(dtype: Any = np.float32) -> Arrays:
    return Arrays(
        {
            "w": np.arange(6, dtype=dtype).reshape(2, 3),
            "b": np.array(0.5, dtype),
            "count": np.array(4, np.int64),
        }
    )


@each_strategy
def test_dtypes_are_kept_and_integer_arrays_take_the_weighted_mean(
    make: Callable[[], Strategy],
) -> None:
    x = initial()
    results = full_results(x, 1)
    new = step(make(), x, results)
    assert new.same_spec(x)
    # counts 5, 6, 7 weighted 5, 10, 20: (25 + 60 + 140) / 35 = 6.43 -> 6, as FedAvg rounds.
    assert new["count"] == 6


@each_strategy
def test_aggregation_does_not_mutate_inputs(make: Callable[[], Strategy]) -> None:
    x = initial()
    results = full_results(x, 1)
    x_before = x.copy()
    before = [(cid, r.arrays.copy(), dict(r.metrics)) for cid, r in results]
    strategy = make()
    for t in (1, 2):
        strategy.aggregate_train(ctx(t), x, results, [])
    assert x == x_before
    for (cid, arrays, metrics), (cid2, r) in zip(before, results, strict=True):
        assert cid == cid2 and r.arrays == arrays and r.metrics == metrics


@each_strategy
def test_state_dict_restores_into_a_fresh_instance(
    make: Callable[[], Strategy], tmp_path: Path
) -> None:
    original = make()
    x = initial()
    for t in (1, 2):
        x = step(original, x, full_results(x, t), t)
    # Through a real checkpoint, so the state is what the checkpoint module stores.
    save_checkpoint(
        tmp_path,
        Checkpoint(
            round_num=2,
            arrays=x,
            strategy_state=original.state_dict(),
            history=History(),
            seed=0,
            run_id="r",
            config={},
        ),
    )
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    restored = make()
    restored.load_state_dict(loaded.strategy_state)
    results = full_results(x, 3)
    assert step(restored, x, results, 3) == step(original, x, results, 3)
    assert _same_state(restored.state_dict(), original.state_dict())


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(
        a[k] == b[k] if not isinstance(a[k], np.ndarray) else np.array_equal(a[k], b[k]) for k in a
    )


@pytest.mark.parametrize(
    "make", [FACTORIES[k] for k in ("FedAdam", "FedAvgM")], ids=["FedAdam", "FedAvgM"]
)
def test_state_changes_across_rounds_and_fresh_state_is_empty(
    make: Callable[[], Strategy],
) -> None:
    strategy = make()
    empty = strategy.state_dict()
    assert all(len(v) == 0 for v in empty.values() if isinstance(v, Arrays))
    x = initial()
    first = step(strategy, x, full_results(x, 1))
    results = full_results(x, 1)
    # The same round again from the same arrays moves differently: the state carried over.
    assert step(strategy, x, results, 2) != first
    restarted = make()
    restarted.load_state_dict(empty)
    assert step(restarted, x, results) == first


@each_strategy
def test_nonfinite_results_are_ignored_and_counted(make: Callable[[], Strategy]) -> None:
    x = initial()
    results = full_results(x, 1)
    poisoned = results[1][1].arrays.to_dict()
    poisoned["w"] = poisoned["w"].copy()
    poisoned["w"][0, 0] = np.nan
    bad = TrainResult(arrays=Arrays(poisoned), num_examples=10, metrics=results[1][1].metrics)
    inf = {**results[2][1].arrays.to_dict(), "b": np.array(np.inf, np.float32)}
    worse = TrainResult(arrays=Arrays(inf), num_examples=1, metrics=results[2][1].metrics)
    clean = [results[0]]
    new, metrics = make().aggregate_train(ctx(), x, [*clean, (1, bad), (2, worse)], [])
    want, want_metrics = make().aggregate_train(ctx(), x, clean, [])
    assert new == want
    assert metrics == {**want_metrics, "num_nonfinite_results": 2.0}
    assert new is not None and new.is_finite()
    none, only = make().aggregate_train(ctx(), x, [(1, bad)], [])
    assert none is None and only == {"num_nonfinite_results": 1.0}


def test_qfedavg_ignores_a_nonfinite_initial_loss() -> None:
    x = initial()
    results = full_results(x, 1)
    nan_loss = TrainResult(
        arrays=results[1][1].arrays, num_examples=10, metrics={"initial_loss": float("nan")}
    )
    new, metrics = QFedAvg().aggregate_train(ctx(), x, [results[0], (1, nan_loss)], [])
    assert new == QFedAvg().aggregate_train(ctx(), x, [results[0]], [])[0]
    assert metrics["num_nonfinite_results"] == 1.0


@each_strategy
def test_rounds_with_failures_are_rejected_when_asked(make: Callable[[], Strategy]) -> None:
    strategy = make()
    assert isinstance(strategy, FedAvg)
    strategy.accept_failures = False
    x = initial()
    fail = Failure(client_id=9, round_num=1, phase="train", message="boom")
    assert strategy.aggregate_train(ctx(), x, full_results(x, 1), [fail])[0] is None
    strategy.accept_failures = True
    assert strategy.aggregate_train(ctx(), x, full_results(x, 1), [fail])[0] is not None


@each_strategy
def test_results_that_do_not_match_the_global_arrays_are_an_error(
    make: Callable[[], Strategy],
) -> None:
    x = initial()
    results = full_results(x, 1, dtype=np.float64)
    with pytest.raises(AggregationError, match="client 0 returned arrays"):
        make().aggregate_train(ctx(), x, results, [])


def test_restored_state_for_another_model_is_an_error() -> None:
    strategy = FedAdam()
    x = initial()
    step(strategy, x, full_results(x, 1))
    other = FedAdam()
    other.load_state_dict(strategy.state_dict())
    y = model([1.0, 2.0])
    with pytest.raises(AggregationError, match="FedAdam state holds arrays"):
        other.aggregate_train(ctx(), y, [(0, result(y, 1))], [])
    with pytest.raises(ConfigError, match="FedAdam state must hold m, v and num_updates"):
        other.load_state_dict({"m": Arrays()})
    with pytest.raises(ConfigError, match="FedAvgM state must hold momentum"):
        FedAvgM().load_state_dict({})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FedAdam(server_lr=0.0), r"server_lr must be > 0, got 0.0"),
        (lambda: FedYogi(tau=-1.0), r"tau must be > 0, got -1.0"),
        (lambda: FedAdagrad(beta_1=1.0), r"beta_1 must be in \[0, 1\), got 1.0"),
        (lambda: FedAdam(beta_2=-0.1), r"beta_2 must be in \[0, 1\), got -0.1"),
        (lambda: FedAdam(server_lr=float("nan")), r"server_lr must be > 0, got nan"),
        (lambda: FedAdam(fraction_train=0.0), r"fraction_train must be in \(0, 1\]"),
        (lambda: FedAvgM(server_lr=-1.0), r"server_lr must be > 0, got -1.0"),
        (lambda: FedAvgM(server_momentum=1.0), r"server_momentum must be in \[0, 1\), got 1.0"),
        (lambda: FedNova(momentum=-0.5), r"momentum must be in \[0, 1\), got -0.5"),
        (lambda: QFedAvg(q=-1.0), r"q must be a finite number >= 0, got -1.0"),
        (lambda: QFedAvg(lipschitz=0.0), r"lipschitz must be a finite number > 0, got 0.0"),
    ],
)
def test_bad_parameters_are_rejected_with_one_line_messages(
    make: Callable[[], Strategy], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_repr_names_the_server_parameters() -> None:
    assert "server_lr=0.01, beta_1=0.9, beta_2=0.99, tau=0.001)" in repr(FedYogi())
    assert repr(FedAvgM()).endswith("server_lr=1.0, server_momentum=0.9)")
    assert repr(FedNova()).endswith("momentum=0.0)")
    assert repr(QFedAvg()).endswith("q=0.2, lipschitz=20.0)")
