import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federa import Arrays, ConfigError, EvalResult, Failure, FedAvg, RoundContext, TrainResult
from federa.strategy import aggregate, sample_cohort
from federa.strategy.aggregate import weighted_mean


def ctx(round_num: int = 1, seed: int = 0) -> RoundContext:
    return RoundContext(round_num=round_num, rng=np.random.default_rng(seed), seed=seed)


def result(value: float, n: int, **metrics: float) -> TrainResult:
    arrays = Arrays({"w": np.full((2, 2), value, np.float32), "step": np.array(n, np.int64)})
    return TrainResult(arrays=arrays, num_examples=n, metrics=metrics)


def test_fedavg_weights_by_num_examples() -> None:
    strategy = FedAvg()
    results = [(0, result(1.0, 10, loss=2.0)), (1, result(4.0, 30, loss=1.0))]
    new, metrics = strategy.aggregate_train(ctx(), results[0][1].arrays, results, [])
    assert new is not None
    # (10 * 1 + 30 * 4) / 40 = 3.25 exactly, and the loss 10*2+30*1 / 40 = 1.25.
    np.testing.assert_array_equal(new["w"], np.full((2, 2), 3.25, np.float32))
    assert new["w"].dtype == np.float32
    assert new["step"] == 25  # integer arrays are averaged then rounded
    assert metrics == {"loss": 1.25}


def test_weighted_mean_is_exact_for_float64_inputs() -> None:
    rng = np.random.default_rng(0)
    xs = [Arrays({"a": rng.normal(size=5)}) for _ in range(4)]
    w = [1.0, 2.0, 3.0, 4.0]
    expected = sum(wk * x["a"] for wk, x in zip(w, xs, strict=True)) / 10.0
    np.testing.assert_allclose(weighted_mean(xs, w)["a"], expected, rtol=0, atol=1e-15)


@pytest.mark.parametrize("float64_reference_max", [0, aggregate.FLOAT64_REFERENCE_MAX])
def test_weighted_mean_is_the_float64_mean_of_differences_bit_for_bit(
    float64_reference_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both ways of subtracting the reference: as given, and from a float64 copy of it.
    monkeypatch.setattr(aggregate, "FLOAT64_REFERENCE_MAX", float64_reference_max)
    rng = np.random.default_rng(1)
    xs = [
        Arrays(
            {
                "w": rng.normal(size=(3, 7)).astype(np.float32) * np.float32(10.0**k),
                "h": rng.normal(size=6).astype(np.float16) * np.float16(2.0**k),
                "n": rng.integers(-50, 50, size=4),
                "b": rng.random(5) < 0.5,
            }
        )
        for k in range(5)
    ]
    w = [3.0, 0.5, 7.0, 1.0, 2.5]
    out = weighted_mean(xs, w)
    for name in ("w", "h", "n", "b"):
        ref = xs[0][name].astype(np.float64)
        acc = np.zeros_like(ref)
        for x, wk in zip(xs[1:], w[1:], strict=True):
            acc += np.subtract(x[name], xs[0][name], dtype=np.float64) * wk
        want = acc / sum(w) + ref
        want = np.rint(want) if name in "nb" else want
        np.testing.assert_array_equal(out[name], want.astype(xs[0][name].dtype))
        assert out[name].dtype == xs[0][name].dtype


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 8),
    value=st.floats(-1e3, 1e3, allow_nan=False),
    sizes=st.lists(st.integers(1, 1000), min_size=8, max_size=8),
)
def test_mean_of_identical_updates_is_that_update(n: int, value: float, sizes: list[int]) -> None:
    arrays = Arrays({"w": np.full(3, value, np.float64)})
    out = weighted_mean([arrays] * n, sizes[:n])
    np.testing.assert_allclose(out["w"], arrays["w"], rtol=1e-12)


def test_aggregation_does_not_mutate_inputs() -> None:
    results = [(0, result(1.0, 1)), (1, result(2.0, 1))]
    before = [r.arrays.copy() for _, r in results]
    FedAvg().aggregate_train(ctx(), before[0], results, [])
    assert all(r.arrays == b for (_, r), b in zip(results, before, strict=True))


def test_fedavg_rejects_round_with_failures_when_asked() -> None:
    fail = Failure(client_id=2, round_num=1, phase="train", message="boom")
    results = [(0, result(1.0, 5))]
    new, _ = FedAvg(accept_failures=False).aggregate_train(
        ctx(), results[0][1].arrays, results, [fail]
    )
    assert new is None
    new, _ = FedAvg(accept_failures=True).aggregate_train(
        ctx(), results[0][1].arrays, results, [fail]
    )
    assert new is not None


def test_fedavg_aggregates_evaluation_by_num_examples() -> None:
    results = [
        (0, EvalResult(loss=1.0, num_examples=1, metrics={"accuracy": 0.0})),
        (1, EvalResult(loss=3.0, num_examples=3, metrics={"accuracy": 1.0})),
    ]
    loss, metrics = FedAvg().aggregate_evaluate(ctx(), results, [])
    assert loss == 2.5
    assert metrics == {"accuracy": 0.75}


@settings(max_examples=100, deadline=None)
@given(
    num_available=st.integers(0, 200),
    fraction=st.floats(0.01, 1.0),
    min_clients=st.integers(1, 20),
    seed=st.integers(0, 2**32),
)
def test_cohort_sampling_honours_fraction_and_minimum(
    num_available: int, fraction: float, min_clients: int, seed: int
) -> None:
    available = list(range(100, 100 + num_available))
    cohort = sample_cohort(ctx(seed=seed), available, fraction, min_clients)
    if num_available < min_clients:
        assert cohort == []
        return
    expected = min(num_available, max(int(np.ceil(fraction * num_available)), min_clients))
    assert len(cohort) == expected
    assert len(set(cohort)) == len(cohort)
    assert set(cohort) <= set(available)
    assert cohort == sample_cohort(ctx(seed=seed), available, fraction, min_clients)


def test_cohort_sampling_uses_only_the_given_generator() -> None:
    available = list(range(100))
    np.random.seed(1)
    a = sample_cohort(ctx(seed=5), available, 0.1, 1)
    np.random.seed(2)
    b = sample_cohort(ctx(seed=5), available, 0.1, 1)
    assert a == b
    assert a != sample_cohort(ctx(seed=6), available, 0.1, 1)


def test_configure_train_sends_seeded_tasks_to_the_cohort() -> None:
    arrays = Arrays({"w": np.zeros(1)})
    tasks = FedAvg(fraction_train=0.3, train_config={"lr": 0.1}).configure_train(
        ctx(round_num=4, seed=9), arrays, range(10)
    )
    assert len(tasks) == 3
    assert all(t.round_num == 4 and t.config == {"lr": 0.1} for t in tasks)
    assert len({t.seed for t in tasks}) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraction_train": 0.0}, r"fraction_train must be in \(0, 1\]"),
        ({"fraction_train": 1.5}, r"fraction_train must be in \(0, 1\]"),
        ({"fraction_evaluate": -0.1}, r"fraction_evaluate must be in \[0, 1\]"),
        ({"min_train_clients": 0}, "min_train_clients must be >= 1"),
    ],
)
def test_fedavg_rejects_bad_parameters(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FedAvg(**kwargs)  # type: ignore[arg-type]
