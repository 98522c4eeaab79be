from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from federa.core.arrays import Arrays
from federa.core.messages import Failure, TrainResult
from federa.errors import AggregationError, ConfigError
from federa.strategy.base import RoundContext
from federa.strategy.bulyan import Bulyan
from federa.strategy.fedavg import FedAvg
from federa.strategy.krum import Krum, MultiKrum
from federa.strategy.median import FedMedian
from federa.strategy.robust import (
    bulyan,
    coordinate_median,
    finite_results,
    flatten,
    iterated_krum,
    krum_scores,
    krum_select,
    mean_around_median,
    pairwise_sq_distances,
    trimmed_mean,
)
from federa.strategy.trimmed_mean import FedTrimmedMean

RULES: dict[str, Callable[[int], FedAvg]] = {
    "median": lambda f: FedMedian(),
    "trimmed_mean": lambda f: FedTrimmedMean(beta=0.1),
    "krum": lambda f: Krum(num_byzantine=f),
    "multi_krum": lambda f: MultiKrum(num_byzantine=f, num_selected=3),
    "bulyan": lambda f: Bulyan(num_byzantine=f),
}


def ctx(round_num: int = 1, seed: int = 0) -> RoundContext:
    return RoundContext(round_num=round_num, rng=np.random.default_rng(seed), seed=seed)


def model(w: np.ndarray, step: int = 0) -> Arrays:
    return Arrays({"w": w, "step": np.array(step, np.int64)})


def results_of(
    models: list[Arrays], sizes: list[int] | None = None
) -> list[tuple[int, TrainResult]]:
    sizes = sizes or [10] * len(models)
    return [
        (cid, TrainResult(arrays=a, num_examples=n, metrics={"loss": float(cid)}))
        for cid, (a, n) in enumerate(zip(models, sizes, strict=True))
    ]


def naive_sq_distances(matrix: np.ndarray) -> np.ndarray:
    m = matrix.astype(np.float64)
    n = len(m)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            out[i, j] = float(np.sum((m[i] - m[j]) ** 2))
    return out


# --- reductions, hand-computed --------------------------------------------------------


def test_flatten_round_trips_names_shapes_and_dtypes() -> None:
    a = Arrays(
        {
            "w": np.arange(6, dtype=np.float32).reshape(2, 3),
            "b": np.array([0.5, -1.5]),
            "n": np.array(7, np.int64),
            "mask": np.array([True, False]),
        }
    )
    b = Arrays({k: v * 2 if v.dtype != bool else ~v for k, v in a.items()})
    matrix, unflatten = flatten([a, b])
    assert matrix.shape == (2, 11) and matrix.dtype == np.float64
    np.testing.assert_array_equal(matrix[0], [0, 1, 2, 3, 4, 5, 0.5, -1.5, 7, 1, 0])
    assert unflatten(matrix[0]) == a
    assert unflatten(matrix[1]) == b


def test_flatten_subtracts_center_and_unflatten_adds_it_back() -> None:
    a, center = model(np.array([3.0, 5.0]), 4), model(np.array([1.0, 1.0]), 1)
    matrix, unflatten = flatten([a], center=center)
    np.testing.assert_array_equal(matrix[0], [2.0, 4.0, 3.0])
    assert unflatten(matrix[0]) == a


def test_flatten_rejects_mismatched_or_complex_arrays() -> None:
    with pytest.raises(AggregationError, match="result 1 has arrays"):
        flatten([model(np.zeros(2)), model(np.zeros(3))])
    with pytest.raises(AggregationError, match="needs real numbers"):
        flatten([Arrays({"z": np.zeros(2, np.complex128)})])
    with pytest.raises(AggregationError, match="zero results"):
        flatten([])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_distances_equal_the_naive_double_loop(dtype: type) -> None:
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(9, 257)).astype(dtype)
    expected = naive_sq_distances(matrix)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    got = pairwise_sq_distances(matrix)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * expected.max())
    np.testing.assert_array_equal(np.diag(got), 0.0)
    np.testing.assert_array_equal(got, got.T)


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 8),
    p=st.integers(1, 40),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**32 - 1),
)
def test_gram_distances_match_naive_for_any_shape(n: int, p: int, scale: float, seed: int) -> None:
    matrix = np.random.default_rng(seed).normal(size=(n, p)) * scale
    expected = naive_sq_distances(matrix)
    got = pairwise_sq_distances(matrix)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * expected.max())
    assert (got >= 0).all()


def test_centering_keeps_close_float32_rows_accurate() -> None:
    rng = np.random.default_rng(0)
    center = np.full(10_000, 5.0, np.float32)  # rows far from the origin, close together
    matrix = (center + rng.normal(0, 1e-3, (6, 10_000))).astype(np.float32)
    expected = naive_sq_distances(matrix)
    got = pairwise_sq_distances(matrix, center)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.max())


def test_float32_rows_too_large_for_a_float32_gram_fall_back_to_float64() -> None:
    matrix = np.array([[1e20, 0.0], [0.0, 1e20], [1e20, 1e20]], np.float32)
    got = pairwise_sq_distances(matrix)
    np.testing.assert_allclose(got, naive_sq_distances(matrix), rtol=1e-6)


def test_overflowing_distances_become_infinite_and_lose_the_krum_vote() -> None:
    matrix = np.array([[0.0], [1.0], [2.0], [1.5], [1e200], [-1e200]])
    dist = pairwise_sq_distances(matrix)
    assert np.isinf(dist[4, 5]) and np.isinf(dist[0, 4])
    assert int(krum_select(matrix, 1, 1)[0]) in {1, 3}


def test_coordinate_median_of_three_and_of_two_vectors() -> None:
    m = np.array([[1.0, 5.0, -2.0], [3.0, 0.0, 7.0], [2.0, 9.0, 1.0]])
    np.testing.assert_array_equal(coordinate_median(m), [2.0, 5.0, 1.0])
    np.testing.assert_array_equal(coordinate_median(m[:2]), [2.0, 2.5, 2.5])
    np.testing.assert_array_equal(m[0], [1.0, 5.0, -2.0])  # the input keeps its order


def test_trimmed_mean_drops_beta_fraction_from_each_end() -> None:
    t = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [100.0, -100.0]])
    # beta = 0.2 of n = 5 drops one per side: mean(2, 3, 4) and mean(10, 20, 30).
    np.testing.assert_array_equal(trimmed_mean(t, 0.2), [3.0, 20.0])
    np.testing.assert_array_equal(trimmed_mean(t, 0.0), [22.0, 0.0])
    # beta = 0.3 of n = 10 is 3 per side despite 0.3 * 10 = 2.9999999999999996.
    ten = np.arange(10.0)[:, None]
    np.testing.assert_array_equal(trimmed_mean(ten, 0.3), [4.5])
    with pytest.raises(AggregationError, match="beta"):
        trimmed_mean(t, 0.5)


# Five points: a cross around the origin and one far outlier. With f = 1 each score sums
# the n - f - 2 = 2 smallest squared distances: 0 -> 1 + 1, 1 -> 1 + 4, 2 -> 1 + 4,
# 3 -> 4 + 5, 4 -> (50^2 + 48^2) + (49^2 + 50^2).
CROSS = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [50.0, 50.0]])


def test_krum_picks_the_central_point_and_ignores_the_outlier() -> None:
    scores = krum_scores(pairwise_sq_distances(CROSS), 1)
    np.testing.assert_allclose(scores, [2.0, 5.0, 5.0, 9.0, 4804.0 + 4901.0])
    assert krum_select(CROSS, 1, 1).tolist() == [0]
    assert krum_select(CROSS, 1, 3).tolist() == [0, 1, 2]  # tie at 5 goes to the lower index


def test_krum_scores_need_n_greater_than_f_plus_two() -> None:
    with pytest.raises(AggregationError, match="n - f - 2 >= 1"):
        krum_scores(pairwise_sq_distances(CROSS), 3)


# Bulyan with n = 7, f = 1: theta = 5 picks by Krum, then the beta = 3 values closest to
# the median. Squared distances in 1-D; neighbourhood |R| - 3 (at least 1):
#   R = all 7, k = 4: scores 0:30 1:15 2:10 3:15 4:30 10:230 100:big -> 2
#   R - {2},   k = 3: 0:26 1:14 3:14 4:26 10:166          -> 1 (tie, lower index)
#   R - {2,1}, k = 2: 0:25 3:10 4:17 10:85                 -> 3
#   {0,4,10,100}, k = 1: 0:16 4:16 10:36                   -> 0 (tie, lower index)
#   {4,10,100},   k = 1: 4:36 10:36                        -> 4 (tie, lower index)
# Selected values 0, 1, 2, 3, 4: median 2, the three closest 1, 2, 3, mean 2.
LINE = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 10.0, 100.0])[:, None]


def test_bulyan_selects_by_iterated_krum_then_averages_around_the_median() -> None:
    assert iterated_krum(pairwise_sq_distances(LINE), 1, 5).tolist() == [2, 1, 3, 0, 4]
    np.testing.assert_array_equal(bulyan(LINE, 1), [2.0])
    assert float(np.mean(LINE)) > 17  # the plain mean, dragged by 10 and 100
    with pytest.raises(AggregationError, match=r"n >= 4f \+ 3"):
        bulyan(LINE[:6], 1)


def test_mean_around_median_equals_a_naive_argsort_per_coordinate() -> None:
    rng = np.random.default_rng(1)
    for n, count in [(9, 5), (8, 4), (7, 1), (6, 6)]:
        matrix = rng.normal(size=(n, 64))
        median = np.median(matrix, axis=0)
        expected = [
            matrix[np.argsort(np.abs(matrix[:, j] - median[j]))[:count], j].mean()
            for j in range(matrix.shape[1])
        ]
        np.testing.assert_allclose(mean_around_median(matrix, count), expected, rtol=1e-12)


def test_mean_around_median_averages_values_tied_at_the_cutoff() -> None:
    # Median 0; the two closest are 0 and one of -1 / +1, tied: both enter at weight 1/2.
    np.testing.assert_array_equal(mean_around_median(np.array([[-1.0], [0.0], [1.0]]), 2), [0.0])


def test_finite_results_drops_nan_and_inf() -> None:
    good = TrainResult(arrays=model(np.ones(2)), num_examples=1)
    nan = TrainResult(arrays=model(np.array([1.0, np.nan])), num_examples=1)
    inf = TrainResult(arrays=model(np.array([np.inf, 1.0])), num_examples=1)
    assert finite_results([(0, good), (1, nan), (2, inf), (3, good)]) == [(0, good), (3, good)]


# --- strategies -----------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    rule=st.sampled_from(sorted(RULES)),
    n=st.integers(7, 12),
    value=st.floats(-1e3, 1e3, allow_nan=False, width=32),
    global_value=st.floats(-1e3, 1e3, allow_nan=False, width=32),
    step=st.integers(0, 10**6),
)
# Centering the average on the global model would round this tiny value away.
@example(rule="bulyan", n=7, value=1.8e-40, global_value=1.0, step=0)
def test_identical_updates_aggregate_to_that_update(
    rule: str, n: int, value: float, global_value: float, step: int
) -> None:
    update = model(np.full((2, 3), value, np.float32), step)
    current = model(np.full((2, 3), global_value, np.float32))
    new, metrics = RULES[rule](1).aggregate_train(ctx(), current, results_of([update] * n), [])
    assert new == update
    assert all(isinstance(v, float) for v in metrics.values())


@settings(max_examples=20, deadline=None)
@given(rule=st.sampled_from(sorted(RULES)), value=st.floats(-1e6, 1e6, allow_nan=False))
def test_identical_float64_updates_aggregate_to_that_update(rule: str, value: float) -> None:
    update = Arrays({"w": np.full(4, value)})
    new, _ = RULES[rule](1).aggregate_train(
        ctx(), Arrays({"w": np.zeros(4)}), results_of([update] * 8), []
    )
    assert new is not None
    np.testing.assert_allclose(new["w"], update["w"], rtol=1e-14, atol=1e-300)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_aggregation_never_mutates_inputs_and_keeps_dtypes_and_shapes(rule: str) -> None:
    rng = np.random.default_rng(2)
    models = [
        Arrays(
            {
                "w": rng.normal(size=(3, 4)).astype(np.float32),
                "b": rng.normal(size=5),
                "count": np.array(rng.integers(0, 100), np.int64),
            }
        )
        for _ in range(9)
    ]
    current = Arrays({k: np.zeros_like(v) for k, v in models[0].items()})
    results = results_of(models)
    before = [a.copy() for a in models]
    current_before = current.copy()
    new, _ = RULES[rule](1).aggregate_train(ctx(), current, results, [])
    assert new is not None
    assert all(r.arrays == b for (_, r), b in zip(results, before, strict=True))
    assert current == current_before
    assert new.spec() == models[0].spec()
    assert new["w"].dtype == np.float32 and new["count"].dtype == np.int64
    for a in models:
        assert not any(np.shares_memory(new[k], a[k]) for k in a)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_results_with_nan_or_inf_are_ignored(rule: str) -> None:
    good = [model(np.array([float(i), 2.0 * i]), i) for i in range(8)]
    bad = [model(np.array([np.nan, 0.0])), model(np.array([0.0, -np.inf]))]
    current = model(np.zeros(2))
    strategy = RULES[rule](1)
    expected, expected_metrics = strategy.aggregate_train(ctx(), current, results_of(good), [])
    results = results_of(good + bad)
    new, metrics = strategy.aggregate_train(ctx(), current, results, [])
    assert new == expected
    assert metrics == expected_metrics  # the ignored clients' metrics are left out too


@pytest.mark.parametrize(
    ("strategy", "n", "message"),
    [
        (Krum(num_byzantine=2), 6, r"Krum with num_byzantine=2 needs at least 7 results"),
        (MultiKrum(num_byzantine=1, num_selected=5), 5, r"MultiKrum .* at least 6 .* n=5"),
        (Bulyan(num_byzantine=1), 6, r"Bulyan with num_byzantine=1 .* \(n >= 4f \+ 3\)"),
    ],
)
def test_too_few_results_raise_naming_rule_n_f_and_the_fix(
    strategy: FedAvg, n: int, message: str
) -> None:
    results = results_of([model(np.full(2, float(i))) for i in range(n)])
    with pytest.raises(AggregationError, match=message) as info:
        strategy.aggregate_train(ctx(), model(np.zeros(2)), results, [])
    assert f"n={n}" in str(info.value) and "lower num_byzantine" in str(info.value)
    assert "\n" not in str(info.value)


def test_nan_results_count_against_the_minimum() -> None:
    models = [model(np.full(2, float(i))) for i in range(4)] + [model(np.full(2, np.nan))]
    with pytest.raises(AggregationError, match="n=4"):
        Krum(num_byzantine=1).aggregate_train(ctx(), models[0], results_of(models), [])


def test_no_usable_results_or_refused_failures_reject_the_round() -> None:
    nan = [model(np.full(2, np.nan))] * 3
    assert Krum(num_byzantine=1).aggregate_train(ctx(), nan[0], results_of(nan), []) == (None, {})
    fail = Failure(client_id=9, round_num=1, phase="train", message="boom")
    five = results_of([model(np.full(2, float(i))) for i in range(5)])
    strategy = Krum(num_byzantine=1, accept_failures=False)
    assert strategy.aggregate_train(ctx(), five[0][1].arrays, five, [fail]) == (None, {})


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (FedMedian(), 1),
        (FedTrimmedMean(beta=0.2), 1),
        (Krum(num_byzantine=2), 7),
        (MultiKrum(num_byzantine=1, num_selected=8), 9),
        (MultiKrum(num_byzantine=2, num_selected=1), 7),
        (Bulyan(num_byzantine=2), 11),
    ],
)
def test_min_cohort_is_the_smallest_accepted_round(strategy: FedAvg, expected: int) -> None:
    assert strategy.min_cohort() == expected  # type: ignore[attr-defined]  # not on FedAvg
    results = results_of([model(np.full(2, float(i))) for i in range(expected)])
    new, _ = strategy.aggregate_train(ctx(), model(np.zeros(2)), results, [])
    assert new is not None


def test_configure_train_refuses_a_cohort_too_small_for_f() -> None:
    arrays = model(np.zeros(2))
    strategy = Bulyan(num_byzantine=2, fraction_train=0.5)
    with pytest.raises(ConfigError, match=r"Bulyan .* at least 11 clients per round .* 10") as e:
        strategy.configure_train(ctx(), arrays, range(20))
    assert "fraction_train" in str(e.value) and "\n" not in str(e.value)
    assert len(strategy.configure_train(ctx(), arrays, range(22))) == 11
    assert Krum(num_byzantine=1, min_train_clients=5).configure_train(ctx(), arrays, range(4)) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FedTrimmedMean(beta=0.5), r"beta must be a number in \[0, 0.5\), got 0.5"),
        (lambda: FedTrimmedMean(beta=-0.1), "beta must be"),
        (lambda: FedTrimmedMean(beta=True), "beta must be"),
        (lambda: FedTrimmedMean(beta=float("nan")), "beta must be"),
        (lambda: Krum(num_byzantine=-1), "num_byzantine must be an integer >= 0, got -1"),
        (lambda: Krum(num_byzantine=1.5), "num_byzantine must be an integer"),
        (lambda: Bulyan(num_byzantine=True), "num_byzantine must be an integer"),
        (
            lambda: MultiKrum(num_byzantine=1, num_selected=0),
            "num_selected must be an integer >= 1",
        ),
        (lambda: Krum(num_byzantine=1, fraction_train=0.0), "fraction_train must be in"),
    ],
)
def test_bad_parameters_raise_config_error(make: Callable[[], FedAvg], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_multi_krum_averages_the_selected_weighted_by_num_examples() -> None:
    models = [model(row.copy()) for row in CROSS]
    sizes = [10, 30, 60, 1, 1000]
    new, metrics = MultiKrum(num_byzantine=1, num_selected=3).aggregate_train(
        ctx(), model(np.zeros(2)), results_of(models, sizes), []
    )
    assert new is not None
    # Points 0, 1, 2 with weights 10, 30, 60: x = (30 - 60) / 100, y = 0.
    np.testing.assert_allclose(new["w"], [-0.3, 0.0])
    assert metrics["num_selected"] == 3.0
    # loss = client id, weighted by everyone's examples: (30 + 120 + 3 + 4000) / 1101.
    assert metrics["loss"] == pytest.approx(4153 / 1101)


def test_krum_returns_the_central_client_and_bulyan_reports_theta() -> None:
    models = [model(row.copy(), i) for i, row in enumerate(CROSS)]
    new, metrics = Krum(num_byzantine=1).aggregate_train(
        ctx(), model(np.zeros(2)), results_of(models), []
    )
    assert new == models[0] and metrics["num_selected"] == 1.0
    line = [model(row.copy()) for row in LINE]
    new, metrics = Bulyan(num_byzantine=1).aggregate_train(
        ctx(), model(np.zeros(1)), results_of(line), []
    )
    assert new is not None and new["w"].tolist() == [2.0]
    assert metrics["num_selected"] == 5.0


def test_one_sign_flip_attacker_barely_moves_robust_rules_but_drags_fedavg() -> None:
    rng = np.random.default_rng(7)
    current = Arrays({"w": rng.normal(size=50).astype(np.float32)})
    direction = np.full(50, 0.1, np.float32)
    honest = [
        Arrays({"w": current["w"] + direction + rng.normal(0, 0.01, 50).astype(np.float32)})
        for _ in range(10)
    ]
    attacker = Arrays({"w": current["w"] - 10 * direction})
    results = results_of([*honest, attacker], [100] * 10 + [1000])  # it also lies about n
    honest_mean = np.mean([a["w"] for a in honest], axis=0)
    strategies = {name: make(1) for name, make in RULES.items()}
    errors = {}
    for name, strategy in {"fedavg": FedAvg(), **strategies}.items():
        new, _ = strategy.aggregate_train(ctx(), current, results, [])
        assert new is not None
        errors[name] = float(np.linalg.norm(new["w"] - honest_mean))
    assert errors["fedavg"] > 5 * np.linalg.norm(direction)
    for name in strategies:
        assert errors[name] < 0.05 * errors["fedavg"], (name, errors)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_robust_rules_are_stateless(rule: str) -> None:
    strategy = RULES[rule](1)
    assert strategy.state_dict() == {}
    strategy.load_state_dict(strategy.state_dict())
    with pytest.raises(ValueError, match="stateless"):
        strategy.load_state_dict({"moment": 1})


def test_repr_shows_the_rule_parameters() -> None:
    assert "beta=0.2" in repr(FedTrimmedMean(beta=0.2))
    text = repr(MultiKrum(num_byzantine=2, num_selected=4))
    assert text.startswith("MultiKrum(") and "num_byzantine=2" in text and "num_selected=4" in text
