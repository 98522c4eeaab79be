"""Core data types: arrays, messages and seed derivation (numpy and stdlib only)."""

from federa.core.arrays import Arrays
from federa.core.messages import (
    Config,
    EvalResult,
    EvalTask,
    Failure,
    Metrics,
    Scalar,
    Task,
    TaskResult,
    TrainResult,
    TrainTask,
)
from federa.core.rng import derive_seed

__all__ = [
    "Arrays",
    "Config",
    "EvalResult",
    "EvalTask",
    "Failure",
    "Metrics",
    "Scalar",
    "Task",
    "TaskResult",
    "TrainResult",
    "TrainTask",
    "derive_seed",
]
