"""Local DP: LocalDPClient clips and noises on the client; LocalDPAccounting reports epsilon."""

from __future__ import annotations

import numpy as np
import pytest

import federa as fd
from federa.client import LocalDPClient
from federa.client.runner import run_task
from federa.errors import ConfigError
from federa.privacy import LocalDPAccounting, compute_epsilon, model_update, update_norm
from federa.strategy import FedAvg


class ShiftClient(fd.Client):
    """Adds a fixed vector to the float arrays; counts its rounds in its state."""

    def __init__(self, shift: float) -> None:
        self.shift = shift

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        rounds = int(self.state["rounds"][0]) + 1 if "rounds" in self.state else 1
        self.state = fd.Arrays({"rounds": np.array([rounds])})
        new = {
            k: (v + self.shift).astype(v.dtype) if v.dtype.kind == "f" else v + 5
            for k, v in arrays.items()
        }
        return fd.TrainResult(arrays=fd.Arrays(new), num_examples=7, metrics={"loss": 0.5})

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        return fd.EvalResult(loss=1.0, num_examples=7)


def arrays(size: int = 16) -> fd.Arrays:
    return fd.Arrays({"w": np.zeros(size, np.float32), "steps": np.array([1], np.int64)})


def test_without_noise_the_update_sent_is_clipped() -> None:
    client = LocalDPClient(ShiftClient(1.0), clip_norm=2.0, noise_multiplier=0.0)
    out = client.fit(arrays(), {"seed": 1})
    assert update_norm(model_update(out.arrays, arrays())) == pytest.approx(2.0, rel=1e-6)
    assert out.arrays["steps"][0] == 1  # integer arrays go back as received
    assert out.num_examples == 7
    assert out.metrics == {"loss": 0.5}


def test_noise_has_std_z_c_and_is_drawn_from_the_task_seed() -> None:
    client = LocalDPClient(ShiftClient(0.0), clip_norm=0.5, noise_multiplier=3.0)
    big = arrays(100_000)
    first = client.fit(big, {"seed": 11}).arrays["w"].astype(np.float64)
    assert first.std() == pytest.approx(1.5, rel=1e-2)  # z C, over 1e5 coordinates
    assert np.array_equal(client.fit(big, {"seed": 11}).arrays["w"], first)
    assert not np.array_equal(client.fit(big, {"seed": 12}).arrays["w"], first)


def test_secure_noise_does_not_repeat_with_the_seed() -> None:
    client = LocalDPClient(ShiftClient(0.0), clip_norm=1.0, noise_multiplier=1.0, secure_noise=True)
    a = client.fit(arrays(), {"seed": 3}).arrays["w"]
    b = client.fit(arrays(), {"seed": 3}).arrays["w"]
    assert not np.array_equal(a, b)


def test_the_runner_sees_the_inner_clients_state() -> None:
    client = LocalDPClient(ShiftClient(0.1), clip_norm=1.0, noise_multiplier=0.1)
    task = fd.TrainTask(
        round_num=2,
        client_id=0,
        arrays=arrays(),
        seed=5,
        state=fd.Arrays({"rounds": np.array([4])}),
    )
    out = run_task(client, task)
    assert isinstance(out, fd.TrainResult)
    assert out.state is not None and out.state["rounds"][0] == 5


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="clip_norm"):
        LocalDPClient(ShiftClient(0.0), clip_norm=-1.0, noise_multiplier=1.0)
    with pytest.raises(ConfigError, match="noise_multiplier"):
        LocalDPClient(ShiftClient(0.0), clip_norm=1.0, noise_multiplier=float("nan"))


def local_client(cid: int) -> fd.Client:
    return LocalDPClient(ShiftClient(0.05 * (cid + 1)), clip_norm=1.0, noise_multiplier=2.0)


def test_simulated_local_dp_reports_a_clients_epsilon_and_stops_at_the_target() -> None:
    def strategy() -> LocalDPAccounting:
        return LocalDPAccounting(
            FedAvg(fraction_train=0.5, min_train_clients=1),
            noise_multiplier=2.0,
            delta=1e-5,
            target_epsilon=8.0,
        )

    first, second = strategy(), strategy()
    history = fd.simulate(
        local_client, first, num_clients=6, num_rounds=12, initial=arrays(), seed=4
    )
    again = fd.simulate(
        local_client, second, num_clients=6, num_rounds=12, initial=arrays(), seed=4
    )
    assert again == history  # reproducible from the seed
    assert again.arrays == history.arrays
    spent = history.series("train_epsilon")
    trained = [rec.round_num for rec in history.rounds if rec.num_sampled]
    assert [r for r, _ in spent] == trained
    assert 1 < len(trained) < 12  # the budget ran out before the last round
    for num, (_, eps) in enumerate(spent, start=1):
        # A client in every round: num unsampled Gaussian releases with z = 2.
        assert eps == pytest.approx(
            compute_epsilon(noise_multiplier=2.0, sampling_rate=1.0, num_steps=num, delta=1e-5)
        )
    assert spent[-1][1] <= 8.0
    assert first.is_budget_exhausted
