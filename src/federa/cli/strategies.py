"""Strategy and attack selection for the command line."""

from __future__ import annotations

import math
from typing import Any

from federa.cli.config import STRATEGY_PARAMETERS, RunConfig
from federa.errors import ConfigError
from federa.strategy.base import Strategy

# name -> (module, class, the RunConfig fields it takes -> constructor argument names)
STRATEGIES: dict[str, tuple[str, str, dict[str, str]]] = {
    "bulyan": ("bulyan", "Bulyan", {"num_byzantine": "num_byzantine"}),
    "fedadagrad": (
        "fedopt",
        "FedAdagrad",
        {"server_lr": "server_lr", "beta_1": "beta_1", "beta_2": "beta_2", "tau": "tau"},
    ),
    "fedadam": (
        "fedopt",
        "FedAdam",
        {"server_lr": "server_lr", "beta_1": "beta_1", "beta_2": "beta_2", "tau": "tau"},
    ),
    "fedavg": ("fedavg", "FedAvg", {}),
    "fedavgm": (
        "fedavgm",
        "FedAvgM",
        {"server_lr": "server_lr", "server_momentum": "server_momentum"},
    ),
    "fednova": ("fednova", "FedNova", {}),
    "fedprox": ("fedprox", "FedProx", {"proximal_mu": "proximal_mu"}),
    "fedyogi": (
        "fedopt",
        "FedYogi",
        {"server_lr": "server_lr", "beta_1": "beta_1", "beta_2": "beta_2", "tau": "tau"},
    ),
    "krum": ("krum", "Krum", {"num_byzantine": "num_byzantine"}),
    "median": ("median", "FedMedian", {}),
    "multikrum": (
        "krum",
        "MultiKrum",
        {"num_byzantine": "num_byzantine", "num_selected": "num_selected"},
    ),
    "qfedavg": ("qfedavg", "QFedAvg", {"q": "q", "lipschitz": "lipschitz"}),
    "scaffold": ("scaffold", "Scaffold", {"server_lr": "server_lr"}),
    "trimmedmean": ("trimmed_mean", "FedTrimmedMean", {"trim_beta": "beta"}),
}
REQUIRED = {"num_byzantine": ("bulyan", "krum", "multikrum"), "num_selected": ("multikrum",)}


def cohort_size(num_clients: int, fraction: float, min_clients: int) -> int:
    """Return how many clients FedAvg-style sampling picks each round."""
    return min(num_clients, max(math.ceil(fraction * num_clients), min_clients))


def build_strategy(cfg: RunConfig, num_clients: int, **common: Any) -> Strategy:
    """Build the strategy `cfg.strategy` names, with its parameters and FedAvg's `common` ones.

    Raises:
        ConfigError: an unknown strategy, a parameter the strategy needs but was not
            given, a parameter given to a strategy that does not take it, or a cohort
            too small for a robust rule.
    """
    import importlib

    entry = STRATEGIES.get(cfg.strategy)
    if entry is None:
        raise ConfigError(
            f"--strategy: unknown value {cfg.strategy!r}; choose one of: {', '.join(STRATEGIES)}"
        )
    module_name, class_name, params = entry
    for field, names in REQUIRED.items():
        if cfg.strategy in names and getattr(cfg, field) is None:
            raise ConfigError(f"--strategy {cfg.strategy} needs --{field.replace('_', '-')}")
    for field in STRATEGY_PARAMETERS:
        if getattr(cfg, field) is not None and field not in params:
            raise ConfigError(
                f"--{field.replace('_', '-')} does not apply to --strategy {cfg.strategy}"
            )
    kwargs = {
        arg: getattr(cfg, field) for field, arg in params.items() if getattr(cfg, field) is not None
    }
    if cfg.strategy == "fednova":
        kwargs["momentum"] = cfg.momentum if cfg.optimizer == "sgd" else 0.0
    module = importlib.import_module(f"federa.strategy.{module_name}")
    strategy: Strategy = getattr(module, class_name)(**kwargs, **common)
    needed = getattr(strategy, "min_cohort", None)
    if needed is not None:
        size = cohort_size(num_clients, cfg.fraction_train, common.get("min_train_clients", 1))
        if size < needed():
            raise ConfigError(
                f"--strategy {cfg.strategy} needs at least {needed()} clients per round, but "
                f"--fraction-train {cfg.fraction_train:g} of {num_clients} clients samples {size}; "
                "raise --fraction-train or --num-clients, or lower --num-byzantine"
            )
    return strategy
