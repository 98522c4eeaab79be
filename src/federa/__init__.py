"""federa: federated learning with one round loop for simulation and deployment."""

from federa import strategy
from federa.client import Client, ClientFn
from federa.core import (
    Arrays,
    Config,
    EvalResult,
    EvalTask,
    Failure,
    Metrics,
    TrainResult,
    TrainTask,
)
from federa.errors import (
    AggregationError,
    ClientError,
    ConfigError,
    FederaError,
    TransportError,
)
from federa.server import History, RoundRecord, run_rounds
from federa.simulation import simulate
from federa.strategy import FedAvg, RoundContext, Strategy

__version__ = "0.1.0"

__all__ = [
    "AggregationError",
    "Arrays",
    "Client",
    "ClientError",
    "ClientFn",
    "Config",
    "ConfigError",
    "EvalResult",
    "EvalTask",
    "Failure",
    "FedAvg",
    "FederaError",
    "History",
    "Metrics",
    "RoundContext",
    "RoundRecord",
    "Strategy",
    "TrainResult",
    "TrainTask",
    "TransportError",
    "__version__",
    "run_rounds",
    "simulate",
    "strategy",
]
