"""PyTorch adapter: module <-> Arrays, train/eval loops, the cohort trainer, TorchClient, models."""

from federa.torch.arrays import arrays_to_module, module_to_arrays
from federa.torch.client import TorchClient, make_evaluate_fn, shared_model
from federa.torch.models import MODELS, build_model
from federa.torch.train import TrainConfig, evaluate, train
from federa.torch.vectorized import VectorizeError, train_cohort, vectorize_reason

__all__ = [
    "MODELS",
    "TorchClient",
    "TrainConfig",
    "VectorizeError",
    "arrays_to_module",
    "build_model",
    "evaluate",
    "make_evaluate_fn",
    "module_to_arrays",
    "shared_model",
    "train",
    "train_cohort",
    "vectorize_reason",
]
