import numpy as np
import pytest
import torch

import federa as fd
from federa.simulation.attacks import Attack, ByzantineClient, choose_attackers, with_attack
from federa.torch import TorchClient

from .clients import LinearClient, linear_client, tiny_model

X = fd.Arrays({"w": np.array([1.0, 2.0, 3.0])})


def honest_update() -> np.ndarray:
    return LinearClient(0).fit(X, {"seed": 5}).arrays["w"] - X["w"]


def test_attackers_are_a_seeded_fraction_of_the_clients() -> None:
    chosen = choose_attackers(50, 0.2, seed=3)
    assert len(chosen) == 10
    assert chosen == choose_attackers(50, 0.2, seed=3)
    assert chosen != choose_attackers(50, 0.2, seed=4)
    assert all(0 <= c < 50 for c in chosen)
    with pytest.raises(fd.ConfigError, match="--attackers"):
        choose_attackers(10, 1.0, seed=0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("signflip", lambda u: X["w"] - 3.0 * u),
        ("scaled", lambda u: X["w"] + 3.0 * u),
        ("constant", lambda u: X["w"] + 3.0),
    ],
)
def test_update_attacks_transform_the_honest_update(name: str, expected: object) -> None:
    client = ByzantineClient(LinearClient(0), Attack(name=name, scale=3.0))
    sent = client.fit(X, {"seed": 5}).arrays["w"]
    np.testing.assert_allclose(sent, expected(honest_update()))  # type: ignore[operator]


def test_noise_attack_is_reproducible_from_the_task_seed() -> None:
    client = ByzantineClient(LinearClient(0), Attack(name="noise", scale=2.0))
    a = client.fit(X, {"seed": 5}).arrays["w"]
    assert np.array_equal(a, client.fit(X, {"seed": 5}).arrays["w"])
    assert not np.array_equal(a, client.fit(X, {"seed": 6}).arrays["w"])


def test_labelflip_trains_on_flipped_labels() -> None:
    y = torch.tensor([0, 1, 2, 2])
    client = TorchClient(tiny_model, (torch.zeros(4, 1, 4, 4), y))
    ByzantineClient(client, Attack(name="labelflip"))
    assert client.y.tolist() == [2, 1, 0, 0]


def test_unknown_attack_and_bad_scale_are_refused() -> None:
    with pytest.raises(fd.ConfigError, match="unknown attack 'bribe'"):
        Attack(name="bribe")
    with pytest.raises(fd.ConfigError, match="--attack-scale"):
        Attack(name="noise", scale=0.0)


def test_only_the_chosen_clients_attack_in_a_simulation() -> None:
    attack = Attack(name="signflip", attackers=frozenset({1}))
    client_fn = with_attack(linear_client, attack)
    assert isinstance(client_fn(1), ByzantineClient)
    assert isinstance(client_fn(0), LinearClient)
    history = fd.simulate(
        client_fn,
        fd.FedAvg(fraction_train=1.0),
        num_clients=4,
        num_rounds=2,
        initial=fd.Arrays({"w": np.zeros(3)}),
    )
    assert all(r.is_accepted for r in history.rounds)
