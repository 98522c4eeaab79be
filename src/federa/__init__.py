"""federa: federated learning with one round loop for simulation and deployment."""

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from federa.server.serve import serve
    from federa.transport.grpc.client import connect

__version__ = "0.1.0"
_DEPLOYMENT = {
    "connect": "federa.transport.grpc.client",
    "serve": "federa.server.serve",
}

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
    "connect",
    "run_rounds",
    "serve",
    "simulate",
    "strategy",
]


def __getattr__(name: str) -> object:
    # serve/connect need the grpc extra; import them on first use so `import federa`
    # works without it.
    if name in _DEPLOYMENT:
        import importlib

        try:
            module = importlib.import_module(_DEPLOYMENT[name])
        except ModuleNotFoundError as exc:
            raise FederaError(
                f"federa.{name} needs {exc.name}: pip install 'federa[grpc]'"
            ) from None
        return getattr(module, name)
    raise AttributeError(f"module 'federa' has no attribute {name!r}")
