"""SCAFFOLD: stochastic controlled averaging.

Karimireddy, Kale, Mohri, Reddi, Stich, Suresh. "SCAFFOLD: Stochastic Controlled
Averaging for Federated Learning." ICML 2020, Algorithm 1 with option II. The server
keeps a control variate c, each client its own c_i; local steps follow
y <- y - lr (g_i(y) - c_i + c), then c_i+ = c_i - c + (x - y) / (K lr), and the server
updates x <- x + lr_g mean(y_i - x) and c <- c + |S|/N mean(c_i+ - c_i).

On the wire, a task carries the model arrays plus c under names prefixed with
`CONTROL_PREFIX`; a result carries the client's model plus its Delta c_i under the same
names. Clients keep c_i between rounds in `Client.state` (federa's PyTorch client does
all of this when it sees the prefix).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from federa.core.arrays import Arrays
from federa.core.messages import Failure, Metrics, TrainResult, TrainTask
from federa.errors import ConfigError
from federa.strategy.aggregate import weighted_mean, weighted_metrics
from federa.strategy.base import RoundContext
from federa.strategy.fedavg import FedAvg

CONTROL_PREFIX = "scaffold.c/"


def split_control(arrays: Arrays) -> tuple[Arrays, Arrays]:
    """Split arrays into (model arrays, control-variate arrays keyed by model name)."""
    model = Arrays((k, v) for k, v in arrays.items() if not k.startswith(CONTROL_PREFIX))
    control = Arrays(
        (k.removeprefix(CONTROL_PREFIX), v)
        for k, v in arrays.items()
        if k.startswith(CONTROL_PREFIX)
    )
    return model, control


class Scaffold(FedAvg):
    """SCAFFOLD with server learning rate `server_lr` (the paper's eta_g, default 1).

    Control variates cover every floating-point array of the model. Results with NaN
    or Inf are ignored. The model update averages the cohort uniformly, as the paper
    does, rather than by example count.

    Args:
        server_lr: Global step size eta_g (> 0).
        **kwargs: FedAvg's arguments.
    """

    def __init__(self, *, server_lr: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not server_lr > 0:
            raise ConfigError(f"server_lr must be > 0, got {server_lr}")
        self.server_lr = server_lr
        self.control: Arrays | None = None
        self.num_clients = 0

    def configure_train(
        self, ctx: RoundContext, arrays: Arrays, available: Sequence[int]
    ) -> list[TrainTask]:
        """Sample as FedAvg does and send each client the model and c."""
        self.num_clients = max(self.num_clients, len(available))
        if self.control is None:
            self.control = Arrays(
                (k, np.zeros_like(v)) for k, v in arrays.items() if v.dtype.kind == "f"
            )
        payload = Arrays(
            [*arrays.items(), *((CONTROL_PREFIX + k, v) for k, v in self.control.items())]
        )
        tasks = super().configure_train(ctx, arrays, available)
        return [ctx.train_task(t.client_id, payload, t.config) for t in tasks]

    def aggregate_train(
        self,
        ctx: RoundContext,
        arrays: Arrays,
        results: Sequence[tuple[int, TrainResult]],
        failures: Sequence[Failure],
    ) -> tuple[Arrays | None, Metrics]:
        """Apply the averaged model change and update c (option II)."""
        usable = [r for _, r in results if r.num_examples > 0 and r.arrays.is_finite()]
        if not usable or (failures and not self.accept_failures) or self.control is None:
            return None, {}
        parts = [split_control(r.arrays) for r in usable]
        uniform = [1.0] * len(parts)
        mean_model = weighted_mean([m for m, _ in parts], uniform)
        mean_delta_c = weighted_mean([c for _, c in parts], uniform)
        new: dict[str, np.ndarray] = {}
        for name, x in arrays.items():
            if x.dtype.kind == "f":
                step = mean_model[name].astype(np.float64) - x
                new[name] = (x + self.server_lr * step).astype(x.dtype)
            else:
                new[name] = mean_model[name]
        share = len(usable) / max(self.num_clients, len(usable))
        self.control = Arrays(
            (k, (c + share * mean_delta_c[k].astype(np.float64)).astype(c.dtype))
            for k, c in self.control.items()
        )
        metrics = weighted_metrics([(r.num_examples, r.metrics) for r in usable])
        return Arrays(new), metrics

    def state_dict(self) -> dict[str, Any]:
        """Return c and the number of clients seen."""
        state: dict[str, Any] = {"num_clients": self.num_clients}
        if self.control is not None:
            state["control"] = self.control
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output."""
        self.num_clients = int(state.get("num_clients", 0))
        control = state.get("control")
        self.control = None if control is None else Arrays(control)
