"""q-FedAvg: fair resource allocation through the q-FFL objective.

Li, Sanjabi, Beirami, Smith. "Fair Resource Allocation in Federated Learning." ICLR 2020,
Algorithm 2. q-FFL minimises sum_k p_k F_k^(q+1) / (q + 1), which weights clients with
a high loss more as q grows (q = 0 is FedAvg's objective). Each round, for client k with
local model w_k and loss F_k at the global model w_t:

    Delta w_k = L (w_t - w_k),    Delta_k = F_k^q Delta w_k,
    h_k = q F_k^(q-1) ||Delta w_k||^2 + L F_k^q,
    w_{t+1} = w_t - sum_k Delta_k / sum_k h_k

where L is a Lipschitz-constant estimate, 1 / (local learning rate) in the paper, and the
norm runs over all floating arrays together. As the authors' code does, F_k + 1e-10
stands in for F_k so that a zero loss stays finite. With q = 0 the update is the uniform
mean of the cohort's models. The paper samples clients with probability p_k = n_k / n;
federa samples uniformly, so p_k is uniform here, as in Flower's QFedAvg.

Contract: the strategy adds "report_initial_loss": True to every training config, and a
client answers with its local training loss at the arrays it was sent, before training,
as the metric "initial_loss" (federa's PyTorch client does). Integer arrays (BatchNorm's
`num_batches_tracked`) take FedAvg's weighted mean. Results whose arrays or initial loss
are NaN or Inf are ignored and counted in the metric `num_nonfinite_results`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from federa.core.arrays import Arrays
from federa.core.messages import Failure, Metrics, TrainResult, TrainTask
from federa.errors import AggregationError, ConfigError
from federa.strategy.base import RoundContext
from federa.strategy.fedavg import FedAvg
from federa.strategy.fedopt import assemble, round_metrics, select_results

INITIAL_LOSS = "initial_loss"
REPORT_INITIAL_LOSS = "report_initial_loss"
_LOSS_FLOOR = 1e-10  # added to F_k, as in the authors' reference implementation


class QFedAvg(FedAvg):
    """q-FedAvg (Li et al. 2020, Algorithm 2).

    Defaults: q = 0.2 is Flower's default (the paper tunes q per data set); L = 20 is
    1 / 0.05, the inverse of federa's default local learning rate (`TrainConfig.lr`),
    following the paper's L = 1 / lr. Set L = 1 / lr of your clients.

    Args:
        q: Fairness exponent q (>= 0).
        lipschitz: Lipschitz-constant estimate L (> 0).
        **kwargs: FedAvg's arguments.
    """

    is_sum_only = False  # weights each client by its own loss

    def __init__(self, *, q: float = 0.2, lipschitz: float = 20.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not (q >= 0.0 and math.isfinite(q)):
            raise ConfigError(f"q must be a finite number >= 0, got {q}")
        if not (lipschitz > 0.0 and math.isfinite(lipschitz)):
            raise ConfigError(f"lipschitz must be a finite number > 0, got {lipschitz}")
        self.q = q
        self.lipschitz = lipschitz

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, q={self.q}, lipschitz={self.lipschitz})"

    def configure_train(
        self, ctx: RoundContext, arrays: Arrays, available: Sequence[int]
    ) -> list[TrainTask]:
        """Sample as FedAvg does and ask every client for its initial loss."""
        tasks = super().configure_train(ctx, arrays, available)
        return [
            ctx.train_task(t.client_id, t.arrays, {**t.config, REPORT_INITIAL_LOSS: True})
            for t in tasks
        ]

    def aggregate_train(
        self,
        ctx: RoundContext,
        arrays: Arrays,
        results: Sequence[tuple[int, TrainResult]],
        failures: Sequence[Failure],
    ) -> tuple[Arrays | None, Metrics]:
        """Return w_t - sum_k Delta_k / sum_k h_k.

        Raises:
            AggregationError: A client did not report a non-negative "initial_loss".
        """
        if failures and not self.accept_failures:
            return None, {}
        selected, num_nonfinite = select_results(arrays, results)
        usable: list[tuple[int, TrainResult]] = []
        losses: list[float] = []
        for cid, result in selected:
            loss = _initial_loss(cid, result)
            if math.isfinite(loss):
                usable.append((cid, result))
                losses.append(loss)
            else:
                num_nonfinite += 1
        metrics = round_metrics(usable, num_nonfinite)
        if not usable:
            return None, metrics
        q, L = self.q, self.lipschitz
        names = [name for name, ref in arrays.items() if ref.dtype.kind == "f"]
        x = {name: arrays[name].astype(np.float64) for name in names}
        numerator = {name: np.zeros_like(x[name]) for name in names}
        denominator = 0.0
        for (_, result), loss in zip(usable, losses, strict=True):
            f = loss + _LOSS_FLOOR
            dw = {name: L * (x[name] - result.arrays[name]) for name in names}
            norm_sq = sum(float(np.sum(d * d)) for d in dw.values())
            for name in names:
                numerator[name] += f**q * dw[name]
            denominator += q * f ** (q - 1.0) * norm_sq + L * f**q
        new_x = {name: x[name] - numerator[name] / denominator for name in names}
        return assemble(arrays, usable, new_x), metrics


def _initial_loss(cid: int, result: TrainResult) -> float:
    """Return the client's reported loss before training, or raise AggregationError."""
    if INITIAL_LOSS not in result.metrics:
        raise AggregationError(
            f"client {cid} reported no {INITIAL_LOSS!r} metric; q-FedAvg needs every client "
            f"to report its loss at the arrays it was sent when the config has "
            f"{REPORT_INITIAL_LOSS!r} (federa's PyTorch client does)"
        )
    loss = float(result.metrics[INITIAL_LOSS])
    if loss < 0.0:
        raise AggregationError(
            f"client {cid} reported {INITIAL_LOSS}={loss}; q-FedAvg needs a loss >= 0"
        )
    return loss
