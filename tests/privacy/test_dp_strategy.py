"""CentralDP (DP-FedAvg): clipping, calibrated noise, accounting, budget, adaptive clipping."""

from __future__ import annotations

import functools
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

import federa as fd
from federa.data import load_digits, partition_iid
from federa.errors import ConfigError
from federa.privacy import AdaptiveClipping, CentralDP, PrivacyAccountant
from federa.server.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from federa.strategy import FedAdam, FedAvg, Krum, Scaffold
from federa.torch.client import TorchClient, make_evaluate_fn
from federa.torch.train import TrainConfig


def ctx(round_num: int = 1, seed: int = 0) -> fd.RoundContext:
    return fd.RoundContext(round_num=round_num, rng=np.random.default_rng(seed), seed=0)


def global_arrays(size: int = 6) -> fd.Arrays:
    return fd.Arrays({"w": np.zeros(size, np.float32), "n": np.array([3], np.int64)})


def result(arrays: fd.Arrays, update: np.ndarray, n: int = 10) -> fd.TrainResult:
    new = {"w": (arrays["w"] + update).astype(np.float32), "n": arrays["n"] + 1}
    return fd.TrainResult(arrays=fd.Arrays(new), num_examples=n, metrics={"loss": 1.0})


def central(z: float = 0.0, clip: float | AdaptiveClipping = 1.0, **kwargs: object) -> CentralDP:
    options: dict[str, object] = {"num_clients": 8, "delta": 1e-5, **kwargs}
    return CentralDP(
        FedAvg(min_train_clients=1),
        noise_multiplier=z,
        clip_norm=clip,
        **options,  # type: ignore[arg-type]  # test helper forwards keyword arguments
    )


def run_round(
    strategy: CentralDP, updates: dict[int, np.ndarray], round_num: int = 1
) -> tuple[fd.Arrays | None, dict[str, float]]:
    arrays = global_arrays(len(next(iter(updates.values()))))
    results = [(cid, result(arrays, u)) for cid, u in sorted(updates.items())]
    new, metrics = strategy.aggregate_train(ctx(round_num), arrays, results, [])
    return new, dict(metrics)


def test_without_noise_it_is_the_unweighted_mean_of_clipped_updates() -> None:
    updates = {0: np.array([0.2, 0, 0, 0]), 1: np.array([0, 30.0, 0, 0]), 2: np.zeros(4)}
    new, metrics = run_round(central(z=0.0, clip=1.0), updates)
    assert new is not None
    # Client 1's update of norm 30 is clipped to 1; the mean divides by the cohort of 3.
    np.testing.assert_allclose(new["w"], [0.2 / 3, 1 / 3, 0, 0], rtol=1e-6)
    assert new["n"][0] == 3  # integer arrays keep the global value
    assert metrics["clip_norm"] == 1.0
    assert metrics["loss"] == 1.0


def test_noise_on_the_mean_has_std_z_c_over_cohort() -> None:
    size, cohort = 100_000, 4
    updates = {cid: np.zeros(size) for cid in range(cohort)}
    new, _ = run_round(central(z=2.0, clip=0.5), updates)
    assert new is not None
    # sigma = z C / m = 2 * 0.5 / 4; the sample std of 1e5 normals is within 1%.
    assert new["w"].astype(np.float64).std() == pytest.approx(0.25, rel=1e-2)
    again, _ = run_round(central(z=2.0, clip=0.5), updates)
    assert again == new  # noise comes from the round's generator only


def test_failed_clients_count_as_zero_updates_in_the_denominator() -> None:
    strategy = central(z=0.0, clip=10.0)
    arrays = global_arrays(2)
    results = [(0, result(arrays, np.array([1.0, 1.0])))]
    failure = fd.Failure(client_id=1, round_num=1, phase="train", message="gone")
    new, _ = strategy.aggregate_train(ctx(), arrays, results, [failure])
    assert new is not None
    np.testing.assert_allclose(new["w"], [0.5, 0.5])
    assert strategy.accountant.steps == {2 / 8: 1}


def test_epsilon_is_reported_every_round_and_grows() -> None:
    strategy = central(z=1.0)
    updates = {cid: np.full(3, 0.1) for cid in range(4)}
    epsilons = [run_round(strategy, updates, r)[1]["epsilon"] for r in range(1, 6)]
    assert all(b > a for a, b in itertools.pairwise(epsilons))
    reference = PrivacyAccountant(noise_multiplier=1.0, delta=1e-5)
    reference.record(4 / 8, 5)
    assert epsilons[-1] == pytest.approx(reference.epsilon())


def test_target_epsilon_stops_training_before_it_is_exceeded() -> None:
    strategy = central(z=2.0, target_epsilon=6.0)
    arrays = global_arrays(3)
    spent, rounds = [], 0
    for round_num in range(1, 30):
        tasks = strategy.configure_train(ctx(round_num), arrays, range(8))
        if not tasks:
            break
        rounds += 1
        results = [(t.client_id, result(arrays, np.full(3, 0.1))) for t in tasks]
        _, metrics = strategy.aggregate_train(ctx(round_num), arrays, results, [])
        spent.append(metrics["epsilon"])
    assert strategy.is_budget_exhausted
    assert 1 < rounds < 29
    assert max(spent) <= 6.0
    assert strategy.accountant.epsilon_after(1.0) > 6.0


def test_noise_sized_for_a_target_spends_at_most_the_target() -> None:
    strategy = CentralDP.for_target_epsilon(
        FedAvg(min_train_clients=1),
        target_epsilon=4.0,
        num_rounds=5,
        cohort_size=8,
        num_clients=8,
        delta=1e-5,
        clip_norm=1.0,
    )
    updates = {cid: np.full(3, 0.1) for cid in range(8)}
    arrays = global_arrays(3)
    for round_num in range(1, 6):
        assert strategy.configure_train(ctx(round_num), arrays, range(8))
        _, metrics = run_round(strategy, updates, round_num)
    assert 3.9 < metrics["epsilon"] <= 4.0


def test_adaptive_clip_norm_converges_to_the_target_quantile() -> None:
    rng = np.random.default_rng(0)
    cohort = 50
    norms = np.exp(rng.normal(0.0, 1.0, cohort)) * 2.0  # median about 2; C starts at 0.1
    direction = np.ones(4) / 2.0
    strategy = central(z=0.5, clip=AdaptiveClipping(target_quantile=0.5), num_clients=cohort)
    clip_norms = []
    for round_num in range(1, 121):
        updates = {cid: norms[cid] * direction for cid in range(cohort)}
        _, metrics = run_round(strategy, updates, round_num)
        clip_norms.append(metrics["clip_norm"])
    late = np.array(clip_norms[-40:])
    fraction_unclipped = [(norms <= c).mean() for c in late]
    assert clip_norms[0] == pytest.approx(0.1)
    assert 0.4 <= np.mean(fraction_unclipped) <= 0.6
    assert np.median(late) == pytest.approx(np.median(norms), rel=0.25)


def test_adaptive_clipping_splits_the_noise_between_count_and_update() -> None:
    rule = AdaptiveClipping()
    # sigma_b = max(m / 20, z); z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2.
    assert rule.count_std(1.0, 100) == 5.0
    assert rule.update_noise_multiplier(1.0, 100) == pytest.approx((1 - 1 / 100) ** -0.5)
    assert rule.update_noise_multiplier(1.0, 4) == pytest.approx((1 - 1 / 4) ** -0.5)
    with pytest.raises(ConfigError, match="count_noise_std"):
        AdaptiveClipping(count_noise_std=0.4).update_noise_multiplier(1.0, 100)


def test_state_dict_survives_a_checkpoint_and_resumes_identically(tmp_path: Path) -> None:
    updates = {cid: np.full(3, 0.3 * (cid + 1)) for cid in range(4)}
    first = CentralDP(
        FedAdam(min_train_clients=1),
        noise_multiplier=0.5,
        clip_norm=AdaptiveClipping(),
        num_clients=8,
        delta=1e-5,
    )
    run_round(first, updates)
    save_checkpoint(
        tmp_path,
        Checkpoint(
            round_num=1,
            arrays=global_arrays(3),
            strategy_state=first.state_dict(),
            history=fd.History(),
            seed=0,
            run_id="x",
            config={},
        ),
    )
    loaded = load_checkpoint(tmp_path)
    assert loaded is not None
    second = CentralDP(
        FedAdam(min_train_clients=1),
        noise_multiplier=0.5,
        clip_norm=AdaptiveClipping(),
        num_clients=8,
        delta=1e-5,
    )
    second.load_state_dict(loaded.strategy_state)
    assert second.clip_norm == first.clip_norm != 0.1
    a = run_round(first, updates, 2)
    b = run_round(second, updates, 2)
    assert a[0] == b[0]
    assert a[1] == b[1]


def test_aggregation_never_mutates_inputs_and_ignores_non_finite_results() -> None:
    strategy = central(z=0.3)
    arrays = global_arrays(3)
    results = [(cid, result(arrays, np.full(3, 0.2))) for cid in range(3)]
    poisoned = fd.TrainResult(
        arrays=fd.Arrays({"w": np.full(3, np.nan, np.float32), "n": arrays["n"]}), num_examples=5
    )
    results.append((3, poisoned))
    before = [r.arrays.copy() for _, r in results]
    new, metrics = strategy.aggregate_train(ctx(), arrays, results, [])
    assert new is not None and new.is_finite()
    assert metrics["num_nonfinite_results"] == 1.0
    assert all(r.arrays == b for (_, r), b in zip(results, before, strict=True))
    assert arrays == global_arrays(3)


def test_strategies_that_need_each_clients_result_are_refused() -> None:
    for inner in (Krum(num_byzantine=1), Scaffold()):
        with pytest.raises(ConfigError, match="cannot wrap"):
            CentralDP(inner, noise_multiplier=1.0, clip_norm=1.0, num_clients=10, delta=1e-5)


def linear_model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def digits_client(x: np.ndarray, y: np.ndarray, parts: list[np.ndarray], cid: int) -> TorchClient:
    idx = parts[cid]
    return TorchClient(
        linear_model, (x[idx], y[idx]), train_config=TrainConfig(batch_size=16, lr=0.5)
    )


@pytest.mark.slow
def test_simulated_central_dp_on_digits_learns_and_reports_epsilon() -> None:
    split = load_digits()
    num_clients = 20
    parts = partition_iid(len(split.train.y), num_clients, seed=0)
    client_fn = functools.partial(digits_client, split.train.x, split.train.y, parts)
    torch.manual_seed(0)
    initial = fd.Arrays({k: v.numpy() for k, v in linear_model().state_dict().items()})
    evaluate_fn = make_evaluate_fn(linear_model, (split.test.x, split.test.y))
    strategy = CentralDP(
        FedAvg(fraction_train=0.5, min_train_clients=1, evaluate_fn=evaluate_fn),
        noise_multiplier=0.1,  # small noise: within a point of FedAvg's 0.844 here
        clip_norm=2.0,
        num_clients=num_clients,
        delta=1e-5,
    )
    history = fd.simulate(
        client_fn, strategy, num_clients=num_clients, num_rounds=4, initial=initial, seed=0
    )
    epsilons = [eps for _, eps in history.series("train_epsilon")]
    assert len(epsilons) == 4
    assert all(b > a for a, b in itertools.pairwise(epsilons))
    accuracy = history.rounds[-1].centralized_metrics["accuracy"]
    assert accuracy > 0.8, accuracy
