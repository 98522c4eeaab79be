"""Federated algorithms: how cohorts are chosen and results combined."""

from federa.strategy.base import RoundContext, Strategy
from federa.strategy.fedavg import FedAvg, sample_cohort

__all__ = ["FedAvg", "RoundContext", "Strategy", "sample_cohort"]
