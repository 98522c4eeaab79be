"""PyTorch adapter: module <-> Arrays, the standard train/eval loops, TorchClient, models."""

from federa.torch.arrays import arrays_to_module, module_to_arrays
from federa.torch.client import TorchClient, make_evaluate_fn, shared_model
from federa.torch.models import MODELS, build_model
from federa.torch.train import TrainConfig, evaluate, train

__all__ = [
    "MODELS",
    "TorchClient",
    "TrainConfig",
    "arrays_to_module",
    "build_model",
    "evaluate",
    "make_evaluate_fn",
    "module_to_arrays",
    "shared_model",
    "train",
]
