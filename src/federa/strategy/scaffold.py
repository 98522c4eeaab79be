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
from federa.strategy.aggregate import RunningMetrics, RunningWeightedMean
from federa.strategy.base import RoundContext, TrainAccumulator
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

    is_sum_only = False  # uniform means of models and control variates

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

    def _train_accumulator(self, ctx: RoundContext, arrays: Arrays) -> TrainAccumulator:
        """Stream the uniform mean of the cohort's models and control changes."""
        return _ScaffoldAccumulator(self, arrays)

    def _apply(self, arrays: Arrays, mean: Arrays, num_usable: int) -> Arrays:
        """Apply the averaged model change and update c (option II)."""
        assert self.control is not None  # checked by the accumulator before calling
        mean_model, mean_delta_c = split_control(mean)
        new: dict[str, np.ndarray] = {}
        for name, x in arrays.items():
            if x.dtype.kind == "f":
                step = mean_model[name].astype(np.float64) - x
                new[name] = (x + self.server_lr * step).astype(x.dtype)
            else:
                new[name] = mean_model[name]
        share = num_usable / max(self.num_clients, num_usable)
        self.control = Arrays(
            (k, (c + share * mean_delta_c[k].astype(np.float64)).astype(c.dtype))
            for k, c in self.control.items()
        )
        return Arrays(new)

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


class _ScaffoldAccumulator:
    """SCAFFOLD's aggregation, one result at a time.

    A running uniform mean over each result's model and control-variate change: arrays
    are averaged name by name, so one running mean over both gives the two means.
    """

    def __init__(self, strategy: Scaffold, arrays: Arrays) -> None:
        self._strategy = strategy
        self._arrays = arrays
        self._mean = RunningWeightedMean()
        self._metrics = RunningMetrics()

    def add(self, client_id: int, result: TrainResult) -> None:
        """Add a result unless it has no examples or holds NaN or Inf."""
        if result.num_examples > 0 and result.arrays.is_finite():
            self._mean.add(result.arrays, 1.0)
            self._metrics.add(result.num_examples, result.metrics)

    def finish(self, failures: Sequence[Failure]) -> tuple[Arrays | None, Metrics]:
        """Apply the mean model change, update c and return the example-weighted metrics."""
        strategy = self._strategy
        if self._mean.count == 0 or (failures and not strategy.accept_failures):
            return None, {}
        if strategy.control is None:
            return None, {}
        new = strategy._apply(self._arrays, self._mean.mean(), self._mean.count)
        return new, self._metrics.result()
