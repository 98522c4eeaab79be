"""Federated Averaging with server momentum.

Hsu, Qi, Brown. "Measuring the Effects of Non-Identical Data Distribution for Federated
Visual Classification." arXiv:1909.06335, 2019. The server applies heavy-ball momentum to
the mean client change Delta_t = sum_k p_k (x_k - x_t), p_k = n_k / n:

    v_t = beta v_{t-1} + Delta_t,    x_{t+1} = x_t + eta v_t,    v_0 = 0.

The paper writes the same rule with the opposite sign (v accumulates x_t - x_k and
w <- w - v) and eta = 1. With beta = 0 and eta = 1 this is FedAvg. Only floating arrays
get momentum: integer arrays (BatchNorm's `num_batches_tracked`) take FedAvg's weighted
mean. Results whose arrays hold NaN or Inf are ignored and counted in the metric
`num_nonfinite_results`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from federa.core.arrays import Arrays, NDArray
from federa.errors import ConfigError
from federa.strategy.base import RoundContext, TrainAccumulator
from federa.strategy.fedavg import FedAvg
from federa.strategy.fedopt import ChangeAccumulator, check_state_arrays


class FedAvgM(FedAvg):
    """FedAvg with a server momentum buffer.

    Defaults: eta = 1 as in the paper (whose server step is the momentum buffer itself);
    beta = 0.9, one of the momenta the paper sweeps (0 to 0.997) and a common choice.
    Flower's FedAvgM defaults to beta = 0.

    Attributes:
        momentum: The buffer v per floating array (float64), None before the first update.

    Args:
        server_lr: Server step size eta (> 0).
        server_momentum: Momentum beta in [0, 1).
        **kwargs: FedAvg's arguments.
    """

    def __init__(self, *, server_lr: float = 1.0, server_momentum: float = 0.9, **kwargs: Any):
        super().__init__(**kwargs)
        if not server_lr > 0.0:
            raise ConfigError(f"server_lr must be > 0, got {server_lr}")
        if not 0.0 <= server_momentum < 1.0:
            raise ConfigError(f"server_momentum must be in [0, 1), got {server_momentum}")
        self.server_lr = server_lr
        self.server_momentum = server_momentum
        self.momentum: Arrays | None = None

    def __repr__(self) -> str:
        return (
            f"{super().__repr__()[:-1]}, server_lr={self.server_lr}, "
            f"server_momentum={self.server_momentum})"
        )

    def _train_accumulator(self, ctx: RoundContext, arrays: Arrays) -> TrainAccumulator:
        """Stream the cohort's mean change into one momentum step."""
        return ChangeAccumulator(arrays, accept_failures=self.accept_failures, step=self._step)

    def _step(self, arrays: Arrays, delta: dict[str, NDArray]) -> dict[str, NDArray]:
        """Add the cohort's mean change to the momentum buffer and step along it."""
        buffer = self.momentum or Arrays((n, np.zeros_like(d)) for n, d in delta.items())
        check_state_arrays(type(self).__name__, buffer, delta)
        new_v: dict[str, NDArray] = {}
        new_x: dict[str, NDArray] = {}
        for name, d in delta.items():
            new_v[name] = self.server_momentum * buffer[name] + d
            new_x[name] = arrays[name].astype(np.float64) + self.server_lr * new_v[name]
        self.momentum = Arrays(new_v)
        return new_x

    def state_dict(self) -> dict[str, Any]:
        """Return the momentum buffer (empty `Arrays` before the first update)."""
        return {"momentum": (self.momentum or Arrays()).copy()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output."""
        if set(state) != {"momentum"}:
            raise ConfigError(f"FedAvgM state must hold momentum, got {sorted(state)}")
        buffer = Arrays(state["momentum"]).copy()
        self.momentum = buffer if len(buffer) else None
