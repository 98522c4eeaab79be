"""FedProx: FedAvg whose clients add a proximal term to their local objective.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith. "Federated Optimization in Heterogeneous
Networks." MLSys 2020. Each client minimises F_k(w) + mu/2 ||w - w^t||^2, which keeps
local models near the global one when data are non-IID; aggregation is FedAvg's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from federa.core.arrays import Arrays
from federa.core.messages import TrainTask
from federa.errors import ConfigError
from federa.strategy.base import RoundContext
from federa.strategy.fedavg import FedAvg


class FedProx(FedAvg):
    """FedAvg that sends `proximal_mu` to clients in every training config.

    The federa PyTorch train loop applies the term when the config carries
    "proximal_mu" > 0; a custom client reads it from its config.

    Args:
        proximal_mu: The proximal coefficient mu (> 0); the paper tunes it in
            {0.001, 0.01, 0.1, 1}.
        **kwargs: FedAvg's arguments.
    """

    def __init__(self, *, proximal_mu: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not proximal_mu > 0:
            raise ConfigError(f"proximal_mu must be > 0, got {proximal_mu}")
        self.proximal_mu = proximal_mu

    def configure_train(
        self, ctx: RoundContext, arrays: Arrays, available: Sequence[int]
    ) -> list[TrainTask]:
        """Sample as FedAvg does and add "proximal_mu" to each client's config."""
        tasks = super().configure_train(ctx, arrays, available)
        return [
            ctx.train_task(t.client_id, t.arrays, {**t.config, "proximal_mu": self.proximal_mu})
            for t in tasks
        ]
