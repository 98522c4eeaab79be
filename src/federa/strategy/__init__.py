"""Federated algorithms: how cohorts are chosen and results combined."""

from federa.strategy.base import RoundContext, Strategy
from federa.strategy.bulyan import Bulyan
from federa.strategy.fedavg import FedAvg, sample_cohort
from federa.strategy.fedavgm import FedAvgM
from federa.strategy.fednova import FedNova
from federa.strategy.fedopt import FedAdagrad, FedAdam, FedOpt, FedYogi
from federa.strategy.fedprox import FedProx
from federa.strategy.krum import Krum, MultiKrum
from federa.strategy.median import FedMedian
from federa.strategy.qfedavg import QFedAvg
from federa.strategy.scaffold import Scaffold
from federa.strategy.trimmed_mean import FedTrimmedMean

__all__ = [
    "Bulyan",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedMedian",
    "FedNova",
    "FedOpt",
    "FedProx",
    "FedTrimmedMean",
    "FedYogi",
    "Krum",
    "MultiKrum",
    "QFedAvg",
    "RoundContext",
    "Scaffold",
    "Strategy",
    "sample_cohort",
]
