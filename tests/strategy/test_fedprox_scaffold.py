import numpy as np
import pytest
import torch

import federa as fd
from federa.strategy.fedprox import FedProx
from federa.strategy.scaffold import CONTROL_PREFIX, Scaffold, split_control
from federa.torch import TorchClient, TrainConfig

from ..simulation.clients import tiny_model, torch_client, torch_initial


def ctx(round_num: int = 1) -> fd.RoundContext:
    return fd.RoundContext(round_num=round_num, rng=np.random.default_rng(0), seed=0)


def data(seed: int = 0, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    return x, (x.flatten(1).sum(1) > 0).long()


def test_fedprox_sends_mu_to_every_client() -> None:
    arrays = fd.Arrays({"w": np.zeros(2)})
    tasks = FedProx(proximal_mu=0.1, train_config={"lr": 0.5}).configure_train(
        ctx(), arrays, range(4)
    )
    assert [t.config for t in tasks] == [{"lr": 0.5, "proximal_mu": 0.1}] * 4


def test_fedprox_rejects_non_positive_mu() -> None:
    with pytest.raises(fd.ConfigError, match="proximal_mu must be > 0"):
        FedProx(proximal_mu=0)


def test_proximal_term_keeps_the_local_model_near_the_global_one() -> None:
    initial = torch_initial()
    distances = {}
    for mu in (0.0, 1.0, 10.0):
        client = TorchClient(tiny_model, data(), share_model=False)
        config = {"seed": 1, "proximal_mu": mu, "epochs": 5}
        new = client.fit(initial, config).arrays
        distances[mu] = sum(float(np.sum((new[k] - initial[k]) ** 2)) for k in initial)
    assert distances[10.0] < distances[1.0] < distances[0.0]


def test_scaffold_server_update_follows_option_ii() -> None:
    strategy = Scaffold(fraction_train=0.5, min_train_clients=1)
    x = fd.Arrays({"w": np.zeros(2, np.float32)})
    strategy.configure_train(ctx(), x, range(4))  # N = 4 clients, c = 0
    results = [
        (0, _result([1.0, 2.0], [0.5, 0.0])),
        (1, _result([3.0, 0.0], [0.5, 1.0])),
    ]
    new, _ = strategy.aggregate_train(ctx(), x, results, [])
    assert new is not None
    # x + 1.0 * mean(y_i - x) and c + |S|/N * mean(delta c_i) = 0.5 * [0.5, 0.5].
    np.testing.assert_allclose(new["w"], [2.0, 1.0])
    assert strategy.control is not None
    np.testing.assert_allclose(strategy.control["w"], [0.25, 0.25])
    restored = Scaffold()
    restored.load_state_dict(strategy.state_dict())
    assert restored.control == strategy.control
    assert restored.num_clients == 4


def _result(y: list[float], delta_c: list[float]) -> fd.TrainResult:
    arrays = fd.Arrays(
        {"w": np.array(y, np.float32), CONTROL_PREFIX + "w": np.array(delta_c, np.float32)}
    )
    return fd.TrainResult(arrays=arrays, num_examples=10)


def test_scaffold_client_with_zero_controls_trains_like_plain_sgd_and_reports_drift() -> None:
    initial = torch_initial()
    zeros = fd.Arrays((CONTROL_PREFIX + k, np.zeros_like(v)) for k, v in initial.items())
    payload = fd.Arrays([*initial.items(), *zeros.items()])
    cfg = TrainConfig(batch_size=8, lr=0.1)
    plain = TorchClient(tiny_model, data(), train_config=cfg, share_model=False)
    scaffold = TorchClient(tiny_model, data(), train_config=cfg, share_model=False)
    expected = plain.fit(initial, {"seed": 3}).arrays
    result = scaffold.fit(payload, {"seed": 3})
    model, delta_c = split_control(result.arrays)
    assert model == expected
    steps = result.metrics["num_steps"]
    np.testing.assert_allclose(
        delta_c["1.weight"],
        ((initial["1.weight"] - expected["1.weight"]) / (steps * 0.1)),
        rtol=1e-5,
        atol=1e-6,
    )
    assert scaffold.state == delta_c  # c_i started at 0, so c_i+ = delta c_i


def test_scaffold_simulation_keeps_client_state_and_is_worker_independent() -> None:
    def run(workers: int | None) -> fd.History:
        return fd.simulate(
            torch_client,
            Scaffold(fraction_train=0.5, min_train_clients=1),
            num_clients=4,
            num_rounds=3,
            initial=torch_initial(),
            seed=2,
            executor=workers,
        )

    serial, pooled = run(None), run(2)
    assert serial.arrays is not None
    assert set(serial.arrays) == set(torch_initial())
    assert pooled == run(1)
    assert all(r.is_accepted for r in serial.rounds)
    np.testing.assert_allclose(
        np.concatenate([v.ravel() for v in serial.arrays.values()]),
        np.concatenate([v.ravel() for v in pooled.arrays.values()]),
        rtol=1e-5,
        atol=1e-6,
    )


def test_client_state_reaches_the_next_round_in_simulation() -> None:
    seen: list[int] = []

    class Counting(fd.Client):
        def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
            count = int(self.state["count"]) if "count" in self.state else 0
            seen.append(count)
            self.state = fd.Arrays({"count": np.array(count + 1)})
            return fd.TrainResult(arrays=arrays, num_examples=1)

        def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
            raise NotImplementedError

    fd.simulate(
        lambda cid: Counting(),
        fd.FedAvg(min_train_clients=1),
        num_clients=1,
        num_rounds=3,
        initial=fd.Arrays({"w": np.zeros(1)}),
    )
    assert seen == [0, 1, 2]
