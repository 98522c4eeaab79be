"""Privacy accounting for repeated, subsampled Gaussian releases, on Google's `dp_accounting`.

Each DP round of federa releases one Gaussian mechanism of noise multiplier z (noise
standard deviation over L2 sensitivity) on a cohort drawn with sampling rate
q = cohort size / number of clients. `PrivacyAccountant` composes those rounds and
reports epsilon for a fixed delta, with either of `dp_accounting`'s accountants:

- "rdp": Renyi DP of the Poisson-subsampled Gaussian (Mironov, Talwar, Zhang,
  "Renyi Differential Privacy of the Sampled Gaussian Mechanism", 2019), converted to
  (epsilon, delta) at the best of `dp_accounting`'s default orders. Cheap: each
  sampling rate's RDP curve is computed once, and T rounds cost a multiplication.
- "pld": privacy loss distributions (Koskela, Jalko, Honkela 2020; Doroshenko,
  Ghazi, Kamath, Kumar, Manurangsi, "Connect the Dots", 2022), a pessimistic numerical
  estimate that is tighter than RDP (a single unsampled Gaussian step comes within
  1e-6 of the exact epsilon of Balle and Wang 2018). Slower: at q = 0.1 building one
  round's PLD took about a second here and composing each further round about 0.2 s.

Neighbouring datasets differ by adding or removing one client (user-level DP, as in
McMahan et al. ICLR 2018). Poisson subsampling is an approximation: federa's
strategies draw a fixed-size cohort uniformly without replacement, and the amplification
is computed as if each client had been included independently with probability q (a
common approximation in practice, not a proof for the sampling actually done). With
q = 1 (every client every round) there is no subsampling and no approximation.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np

from federa.errors import ConfigError

logger = logging.getLogger(__name__)

AccountantName = Literal["rdp", "pld"]
ACCOUNTANTS: tuple[AccountantName, ...] = ("pld", "rdp")


def _dp_accounting() -> Any:
    """Import `dp_accounting`, or raise ConfigError saying which extra installs it."""
    try:
        import dp_accounting
    except ModuleNotFoundError:
        raise ConfigError(
            "differential privacy accounting needs dp-accounting: pip install 'federa[privacy]'"
        ) from None
    return dp_accounting


@contextmanager
def _quiet_absl() -> Iterator[None]:
    """Silence absl's warning for each RDP order whose series does not converge.

    dp_accounting leaves such an order out of the minimum, so the bound stays valid;
    federa logs how many were left out at DEBUG level instead.
    """
    absl = logging.getLogger("absl")
    previous = absl.level
    absl.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl.setLevel(previous)


def check_delta(delta: float) -> None:
    """Raise ConfigError unless 0 < delta < 1."""
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta must be in (0, 1), got {delta}; 1/num_clients^1.1 is usual")


def check_sampling_rate(sampling_rate: float) -> None:
    """Raise ConfigError unless 0 < sampling_rate <= 1."""
    if not 0.0 < sampling_rate <= 1.0:
        raise ConfigError(f"sampling rate must be in (0, 1], got {sampling_rate}")


def check_accountant(accountant: str) -> None:
    """Raise ConfigError unless `accountant` is "rdp" or "pld"."""
    if accountant not in ACCOUNTANTS:
        raise ConfigError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")


def sampled_gaussian_event(noise_multiplier: float, sampling_rate: float) -> Any:
    """Return the `dp_accounting` event of one (Poisson-subsampled) Gaussian release."""
    dpa = _dp_accounting()
    gaussian = dpa.GaussianDpEvent(noise_multiplier)
    return gaussian if sampling_rate == 1.0 else dpa.PoissonSampledDpEvent(sampling_rate, gaussian)


class PrivacyAccountant:
    """Track epsilon at a fixed delta over rounds of a subsampled Gaussian mechanism.

    Rounds may use different sampling rates (fewer clients available in one round);
    each rate's steps are counted separately and composed.

    Args:
        noise_multiplier: z, the noise standard deviation over the L2 sensitivity (>= 0;
            0 releases without noise, and epsilon is infinite after one step).
        delta: The delta of the (epsilon, delta) guarantee reported.
        accountant: "rdp" or "pld".
        value_discretization_interval: PLD's grid step (smaller is tighter and slower).
    """

    def __init__(
        self,
        *,
        noise_multiplier: float,
        delta: float,
        accountant: AccountantName = "rdp",
        value_discretization_interval: float = 1e-4,
    ) -> None:
        if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
            raise ConfigError(f"noise_multiplier must be a number >= 0, got {noise_multiplier}")
        check_delta(delta)
        check_accountant(accountant)
        self.noise_multiplier = float(noise_multiplier)
        self.delta = float(delta)
        self.accountant: AccountantName = accountant
        self.value_discretization_interval = value_discretization_interval
        self._steps: dict[float, int] = {}
        self._rdp_curves: dict[float, np.ndarray[Any, Any]] = {}
        self._plds: dict[float, Any] = {}
        self._composed: tuple[tuple[tuple[float, int], ...], Any] | None = None
        _dp_accounting()  # fail at construction, not after the first round

    def __repr__(self) -> str:
        return (
            f"PrivacyAccountant(noise_multiplier={self.noise_multiplier}, delta={self.delta}, "
            f"accountant={self.accountant!r}, num_steps={self.num_steps})"
        )

    @property
    def num_steps(self) -> int:
        """Return how many releases have been recorded."""
        return sum(self._steps.values())

    @property
    def steps(self) -> dict[float, int]:
        """Return sampling rate -> releases recorded at that rate."""
        return dict(self._steps)

    def record(self, sampling_rate: float, count: int = 1) -> None:
        """Record `count` releases at `sampling_rate`."""
        check_sampling_rate(sampling_rate)
        if count < 0:
            raise ConfigError(f"count must be >= 0, got {count}")
        if count:
            self._steps[float(sampling_rate)] = self._steps.get(float(sampling_rate), 0) + count

    def epsilon(self) -> float:
        """Return epsilon at `delta` for the releases recorded so far (0 before any)."""
        return self._epsilon(self._steps)

    def epsilon_after(self, sampling_rate: float, count: int = 1) -> float:
        """Return the epsilon `count` more releases at `sampling_rate` would bring."""
        check_sampling_rate(sampling_rate)
        steps = dict(self._steps)
        steps[float(sampling_rate)] = steps.get(float(sampling_rate), 0) + count
        return self._epsilon(steps)

    def _epsilon(self, steps: Mapping[float, int]) -> float:
        steps = {q: n for q, n in steps.items() if n > 0}
        if not steps:
            return 0.0
        if self.noise_multiplier == 0.0:
            return math.inf
        if self.accountant == "rdp":
            return self._rdp_epsilon(steps)
        return self._pld_epsilon(steps)

    def _rdp_curve(self, sampling_rate: float) -> np.ndarray[Any, Any]:
        curve = self._rdp_curves.get(sampling_rate)
        if curve is None:
            rdp = _dp_accounting().rdp
            acc = rdp.RdpAccountant()
            with _quiet_absl():
                acc.compose(sampled_gaussian_event(self.noise_multiplier, sampling_rate))
            curve = np.asarray(acc.rdp, dtype=np.float64)
            logger.debug(
                "RDP at q=%g, z=%g: %d of %d orders did not converge and are left out",
                sampling_rate,
                self.noise_multiplier,
                int(np.isinf(curve).sum()),
                len(curve),
            )
            self._rdp_curves[sampling_rate] = curve
        return curve

    def _rdp_epsilon(self, steps: Mapping[float, int]) -> float:
        rdp = _dp_accounting().rdp
        total = sum(n * self._rdp_curve(q) for q, n in sorted(steps.items()))
        orders = rdp.RdpAccountant().orders
        epsilon, _ = rdp.compute_epsilon(orders, total, self.delta)
        return float(epsilon)

    def _pld(self, sampling_rate: float) -> Any:
        pld = self._plds.get(sampling_rate)
        if pld is None:
            module = _dp_accounting().pld.privacy_loss_distribution
            pld = module.from_gaussian_mechanism(
                self.noise_multiplier,
                sampling_prob=sampling_rate,
                value_discretization_interval=self.value_discretization_interval,
            )
            self._plds[sampling_rate] = pld
        return pld

    def _pld_epsilon(self, steps: Mapping[float, int]) -> float:
        key = tuple(sorted(steps.items()))
        composed = self._composed_pld(key)
        self._composed = (key, composed)
        return float(composed.get_epsilon_for_delta(self.delta))

    def _composed_pld(self, key: tuple[tuple[float, int], ...]) -> Any:
        # Rounds arrive one at a time: compose the cached PLD with one more step rather
        # than redo T steps (which would also cost time growing with T).
        if self._composed is not None:
            old_key, old = self._composed
            if old_key == key:
                return old
            old_steps, new_steps = dict(old_key), dict(key)
            grown = [q for q in new_steps if new_steps[q] != old_steps.get(q, 0)]
            if (
                len(grown) == 1
                and set(old_steps) <= set(new_steps)
                and new_steps[grown[0]] > old_steps.get(grown[0], 0)
            ):
                extra = new_steps[grown[0]] - old_steps.get(grown[0], 0)
                return old.compose(self._pld(grown[0]).self_compose(extra))
        composed = None
        for q, n in key:
            part = self._pld(q).self_compose(n)
            composed = part if composed is None else composed.compose(part)
        return composed

    def state_dict(self) -> dict[str, Any]:
        """Return the releases recorded so far (sampling rates and counts)."""
        rates = sorted(self._steps)
        return {"sampling_rates": rates, "counts": [self._steps[q] for q in rates]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output."""
        if set(state) != {"sampling_rates", "counts"}:
            raise ConfigError(
                f"accountant state must hold sampling_rates and counts, got {sorted(state)}"
            )
        rates, counts = list(state["sampling_rates"]), list(state["counts"])
        if len(rates) != len(counts):
            raise ConfigError("accountant state has as many sampling rates as counts")
        self._steps = {}
        for q, n in zip(rates, counts, strict=True):
            self.record(float(q), int(n))


def compute_epsilon(
    *,
    noise_multiplier: float,
    sampling_rate: float,
    num_steps: int,
    delta: float,
    accountant: AccountantName = "rdp",
) -> float:
    """Return epsilon at `delta` after `num_steps` releases at `sampling_rate`."""
    acc = PrivacyAccountant(noise_multiplier=noise_multiplier, delta=delta, accountant=accountant)
    acc.record(sampling_rate, num_steps)
    return acc.epsilon()


def noise_for_target_epsilon(
    target_epsilon: float,
    *,
    delta: float,
    sampling_rate: float,
    num_steps: int,
    accountant: AccountantName = "rdp",
    rtol: float = 1e-3,
) -> float:
    """Return the smallest noise multiplier (within `rtol`) whose epsilon stays <= target.

    Bisection on z, bracketed by doubling or halving from z = 1; the value returned is
    the upper end of the final bracket, so its epsilon never exceeds `target_epsilon`.

    Raises:
        ConfigError: A parameter is out of range, or the target needs z > 1e6.
    """
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise ConfigError(f"target epsilon must be a positive number, got {target_epsilon}")
    check_sampling_rate(sampling_rate)
    if num_steps < 1:
        raise ConfigError(f"num_steps must be >= 1, got {num_steps}")
    if not 0.0 < rtol < 1.0:
        raise ConfigError(f"rtol must be in (0, 1), got {rtol}")

    def epsilon(z: float) -> float:
        return compute_epsilon(
            noise_multiplier=z,
            sampling_rate=sampling_rate,
            num_steps=num_steps,
            delta=delta,
            accountant=accountant,
        )

    low, high = 0.5, 1.0
    if epsilon(high) <= target_epsilon:
        while epsilon(low) <= target_epsilon:
            low, high = low / 2.0, low
            if high < 1e-3:
                return high
    else:
        while True:
            low, high = high, high * 2.0
            if high > 1e6:
                raise ConfigError(
                    f"epsilon {target_epsilon:g} at delta {delta:g} after {num_steps} rounds "
                    "needs a noise multiplier above 1e6; raise the target or train fewer rounds"
                )
            if epsilon(high) <= target_epsilon:
                break
    while (high - low) > rtol * high:
        middle = (low + high) / 2.0
        if epsilon(middle) <= target_epsilon:
            high = middle
        else:
            low = middle
    return high
