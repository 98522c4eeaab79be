"""The accountant against dp_accounting's own test vectors, and its invariants."""

from __future__ import annotations

import itertools
import math

import dp_accounting
import pytest

from federa.errors import ConfigError
from federa.privacy.accountant import (
    PrivacyAccountant,
    compute_epsilon,
    noise_for_target_epsilon,
)

# dp_accounting's rdp_privacy_accountant_test.test_compute_epsilon_delta_gaussian:
# "noise multiplier is chosen to obtain exactly (1,1e-6)-DP" for one Gaussian step.
SIGMA_EPS1 = 4.530877117
# PLD's grid step in the tests: ten times dp_accounting's default, over ten times faster,
# and still a pessimistic (valid) estimate.
COARSE = 1e-3


def epsilon(accountant: str, q: float, z: float, steps: int, delta: float = 1e-5) -> float:
    acc = PrivacyAccountant(
        noise_multiplier=z,
        delta=delta,
        accountant=accountant,  # type: ignore[arg-type]  # "rdp" or "pld" from the tests
        value_discretization_interval=COARSE,
    )
    acc.record(q, steps)
    return acc.epsilon()


def test_rdp_matches_dp_accountings_test_vector() -> None:
    acc = PrivacyAccountant(noise_multiplier=SIGMA_EPS1, delta=1e-6, accountant="rdp")
    acc.record(1.0)
    assert acc.epsilon() == pytest.approx(1.0, abs=1e-3)


def test_pld_of_one_gaussian_step_is_the_exact_gaussian_epsilon() -> None:
    # Balle and Wang's analytic Gaussian mechanism is the exact epsilon; RDP's is an
    # upper bound (1.0 for this sigma), PLD's a tight pessimistic estimate.
    exact = dp_accounting.get_epsilon_gaussian(SIGMA_EPS1, 1e-6)
    acc = PrivacyAccountant(noise_multiplier=SIGMA_EPS1, delta=1e-6, accountant="pld")
    acc.record(1.0)
    assert acc.epsilon() == pytest.approx(exact, abs=1e-4)
    assert exact < acc.epsilon() + 1e-9 < 1.0


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_epsilon_grows_with_every_round(accountant: str) -> None:
    acc = PrivacyAccountant(
        noise_multiplier=1.1,
        delta=1e-5,
        accountant=accountant,  # type: ignore[arg-type]  # "rdp" or "pld"
        value_discretization_interval=COARSE,
    )
    epsilons = [acc.epsilon()]
    for _ in range(8):
        acc.record(0.2)
        epsilons.append(acc.epsilon())
    assert epsilons[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(epsilons)), epsilons


@pytest.mark.parametrize(("q", "z", "steps"), [(1.0, 2.0, 3), (0.2, 1.0, 5), (0.05, 0.8, 20)])
def test_pld_is_tighter_than_rdp_but_of_the_same_size(q: float, z: float, steps: int) -> None:
    rdp, pld = epsilon("rdp", q, z, steps), epsilon("pld", q, z, steps)
    assert 0.6 * rdp < pld <= rdp


def test_rounds_recorded_one_by_one_match_one_composition() -> None:
    one_by_one = PrivacyAccountant(
        noise_multiplier=1.0, delta=1e-5, accountant="pld", value_discretization_interval=COARSE
    )
    for _ in range(4):
        one_by_one.epsilon()  # caches the composed PLD of each prefix
        one_by_one.record(0.1)
    assert one_by_one.epsilon() == pytest.approx(epsilon("pld", 0.1, 1.0, 4), rel=1e-5)


def test_mixed_sampling_rates_compose_and_survive_state_dict() -> None:
    acc = PrivacyAccountant(noise_multiplier=1.0, delta=1e-5)
    acc.record(0.01, 2)
    acc.record(0.03)
    assert acc.num_steps == 3
    low = compute_epsilon(noise_multiplier=1.0, sampling_rate=0.01, num_steps=3, delta=1e-5)
    high = compute_epsilon(noise_multiplier=1.0, sampling_rate=0.03, num_steps=3, delta=1e-5)
    assert low < acc.epsilon() < high
    assert acc.epsilon_after(0.03) > acc.epsilon()
    assert acc.num_steps == 3  # epsilon_after records nothing

    restored = PrivacyAccountant(noise_multiplier=1.0, delta=1e-5)
    restored.load_state_dict(acc.state_dict())
    assert restored.steps == acc.steps
    assert restored.epsilon() == acc.epsilon()


def test_noise_for_target_epsilon_recovers_the_test_vector() -> None:
    z = noise_for_target_epsilon(1.0, delta=1e-6, sampling_rate=1.0, num_steps=1, rtol=1e-4)
    assert z == pytest.approx(SIGMA_EPS1, rel=1e-3)
    assert compute_epsilon(noise_multiplier=z, sampling_rate=1.0, num_steps=1, delta=1e-6) <= 1.0


def test_noise_for_target_epsilon_is_the_smallest_that_fits() -> None:
    z = noise_for_target_epsilon(3.0, delta=1e-5, sampling_rate=1.0, num_steps=10, rtol=1e-3)
    assert epsilon("rdp", 1.0, z, 10) <= 3.0
    assert epsilon("rdp", 1.0, z * (1 - 2e-3), 10) > 3.0
    assert epsilon("pld", 1.0, z, 10) <= 3.0  # PLD is tighter


def test_no_noise_is_infinitely_expensive() -> None:
    acc = PrivacyAccountant(noise_multiplier=0.0, delta=1e-5)
    assert acc.epsilon() == 0.0
    acc.record(0.5)
    assert math.isinf(acc.epsilon())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise_multiplier": 1.0, "delta": 0.0}, "delta must be in (0, 1)"),
        ({"noise_multiplier": -1.0, "delta": 1e-5}, "noise_multiplier must be a number >= 0"),
        ({"noise_multiplier": 1.0, "delta": 1e-5, "accountant": "gdp"}, "accountant must be one"),
    ],
)
def test_bad_parameters_raise_config_errors(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        PrivacyAccountant(**kwargs)  # type: ignore[arg-type]  # deliberately bad values
    acc = PrivacyAccountant(noise_multiplier=1.0, delta=1e-5)
    with pytest.raises(ConfigError, match="sampling rate"):
        acc.record(1.5)
