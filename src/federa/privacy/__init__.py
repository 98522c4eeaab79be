"""Differential privacy (clipping, the Gaussian mechanism, accounting, DP strategies).

Secure aggregation (SecAgg+) is the subpackage `federa.privacy.secagg`; it needs the
`cryptography` package, so it is not imported here.
"""

from federa.privacy.accountant import (
    ACCOUNTANTS,
    AccountantName,
    PrivacyAccountant,
    compute_epsilon,
    noise_for_target_epsilon,
)
from federa.privacy.adaptive import AdaptiveClipping
from federa.privacy.clipping import clip_arrays, clip_update, model_update, update_norm
from federa.privacy.dp_strategy import CentralDP, LocalDPAccounting
from federa.privacy.gaussian import add_gaussian_noise, gaussian_noise, mean_noise_std

__all__ = [
    "ACCOUNTANTS",
    "AccountantName",
    "AdaptiveClipping",
    "CentralDP",
    "LocalDPAccounting",
    "PrivacyAccountant",
    "add_gaussian_noise",
    "clip_arrays",
    "clip_update",
    "compute_epsilon",
    "gaussian_noise",
    "mean_noise_std",
    "model_update",
    "noise_for_target_epsilon",
    "update_norm",
]
