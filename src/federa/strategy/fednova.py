"""FedNova: normalized averaging for clients that take different numbers of local steps.

Wang, Liu, Liang, Joshi, Poor. "Tackling the Objective Inconsistency Problem in
Heterogeneous Federated Optimization." NeurIPS 2020. FedAvg weights a client that ran
more local steps more heavily, so it minimises a surrogate objective; FedNova divides
each change by the client's step weight a_i and rescales by their mean:

    d_i = (x_t - x_i) / a_i,    tau_eff = sum_i p_i a_i,    x_{t+1} = x_t - tau_eff sum_i p_i d_i

with p_i = n_i / n over the cohort and, for local SGD with momentum rho over tau_i steps,
a_i = [tau_i - rho (1 - rho^tau_i) / (1 - rho)] / (1 - rho) (a_i = tau_i when rho = 0).
Weight decay and proximal terms, which change a_i in the paper, are not modelled.

Contract: every client reports its number of local steps tau_i as the metric
"num_steps" (federa's PyTorch train loop does). Only floating arrays are normalized:
integer arrays (BatchNorm's `num_batches_tracked`) take FedAvg's weighted mean. Results
whose arrays hold NaN or Inf are ignored and counted in `num_nonfinite_results`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from federa.core.arrays import Arrays, NDArray
from federa.core.messages import Failure, Metrics, TrainResult
from federa.errors import AggregationError, ConfigError
from federa.strategy.aggregate import RunningWeightedMean
from federa.strategy.base import RoundContext
from federa.strategy.fedavg import FedAvg
from federa.strategy.fedopt import assemble, round_metrics, select_results

NUM_STEPS = "num_steps"


def step_weight(num_steps: float, momentum: float) -> float:
    """Return a_i, the sum of the coefficients local SGD (heavy ball `momentum`) puts on its steps.

    PyTorch's SGD (buffer <- rho buffer + g, starting from zero) gives step k of tau a
    coefficient sum_{j <= tau - k} rho^j; these sum to the closed form in the module doc.
    """
    if momentum == 0.0:
        return num_steps
    rho = momentum
    return float((num_steps - rho * (1.0 - rho**num_steps) / (1.0 - rho)) / (1.0 - rho))


class FedNova(FedAvg):
    """FedAvg with FedNova's normalized averaging of client changes.

    Args:
        momentum: The clients' local SGD momentum rho in [0, 1) (0, the default, is vanilla
            SGD, as in federa's `TrainConfig`); it must match what clients use.
        **kwargs: FedAvg's arguments.
    """

    is_sum_only = False  # needs every client's step count

    def __init__(self, *, momentum: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, momentum={self.momentum})"

    def aggregate_train(
        self,
        ctx: RoundContext,
        arrays: Arrays,
        results: Sequence[tuple[int, TrainResult]],
        failures: Sequence[Failure],
    ) -> tuple[Arrays | None, Metrics]:
        """Return x_t - tau_eff sum_i p_i d_i.

        Raises:
            AggregationError: A client did not report a positive "num_steps".
        """
        if failures and not self.accept_failures:
            return None, {}
        usable, num_nonfinite = select_results(arrays, results)
        metrics = round_metrics(usable, num_nonfinite)
        if not usable:
            return None, metrics
        a = np.asarray([step_weight(_num_steps(cid, r), self.momentum) for cid, r in usable])
        n = np.asarray([r.num_examples for _, r in usable], dtype=np.float64)
        # x_t - tau_eff sum_i p_i (x_t - x_i) / a_i = (1 - s) x_t + s sum_i (r_i / R) x_i with
        # r_i = n_i a_min / a_i, R = sum_i r_i and s = (sum_i n_i a_i / a_min / n) (R / n).
        # Equal a_i make every ratio exactly 1, so r = n, s = 1 and the mean below is
        # FedAvg's, computed the same way, so the result is FedAvg's bit for bit.
        a_min = float(a.min())
        r = n * (a_min / a)
        total = float(n.sum())
        scale = float((n * (a / a_min)).sum() / total) * float(r.sum() / total)
        floats = [name for name, ref in arrays.items() if ref.dtype.kind == "f"]
        running = RunningWeightedMean(names=floats)
        for rk, (_, res) in zip(r, usable, strict=True):
            running.add(res.arrays, float(rk))
        new_x: dict[str, NDArray] = {
            name: scale * mean + (1.0 - scale) * arrays[name].astype(np.float64)
            for name, mean in running.float_means().items()
        }
        return assemble(arrays, usable, new_x), metrics


def _num_steps(cid: int, result: TrainResult) -> float:
    """Return the client's reported local step count, or raise AggregationError."""
    if NUM_STEPS not in result.metrics:
        raise AggregationError(
            f"client {cid} reported no {NUM_STEPS!r} metric; FedNova needs every client to "
            "report its number of local steps (federa's PyTorch train loop does)"
        )
    steps = float(result.metrics[NUM_STEPS])
    if not (math.isfinite(steps) and steps > 0):
        raise AggregationError(
            f"client {cid} reported {NUM_STEPS}={steps}; it must be a positive number of steps"
        )
    return steps
