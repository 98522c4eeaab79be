"""Differentially private federated averaging as wrappers around a strategy.

`CentralDP` is DP-FedAvg: McMahan, Ramage, Talwar, Zhang, "Learning Differentially
Private Recurrent Language Models", ICLR 2018, with the adaptive clipping of Andrew,
Thakkar, McMahan, Ramaswamy, NeurIPS 2021 as an option. The server (trusted) clips each
client's update, averages and adds Gaussian noise; the guarantee covers the released
models at the client level. `LocalDPAccounting` is the server's half of local DP, where
each client clips and noises its own update (`federa.client.LocalDPClient`): it only
reports the epsilon the clients have spent.

Both report "epsilon" (at their delta) in every accepted round's training metrics and
stop a run before it would spend more than `target_epsilon`: `configure_train` then
samples nobody, and the remaining rounds do nothing. The clients' own training metrics
(loss, accuracy) are passed on unprivatized: they are for the server's eyes, not covered
by the guarantee.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from federa.core.arrays import Arrays, NDArray
from federa.core.messages import (
    EvalResult,
    EvalTask,
    Failure,
    Metrics,
    TrainResult,
    TrainTask,
)
from federa.errors import ConfigError
from federa.privacy.accountant import (
    AccountantName,
    PrivacyAccountant,
    noise_for_target_epsilon,
)
from federa.privacy.adaptive import AdaptiveClipping
from federa.privacy.clipping import check_clip_norm, clip_scale, model_update, update_norm
from federa.privacy.gaussian import check_noise_multiplier, gaussian_noise
from federa.strategy.base import RoundContext, Strategy
from federa.strategy.fednova import FedNova
from federa.strategy.fedopt import round_metrics, select_results
from federa.strategy.krum import ByzantineFedAvg
from federa.strategy.median import CoordinateWise
from federa.strategy.qfedavg import QFedAvg
from federa.strategy.scaffold import Scaffold

# Strategies that need each client's own result (its loss, step count, control variate
# or position among the others) and so cannot take the one noised mean DP releases.
INCOMPATIBLE = (ByzantineFedAvg, CoordinateWise, FedNova, QFedAvg, Scaffold)


class _Wrapper(Strategy):
    """Delegate evaluation to an inner strategy and keep a privacy ledger."""

    def __init__(
        self,
        inner: Strategy,
        *,
        noise_multiplier: float,
        delta: float,
        target_epsilon: float | None,
        accountant: AccountantName,
    ) -> None:
        check_noise_multiplier(noise_multiplier)
        if target_epsilon is not None and not target_epsilon > 0:
            raise ConfigError(f"target_epsilon must be > 0, got {target_epsilon}")
        self.inner = inner
        self.noise_multiplier = float(noise_multiplier)
        self.target_epsilon = target_epsilon
        self.accountant = PrivacyAccountant(
            noise_multiplier=noise_multiplier, delta=delta, accountant=accountant
        )
        self.is_budget_exhausted = False

    @property
    def delta(self) -> float:
        """Return the delta at which epsilon is reported."""
        return self.accountant.delta

    def epsilon(self) -> float:
        """Return the epsilon spent so far."""
        return self.accountant.epsilon()

    def _within_budget(self, sampling_rate: float) -> bool:
        if self.target_epsilon is None:
            return True
        if self.accountant.epsilon_after(sampling_rate) <= self.target_epsilon:
            return True
        self.is_budget_exhausted = True
        return False

    def configure_evaluate(
        self, ctx: RoundContext, arrays: Arrays, available: Sequence[int]
    ) -> list[EvalTask]:
        """Let the inner strategy choose the evaluation cohort."""
        return self.inner.configure_evaluate(ctx, arrays, available)

    def aggregate_evaluate(
        self,
        ctx: RoundContext,
        results: Sequence[tuple[int, EvalResult]],
        failures: Sequence[Failure],
    ) -> tuple[float | None, Metrics]:
        """Let the inner strategy combine the evaluation results."""
        return self.inner.aggregate_evaluate(ctx, results, failures)

    def evaluate(self, ctx: RoundContext, arrays: Arrays) -> tuple[float, Metrics] | None:
        """Let the inner strategy evaluate centrally."""
        return self.inner.evaluate(ctx, arrays)


class CentralDP(_Wrapper):
    """DP-FedAvg: clip each update on the server, average, add Gaussian noise.

    The estimator is McMahan et al.'s fixed-denominator one with every client weighted
    equally: Delta = (sum_k clip(Delta_k, C) + N(0, (z C)^2 I)) / m, where m is the number
    of clients sampled this round (a failed or non-finite result counts as a zero
    update, so the sensitivity stays C / m). The noised mean is handed to the inner
    strategy as the single result of the round, so FedAvg and FedProx step to
    x + Delta, FedAvgM adds server momentum and FedAdam/FedYogi/FedAdagrad take their
    adaptive step on it (DP-FedAvgM, DP-FedAdam). Strategies that need each client's own
    result (robust rules, SCAFFOLD, FedNova, q-FedAvg) are refused. Integer arrays keep
    the global value.

    Epsilon is reported for add-or-remove-one-client neighbours with the sampling rate
    q = m / num_clients, assuming Poisson sampling (see `federa.privacy.accountant`).
    The noise is drawn from the round's generator: keep the run seed secret.

    Args:
        inner: The strategy that samples clients and applies the noised mean.
        noise_multiplier: z (>= 0); the noise on the mean has standard deviation z C / m.
        clip_norm: A fixed clip norm C, or an `AdaptiveClipping` rule.
        num_clients: Clients in the population (the q denominator).
        delta: The delta at which epsilon is reported (1 / num_clients^1.1 is usual).
        target_epsilon: Stop before a round would bring epsilon above this.
        accountant: "rdp" or "pld" (see `PrivacyAccountant`).
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        noise_multiplier: float,
        clip_norm: float | AdaptiveClipping,
        num_clients: int,
        delta: float,
        target_epsilon: float | None = None,
        accountant: AccountantName = "rdp",
    ) -> None:
        if isinstance(inner, INCOMPATIBLE):
            raise ConfigError(
                f"CentralDP cannot wrap {type(inner).__name__}: it needs each client's own "
                "result, and DP releases only a noised mean; wrap FedAvg, FedProx, FedAvgM "
                "or a FedOpt strategy"
            )
        if num_clients < 1:
            raise ConfigError(f"num_clients must be >= 1, got {num_clients}")
        super().__init__(
            inner,
            noise_multiplier=noise_multiplier,
            delta=delta,
            target_epsilon=target_epsilon,
            accountant=accountant,
        )
        self.num_clients = num_clients
        if isinstance(clip_norm, AdaptiveClipping):
            self.adaptive: AdaptiveClipping | None = clip_norm
            self.clip_norm = clip_norm.initial_clip_norm
        else:
            check_clip_norm(clip_norm)
            self.adaptive, self.clip_norm = None, float(clip_norm)

    @classmethod
    def for_target_epsilon(
        cls,
        inner: Strategy,
        *,
        target_epsilon: float,
        num_rounds: int,
        cohort_size: int,
        num_clients: int,
        delta: float,
        clip_norm: float | AdaptiveClipping,
        accountant: AccountantName = "rdp",
    ) -> CentralDP:
        """Size the noise so that `num_rounds` rounds of `cohort_size` clients spend the target."""
        if not 1 <= cohort_size <= num_clients:
            raise ConfigError(f"cohort_size must be in 1..{num_clients}, got {cohort_size}")
        z = noise_for_target_epsilon(
            target_epsilon,
            delta=delta,
            sampling_rate=cohort_size / num_clients,
            num_steps=num_rounds,
            accountant=accountant,
        )
        return cls(
            inner,
            noise_multiplier=z,
            clip_norm=clip_norm,
            num_clients=num_clients,
            delta=delta,
            target_epsilon=target_epsilon,
            accountant=accountant,
        )

    def __repr__(self) -> str:
        clip = self.adaptive if self.adaptive is not None else self.clip_norm
        return (
            f"CentralDP({self.inner!r}, noise_multiplier={self.noise_multiplier:g}, "
            f"clip_norm={clip}, num_clients={self.num_clients}, delta={self.delta:g}, "
            f"target_epsilon={self.target_epsilon}, accountant={self.accountant.accountant!r})"
        )

    def _sampling_rate(self, cohort_size: int) -> float:
        if cohort_size > self.num_clients:
            raise ConfigError(
                f"a cohort of {cohort_size} clients is larger than num_clients "
                f"{self.num_clients}; give CentralDP the size of the whole population"
            )
        return cohort_size / self.num_clients

    def configure_train(
        self, ctx: RoundContext, arrays: Arrays, available: Sequence[int]
    ) -> list[TrainTask]:
        """Let the inner strategy sample; sample nobody once the budget is spent."""
        tasks = self.inner.configure_train(ctx, arrays, available)
        if tasks and not self._within_budget(self._sampling_rate(len(tasks))):
            return []
        return tasks

    def aggregate_train(
        self,
        ctx: RoundContext,
        arrays: Arrays,
        results: Sequence[tuple[int, TrainResult]],
        failures: Sequence[Failure],
    ) -> tuple[Arrays | None, Metrics]:
        """Clip, average over the cohort, add noise, and let the inner strategy step."""
        cohort_size = len(results) + len(failures)
        if failures and not getattr(self.inner, "accept_failures", True):
            return None, {}
        usable, num_nonfinite = select_results(arrays, results)
        if not usable or cohort_size == 0:
            return None, round_metrics(usable, num_nonfinite)
        q = self._sampling_rate(cohort_size)
        clip_norm = self.clip_norm
        total, num_unclipped = self._clipped_sum(arrays, usable, clip_norm)
        z_update = self.noise_multiplier
        if self.adaptive is not None:
            z_update = self.adaptive.update_noise_multiplier(self.noise_multiplier, cohort_size)
        noise = gaussian_noise(total, z_update * clip_norm, ctx.rng)
        mean = {name: (s + noise[name]) / cohort_size for name, s in total.items()}
        metrics = dict(round_metrics(usable, num_nonfinite))
        if self.adaptive is not None:
            fraction = self.adaptive.noisy_unclipped_fraction(
                num_unclipped, cohort_size, self.noise_multiplier, ctx.rng
            )
            self.clip_norm = self.adaptive.next_clip_norm(clip_norm, fraction)
            metrics["unclipped_fraction"] = fraction
        self.accountant.record(q)
        released = TrainResult(
            arrays=_apply(arrays, mean), num_examples=1, metrics=round_metrics(usable, 0)
        )
        new, inner_metrics = self.inner.aggregate_train(ctx, arrays, [(usable[0][0], released)], [])
        metrics.update(inner_metrics)
        metrics.update(epsilon=self.accountant.epsilon(), clip_norm=clip_norm)
        return new, metrics

    @staticmethod
    def _clipped_sum(
        arrays: Arrays, usable: Sequence[tuple[int, TrainResult]], clip_norm: float
    ) -> tuple[dict[str, NDArray], int]:
        total: dict[str, NDArray] | None = None
        num_unclipped = 0
        for _, result in usable:
            update = model_update(result.arrays, arrays)
            norm = update_norm(update)
            num_unclipped += int(norm <= clip_norm)
            scale = clip_scale(norm, clip_norm)
            if total is None:
                total = {name: u * scale for name, u in update.items()}
            else:
                for name, u in update.items():
                    total[name] += u * scale
        assert total is not None  # usable is not empty
        return total, num_unclipped

    def state_dict(self) -> dict[str, Any]:
        """Return the inner strategy's state, the clip norm and the accountant's steps."""
        return {
            "inner": self.inner.state_dict(),
            "clip_norm": self.clip_norm,
            "accountant": self.accountant.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output."""
        if set(state) != {"inner", "clip_norm", "accountant"}:
            raise ConfigError(
                f"CentralDP state must hold inner, clip_norm and accountant, got {sorted(state)}"
            )
        clip_norm = float(state["clip_norm"])
        check_clip_norm(clip_norm)
        self.inner.load_state_dict(state["inner"])
        self.accountant.load_state_dict(state["accountant"])
        self.clip_norm = clip_norm
        self.is_budget_exhausted = False


def _apply(arrays: Arrays, mean_update: Mapping[str, NDArray]) -> Arrays:
    """Return arrays + update for floating arrays (in each dtype); others stay as they are."""
    return Arrays(
        (
            name,
            (a.astype(np.float64) + mean_update[name]).astype(a.dtype)
            if name in mean_update
            else a,
        )
        for name, a in arrays.items()
    )


class LocalDPAccounting(_Wrapper):
    """The server side of local DP: run the inner strategy, report the clients' epsilon.

    Each client clips its update to C and adds N(0, (z C)^2) itself before sending
    (`federa.client.LocalDPClient`), so every update it sends is a Gaussian release
    with noise multiplier z against the server, whoever that is. Epsilon is reported for
    a client that took part in every round so far (no amplification by sampling: the
    server knows who it sampled), with a client's update replaced by a zero update as
    the neighbouring relation. The clients must use the same z as given here.

    Args:
        inner: The strategy that samples clients and aggregates their noised updates.
        noise_multiplier: The clients' z.
        delta: The delta at which epsilon is reported.
        target_epsilon: Stop before a round would bring epsilon above this.
        accountant: "rdp" or "pld".
    """

    def __init__(
        self,
        inner: Strategy,
        *,
        noise_multiplier: float,
        delta: float,
        target_epsilon: float | None = None,
        accountant: AccountantName = "rdp",
    ) -> None:
        super().__init__(
            inner,
            noise_multiplier=noise_multiplier,
            delta=delta,
            target_epsilon=target_epsilon,
            accountant=accountant,
        )
        # Results go to the inner strategy as they are: it decides (secure aggregation).
        self.is_sum_only = inner.is_sum_only

    def __repr__(self) -> str:
        return (
            f"LocalDPAccounting({self.inner!r}, noise_multiplier={self.noise_multiplier:g}, "
            f"delta={self.delta:g}, target_epsilon={self.target_epsilon})"
        )

    def configure_train(
        self, ctx: RoundContext, arrays: Arrays, available: Sequence[int]
    ) -> list[TrainTask]:
        """Let the inner strategy sample; sample nobody once the budget is spent."""
        tasks = self.inner.configure_train(ctx, arrays, available)
        if tasks and not self._within_budget(1.0):
            return []
        return tasks

    def aggregate_train(
        self,
        ctx: RoundContext,
        arrays: Arrays,
        results: Sequence[tuple[int, TrainResult]],
        failures: Sequence[Failure],
    ) -> tuple[Arrays | None, Metrics]:
        """Aggregate with the inner strategy and add the epsilon spent to its metrics."""
        new, metrics = self.inner.aggregate_train(ctx, arrays, results, failures)
        if results or failures:
            self.accountant.record(1.0)
        out = dict(metrics)
        out["epsilon"] = self.accountant.epsilon()
        return new, out

    def state_dict(self) -> dict[str, Any]:
        """Return the inner strategy's state and the accountant's steps."""
        return {"inner": self.inner.state_dict(), "accountant": self.accountant.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output."""
        if set(state) != {"inner", "accountant"}:
            raise ConfigError(
                f"LocalDPAccounting state must hold inner and accountant, got {sorted(state)}"
            )
        self.inner.load_state_dict(state["inner"])
        self.accountant.load_state_dict(state["accountant"])
        self.is_budget_exhausted = False
