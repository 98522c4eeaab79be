"""The Gaussian mechanism: add N(0, sigma^2) to every coordinate of a clipped quantity.

Dwork and Roth, "The Algorithmic Foundations of Differential Privacy", 2014, App. A;
for federated learning, McMahan et al. ICLR 2018. A query of L2 sensitivity S released
with noise of standard deviation z * S is the Gaussian mechanism with noise multiplier
z; `federa.privacy.accountant` turns z, the sampling rate and the number of releases into
(epsilon, delta).

Noise comes only from the `numpy.random.Generator` the caller hands in, so a run is
reproducible from its seed. That also means anyone who knows the seed can subtract the
noise: a released model is private only while the seed that drew its noise is secret.
numpy's generator is not a cryptographic one, and floating-point Gaussian samples are
open to the attacks of Mironov, "On Significance of the Least Significant Bits for
Differential Privacy", CCS 2012; federa does not defend against them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from federa.core.arrays import Arrays, NDArray
from federa.errors import ConfigError
from federa.privacy.clipping import is_update_array


def check_noise_multiplier(noise_multiplier: float) -> None:
    """Raise ConfigError unless `noise_multiplier` is a finite number >= 0."""
    if not (noise_multiplier >= 0 and math.isfinite(noise_multiplier)):
        raise ConfigError(f"noise_multiplier must be a number >= 0, got {noise_multiplier}")


def mean_noise_std(noise_multiplier: float, clip_norm: float, cohort_size: int) -> float:
    """Return z * C / m: the noise on a mean of m updates each clipped to C.

    The sum of m clipped updates has sensitivity C when one client is added or
    removed; the fixed-denominator mean (sum / m) has C / m.
    """
    if cohort_size < 1:
        raise ConfigError(f"cohort_size must be >= 1, got {cohort_size}")
    return noise_multiplier * clip_norm / cohort_size


def gaussian_noise(
    like: Mapping[str, NDArray], std: float, rng: np.random.Generator
) -> dict[str, NDArray]:
    """Draw float64 N(0, std^2) noise shaped like each floating array of `like`, in order.

    The draws depend only on the generator's state, the array order and the shapes.
    """
    if not (std >= 0 and math.isfinite(std)):
        raise ConfigError(f"noise standard deviation must be a number >= 0, got {std}")
    return {
        name: rng.normal(0.0, std, size=a.shape) if std > 0 else np.zeros(a.shape, np.float64)
        for name, a in like.items()
        if is_update_array(a)
    }


def add_gaussian_noise(
    values: Mapping[str, NDArray], std: float, rng: np.random.Generator
) -> Arrays:
    """Return `values` with N(0, std^2) added to every floating coordinate (float64 out).

    Non-floating arrays pass through unchanged.
    """
    noise = gaussian_noise(values, std, rng)
    return Arrays(
        (name, a.astype(np.float64) + noise[name] if name in noise else a)
        for name, a in values.items()
    )
