"""`LocalDPClient`: clip and noise a client's update before it leaves the client.

Local (client-side) DP in the style of DP-FedAvg's Gaussian mechanism (McMahan et al.
ICLR 2018), applied by each client to its own update instead of by the server: the
update x_k - x is clipped to L2 norm C and N(0, (z C)^2) is added to every coordinate,
so each update sent is a Gaussian release with noise multiplier z whoever receives it.
The server reports the epsilon this spends with `federa.privacy.LocalDPAccounting`.

Under secure aggregation the server sees only the sum of the m updates of a cohort;
there each client can add a share of the noise, noise_multiplier = z / sqrt(m), and the
sum carries N(0, (z C)^2) as central DP would (distributed DP, as in Kairouz, Liu,
Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning with
Secure Aggregation", ICML 2021, with continuous noise); account for it with
`federa.privacy.PrivacyAccountant(noise_multiplier=z)` at the cohort's sampling rate.
"""

from __future__ import annotations

import secrets

import numpy as np

from federa.client.base import Client
from federa.core.arrays import Arrays, NDArray
from federa.core.messages import Config, EvalResult, TrainResult
from federa.privacy.clipping import check_clip_norm, clip_update, model_update
from federa.privacy.gaussian import check_noise_multiplier, gaussian_noise

# Separates the noise stream from the training stream drawn from the same task seed.
_NOISE_STREAM = 0x6C6F63616C5F6470  # "local_dp"


class LocalDPClient(Client):
    """Wrap a client so that the update it returns is clipped and noised.

    Integer arrays (BatchNorm's `num_batches_tracked`) are sent back as received, so
    nothing but the noised update leaves the client. The inner client's metrics and
    `num_examples` are passed on as they are (they are not privatized); `state` is the
    inner client's.

    By default the noise is drawn from the task's seed (the reserved "seed" config key),
    so a simulated run is reproducible. That seed derives from the run seed, which the
    server knows: against a curious server set `secure_noise=True`, which seeds the noise
    from the operating system's entropy instead.

    Args:
        inner: The client that trains.
        clip_norm: C, the bound on the L2 norm of the update (over all floating arrays).
        noise_multiplier: z; the noise on each coordinate has standard deviation z C.
        secure_noise: Draw the noise from OS entropy instead of the task seed.
    """

    def __init__(
        self,
        inner: Client,
        *,
        clip_norm: float,
        noise_multiplier: float,
        secure_noise: bool = False,
    ) -> None:
        check_clip_norm(clip_norm)
        check_noise_multiplier(noise_multiplier)
        self.inner = inner
        self.clip_norm = float(clip_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.secure_noise = secure_noise

    def __repr__(self) -> str:
        return (
            f"LocalDPClient({self.inner!r}, clip_norm={self.clip_norm:g}, "
            f"noise_multiplier={self.noise_multiplier:g}, secure_noise={self.secure_noise})"
        )

    @property
    def state(self) -> Arrays:
        """Return the inner client's state."""
        return self.inner.state

    @state.setter
    def state(self, value: Arrays) -> None:
        self.inner.state = value

    def noise_rng(self, config: Config) -> np.random.Generator:
        """Return the generator of this task's noise."""
        if self.secure_noise:
            return np.random.default_rng(secrets.randbits(128))
        return np.random.default_rng([int(config.get("seed", 0)), _NOISE_STREAM])

    def fit(self, arrays: Arrays, config: Config) -> TrainResult:
        """Train with the inner client, then clip its update and add Gaussian noise."""
        result = self.inner.fit(arrays, config)
        clipped = clip_update(model_update(result.arrays, arrays), self.clip_norm)
        noise = gaussian_noise(
            clipped, self.noise_multiplier * self.clip_norm, self.noise_rng(config)
        )
        out: dict[str, NDArray] = {}
        for name, ref in arrays.items():
            if name in clipped:
                value = ref.astype(np.float64) + clipped[name] + noise[name]
                out[name] = value.astype(ref.dtype)
            else:
                out[name] = ref
        return TrainResult(
            arrays=Arrays(out),
            num_examples=result.num_examples,
            metrics=result.metrics,
            state=result.state,
        )

    def evaluate(self, arrays: Arrays, config: Config) -> EvalResult:
        """Evaluate with the inner client."""
        return self.inner.evaluate(arrays, config)
