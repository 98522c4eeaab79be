"""Adaptive clipping: track a quantile of the update norms with a private geometric update.

Andrew, Thakkar, McMahan, Ramaswamy, "Differentially Private Learning with Adaptive
Clipping", NeurIPS 2021, Algorithm 1. Each round, every client's bit
b_k = 1[||Delta_k|| <= C_t] says whether its update fitted under the clip norm. The
server releases the fraction of unclipped updates with Gaussian noise,

    b~ = (sum_k (b_k - 1/2) + N(0, sigma_b^2)) / m + 1/2,

(the centred bits have sensitivity 1/2) and moves the clip norm geometrically toward
the target quantile gamma:

    C_{t+1} = C_t * exp(-eta_C * (b~ - gamma)).

Releasing b~ costs privacy, paid for out of the same budget: with total noise
multiplier z, the update's sum gets z_Delta = (z^-2 - (2 sigma_b)^-2)^-1/2 (the paper's
Section 3), so the pair is exactly as private as one Gaussian release with noise
multiplier z, and the accountant tracks z alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from federa.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptiveClipping:
    """The adaptive clipping rule; the paper's defaults.

    Attributes:
        initial_clip_norm: C_0 (the paper starts at 0.1).
        target_quantile: gamma, the fraction of updates meant to fit unclipped.
        learning_rate: eta_C of the geometric update (0.2 in the paper).
        count_noise_std: sigma_b, the noise on the count of unclipped updates. None
            chooses the paper's m / 20 for a cohort of m, raised to z where m / 20 < z:
            z_Delta needs 2 sigma_b > z, and sigma_b = z costs the update 15% more noise.
    """

    initial_clip_norm: float = 0.1
    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_noise_std: float | None = None

    def __post_init__(self) -> None:
        if not (self.initial_clip_norm > 0 and math.isfinite(self.initial_clip_norm)):
            raise ConfigError(
                f"initial_clip_norm must be a positive number, got {self.initial_clip_norm}"
            )
        if not 0.0 < self.target_quantile < 1.0:
            raise ConfigError(f"target_quantile must be in (0, 1), got {self.target_quantile}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigError(f"learning_rate must be a positive number, got {self.learning_rate}")
        std = self.count_noise_std
        if std is not None and not (std > 0 and math.isfinite(std)):
            raise ConfigError(f"count_noise_std must be a positive number, got {std}")

    def count_std(self, noise_multiplier: float, cohort_size: int) -> float:
        """Return sigma_b for a cohort of `cohort_size` clients."""
        if self.count_noise_std is not None:
            return self.count_noise_std
        return max(cohort_size / 20.0, noise_multiplier)

    def update_noise_multiplier(self, noise_multiplier: float, cohort_size: int) -> float:
        """Return z_Delta, the noise multiplier left for the update's sum.

        Raises:
            ConfigError: sigma_b is too small for z (2 sigma_b <= z).
        """
        if noise_multiplier == 0.0:
            return 0.0
        std = self.count_std(noise_multiplier, cohort_size)
        if 2.0 * std <= noise_multiplier:
            raise ConfigError(
                f"adaptive clipping with noise multiplier {noise_multiplier:g} needs "
                f"count_noise_std > {noise_multiplier / 2:g}, got {std:g}"
            )
        return float((noise_multiplier**-2 - (2.0 * std) ** -2) ** -0.5)

    def noisy_unclipped_fraction(
        self,
        num_unclipped: int,
        cohort_size: int,
        noise_multiplier: float,
        rng: np.random.Generator,
    ) -> float:
        """Return b~, the privately estimated fraction of updates that were not clipped.

        With noise multiplier 0 (no privacy) the count is exact.
        """
        centred = num_unclipped - cohort_size / 2.0
        if noise_multiplier > 0.0:
            centred += float(rng.normal(0.0, self.count_std(noise_multiplier, cohort_size)))
        return centred / cohort_size + 0.5

    def next_clip_norm(self, clip_norm: float, unclipped_fraction: float) -> float:
        """Return C_{t+1} = C_t exp(-eta_C (b~ - gamma))."""
        return clip_norm * math.exp(
            -self.learning_rate * (unclipped_fraction - self.target_quantile)
        )
