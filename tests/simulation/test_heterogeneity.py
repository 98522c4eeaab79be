"""Simulated device heterogeneity: availability, stragglers past a deadline, a wall clock."""

from __future__ import annotations

import numpy as np
import pytest

import federa as fd
from federa.simulation import SerialExecutor
from federa.simulation.heterogeneity import ClientProfile, Heterogeneity, HeterogeneousTransport
from federa.transport.inprocess import InProcessTransport

from .clients import linear_client

INITIAL = fd.Arrays({"w": np.zeros(3)})


def run(heterogeneity: Heterogeneity | None, seed: int = 0, rounds: int = 3) -> fd.History:
    return fd.simulate(
        linear_client,
        fd.FedAvg(fraction_train=1.0, min_train_clients=1),
        num_clients=10,
        num_rounds=rounds,
        initial=INITIAL,
        seed=seed,
        heterogeneity=heterogeneity,
    )


def test_profiles_derive_from_the_run_seed() -> None:
    h = Heterogeneity(speed_sigma=1.0, availability=(0.2, 0.9))
    a, b, c = h.client_profiles(500, 3), h.client_profiles(500, 3), h.client_profiles(500, 4)
    assert a == b and a != c
    speeds = np.array([p.speed for p in a])
    assert 0.8 < np.median(speeds) < 1.25  # log-normal with median 1
    assert speeds.min() < 0.3 and speeds.max() > 3
    assert all(0.2 <= p.availability <= 0.9 for p in a)
    assert Heterogeneity().client_profiles(4, 0) == [ClientProfile()] * 4


def test_offline_clients_are_never_sampled_and_availability_follows_the_profiles() -> None:
    profiles = [ClientProfile(availability=0.0 if c < 100 else 0.5) for c in range(1000)]
    settings = Heterogeneity(profiles=profiles)
    transport = HeterogeneousTransport(
        InProcessTransport(linear_client, 1000, SerialExecutor()), profiles, settings, seed=1
    )
    online = []
    for round_num in (1, 2):
        transport.begin_round(round_num)
        online.append(set(transport.available_clients()))
        assert set(transport.available_clients()) == online[-1]  # stable within a round
    assert all(c >= 100 for c in online[0] | online[1])
    assert 400 < len(online[0]) < 500 and online[0] != online[1]
    again = HeterogeneousTransport(
        InProcessTransport(linear_client, 1000, SerialExecutor()), profiles, settings, seed=1
    )
    again.begin_round(2)
    assert set(again.available_clients()) == online[1]


def test_availability_shrinks_the_sampled_cohort() -> None:
    history = run(Heterogeneity(availability=(0.5, 0.5)))
    sampled = [r.num_sampled for r in history.rounds]
    assert all(0 < n < 10 for n in sampled)
    assert run(None).rounds[0].num_sampled == 10


def test_clients_past_the_deadline_become_straggler_failures() -> None:
    # LinearClient c holds 20 + c examples; client c runs at speed 1 / (c + 1).
    profiles = [ClientProfile(speed=1.0 / (c + 1)) for c in range(10)]
    h = Heterogeneity(profiles=profiles, seconds_per_example=0.01, latency_s=0.5, deadline_s=1.9)
    history = run(h)
    durations = [0.5 + (20 + c) * 0.01 * (c + 1) for c in range(10)]
    late = [c for c, d in enumerate(durations) if d > 1.9]
    assert late == [5, 6, 7, 8, 9]
    for rec in history.rounds:
        assert [f.client_id for f in rec.failures] == late
        assert all(f.message.startswith("straggler: needed") for f in rec.failures)
        assert rec.num_results == 5 and rec.is_accepted
        assert rec.timings["simulated_train_s"] == 1.9  # the server waited until the deadline
    clock = [r.timings["simulated_clock_s"] for r in history.rounds]
    assert clock == pytest.approx([1.9, 3.8, 5.7])


def test_without_a_deadline_the_round_lasts_as_long_as_its_slowest_client() -> None:
    profiles = [ClientProfile(speed=2.0 if c == 9 else 1.0) for c in range(10)]
    h = Heterogeneity(profiles=profiles, seconds_per_example=0.1, epochs=2)
    rec = run(h, rounds=1).rounds[0]
    assert not rec.failures
    # client 8: 28 examples x 2 epochs x 0.1 s at speed 1 beats client 9's 29 x 2 x 0.1 / 2.
    assert rec.timings["simulated_train_s"] == pytest.approx(5.6)
    assert rec.timings["simulated_round_s"] == rec.timings["simulated_train_s"]


def test_heterogeneous_runs_are_reproducible_and_differ_from_homogeneous_ones() -> None:
    h = Heterogeneity(
        speed_sigma=1.0, availability=(0.3, 1.0), seconds_per_example=0.05, deadline_s=2.0
    )
    a, b = run(h, seed=2), run(h, seed=2)
    assert a == b and a.arrays == b.arrays
    assert [r.timings["simulated_round_s"] for r in a.rounds] == [
        r.timings["simulated_round_s"] for r in b.rounds
    ]
    assert any(r.failures for r in a.rounds)
    assert a != run(None, seed=2)


def test_bad_settings_say_what_to_change() -> None:
    with pytest.raises(fd.ConfigError, match="speed"):
        ClientProfile(speed=0.0)
    with pytest.raises(fd.ConfigError, match="availability"):
        Heterogeneity(availability=(0.8, 0.2))
    with pytest.raises(fd.ConfigError, match="deadline_s"):
        Heterogeneity(deadline_s=0.0)
    with pytest.raises(fd.ConfigError, match="one profile per client"):
        run(Heterogeneity(profiles=[ClientProfile()] * 3))


class EpochsClient(fd.Client):
    """Reports the local epochs its task asked for (the server sends E = 20)."""

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        epochs = float(config["epochs"])  # type: ignore[arg-type]  # a number in these tests
        return fd.TrainResult(arrays=arrays, num_examples=10, metrics={"epochs": epochs})

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        return fd.EvalResult(loss=0.0, num_examples=10)


def epochs_seen(stragglers: float, partial_work: bool, seed: int = 0) -> list[list[float]]:
    """Return, per round, the epochs each of 10 clients trained (-1: dropped)."""
    h = Heterogeneity(straggler_fraction=stragglers, partial_work=partial_work)
    transport = HeterogeneousTransport(
        InProcessTransport(lambda cid: EpochsClient(), 10, SerialExecutor()),
        Heterogeneity().client_profiles(10, seed),
        h,
        seed=seed,
    )
    rounds = []
    for round_num in (1, 2, 3):
        transport.begin_round(round_num)
        tasks = [
            fd.TrainTask(round_num=round_num, client_id=c, arrays=INITIAL, config={"epochs": 20})
            for c in range(10)
        ]
        seen = [-1.0] * 10
        for cid, outcome in transport.run(tasks):
            if isinstance(outcome, fd.TrainResult):
                seen[cid] = outcome.metrics["epochs"]
            else:
                assert isinstance(outcome, fd.Failure)
                assert outcome.message.startswith("straggler: could do")
        rounds.append(seen)
    return rounds


def test_stragglers_do_partial_work_as_in_the_fedprox_paper() -> None:
    partial = epochs_seen(0.5, partial_work=True)
    for seen in partial:
        cut = [e for e in seen if e != 20]
        assert len(cut) == 5  # round(0.5 x 10) stragglers per round
        assert all(1 <= e <= 19 and e == int(e) for e in cut)
    assert partial[0] != partial[1]  # new stragglers and epochs each round
    assert partial == epochs_seen(0.5, partial_work=True)  # drawn from the seed
    assert partial != epochs_seen(0.5, partial_work=True, seed=1)


def test_without_partial_work_the_same_stragglers_are_dropped_untrained() -> None:
    partial = epochs_seen(0.5, partial_work=True)
    dropped = epochs_seen(0.5, partial_work=False)
    for kept, seen in zip(partial, dropped, strict=True):
        # The same clients straggle; FedAvg's rule drops them instead of using their work.
        assert [e == 20 for e in kept] == [e == 20 for e in seen]
        assert all(e in (20, -1) for e in seen)
    assert epochs_seen(0.0, partial_work=False) == [[20.0] * 10] * 3


def test_dropped_stragglers_are_failures_the_strategy_tolerates() -> None:
    h = Heterogeneity(straggler_fraction=0.3, epochs=2)
    history = run(h)
    for rec in history.rounds:
        assert len(rec.failures) == 3 and rec.num_results == 7 and rec.is_accepted
    with pytest.raises(fd.ConfigError, match="at least 2 local epochs"):
        run(Heterogeneity(straggler_fraction=0.3))  # E = 1 leaves no partial work
    with pytest.raises(fd.ConfigError, match="straggler_fraction"):
        Heterogeneity(straggler_fraction=1.5)
