"""`TorchClient`: a ready federa client around a PyTorch model and local tensors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from federa.client.base import Client
from federa.core.arrays import Arrays
from federa.core.messages import Config, EvalResult, Metrics, TrainResult
from federa.errors import ConfigError
from federa.strategy.scaffold import CONTROL_PREFIX, split_control
from federa.torch.arrays import arrays_to_module, module_to_arrays
from federa.torch.dp_sgd import DPSGDConfig, train_dp_sgd
from federa.torch.train import TrainConfig, evaluate, train

ModelFn = Callable[[], nn.Module]

# One model per (process, model_fn): every client in a process trains the same
# architecture and arrays_to_module overwrites the whole state, so rebuilding the model
# for each client would only cost time.
_MODELS: dict[int, tuple[ModelFn, nn.Module]] = {}


def shared_model(model_fn: ModelFn) -> nn.Module:
    """Return this process's model for `model_fn`, building it on first use."""
    entry = _MODELS.get(id(model_fn))
    if entry is None or entry[0] is not model_fn:
        entry = (model_fn, model_fn())
        _MODELS[id(model_fn)] = entry
    return entry[1]


def as_tensor(data: Any, dtype: torch.dtype) -> torch.Tensor:
    """Return `data` (ndarray or tensor) as a CPU tensor of `dtype`, without copying if possible."""
    if isinstance(data, torch.Tensor):
        return data.to(dtype)
    return torch.as_tensor(np.asarray(data), dtype=dtype)


class TorchClient(Client):
    """Train and evaluate a PyTorch classifier on local data with the standard loops.

    Args:
        model_fn: Builds the model (same architecture as the server's arrays). Models
            are shared within a process per `model_fn` object unless `share_model` is
            False.
        train_data: (inputs, integer labels) for local training.
        eval_data: (inputs, labels) for local evaluation; the training data if None.
        train_config: Local hyper-parameters; the server's config may override any of
            its fields by name ("lr", "epochs", ...).
        share_model: Reuse one model per process instead of building one per client.
        dp_sgd: Train with per-example DP-SGD (needs opacus; see `federa.torch.dp_sgd`).
    """

    def __init__(
        self,
        model_fn: ModelFn,
        train_data: tuple[Any, Any],
        eval_data: tuple[Any, Any] | None = None,
        *,
        train_config: TrainConfig | None = None,
        share_model: bool = True,
        dp_sgd: DPSGDConfig | None = None,
    ) -> None:
        self.model_fn = model_fn
        self.x = as_tensor(train_data[0], torch.float32)
        self.y = as_tensor(train_data[1], torch.int64)
        data = eval_data if eval_data is not None else train_data
        self.eval_x = as_tensor(data[0], torch.float32)
        self.eval_y = as_tensor(data[1], torch.int64)
        self.train_config = train_config or TrainConfig()
        self.share_model = share_model
        self.dp_sgd = dp_sgd
        self._model: nn.Module | None = None

    @property
    def model(self) -> nn.Module:
        """Return the model this client trains (shared per process by default)."""
        if self._model is None:
            self._model = shared_model(self.model_fn) if self.share_model else self.model_fn()
        return self._model

    def fit(self, arrays: Arrays, config: Config) -> TrainResult:
        """Load `arrays`, train locally, and return the new arrays with loss and accuracy.

        Arrays named with SCAFFOLD's control prefix switch on SCAFFOLD's corrected local
        steps; the client's own control variate lives in `self.state`.
        """
        cfg = self.train_config.updated(config)
        model = self.model
        weights, control = split_control(arrays)
        arrays_to_module(model, weights)
        seed = int(config.get("seed", 0))
        metrics: dict[str, float] = {}
        if config.get("report_initial_loss"):
            metrics["initial_loss"], _ = evaluate(model, self.x, self.y)
        if control and self.dp_sgd is not None:
            raise ConfigError("DP-SGD does not support SCAFFOLD's corrected local steps")
        if self.dp_sgd is not None:
            metrics.update(train_dp_sgd(model, self.x, self.y, cfg, seed, self.dp_sgd))
            new = module_to_arrays(model)
        elif not control:
            metrics.update(train(model, self.x, self.y, cfg, seed=seed))
            new = module_to_arrays(model)
        else:
            new = self._fit_scaffold(model, weights, control, cfg, seed, metrics)
        return TrainResult(arrays=new, num_examples=len(self.x), metrics=metrics)

    def _fit_scaffold(
        self,
        model: nn.Module,
        weights: Arrays,
        control: Arrays,
        cfg: TrainConfig,
        seed: int,
        metrics: dict[str, float],
    ) -> Arrays:
        """Run SCAFFOLD's local steps and return the model plus Delta c_i (option II)."""
        own = self.state
        params = {name for name, p in model.named_parameters() if p.requires_grad}
        correction = {
            name: torch.tensor(control[name] - own[name] if name in own else control[name])
            for name in control
            if name in params
        }
        metrics.update(train(model, self.x, self.y, cfg, seed=seed, correction=correction))
        new = module_to_arrays(model)
        steps = max(metrics["num_steps"], 1.0)
        updated: dict[str, np.ndarray] = {}
        delta: dict[str, np.ndarray] = {}
        for name, c in control.items():
            c_i = own[name] if name in own else np.zeros_like(c)
            if name in params:
                drift = (weights[name].astype(np.float64) - new[name]) / (steps * cfg.lr)
                updated[name] = (c_i - c + drift).astype(c.dtype)
            else:
                updated[name] = c_i
            delta[name] = (updated[name] - c_i).astype(c.dtype)
        self.state = Arrays(updated)
        return Arrays([*new.items(), *((CONTROL_PREFIX + k, v) for k, v in delta.items())])

    def evaluate(self, arrays: Arrays, config: Config) -> EvalResult:
        """Load `arrays` and return loss and accuracy on the local evaluation data."""
        model = self.model
        arrays_to_module(model, arrays)
        loss, accuracy = evaluate(model, self.eval_x, self.eval_y)
        return EvalResult(loss=loss, num_examples=len(self.eval_x), metrics={"accuracy": accuracy})


def make_evaluate_fn(
    model_fn: ModelFn, data: tuple[Any, Any], batch_size: int = 128
) -> Callable[[int, Arrays], tuple[float, Metrics]]:
    """Return a centralized `evaluate_fn` for a strategy: loss and accuracy on held-out data.

    It runs in inference mode (`evaluate`) on a model of its own. For a convolutional
    model on images, model and images are kept channels-last, the layout oneDNN's CPU
    convolutions run fastest in (MNIST CNN, 10,000 test images: 1.6-2.0 s against 2.4-2.9
    s in the default layout, measured interleaved), and batches of 128 keep activations
    in cache (batches of 1,000 took about 40% longer).
    """
    x = as_tensor(data[0], torch.float32)
    y = as_tensor(data[1], torch.int64)
    model = model_fn()
    if x.dim() == 4 and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format
        x = x.contiguous(memory_format=torch.channels_last)

    def evaluate_fn(round_num: int, arrays: Arrays) -> tuple[float, Metrics]:
        arrays_to_module(model, arrays)
        loss, accuracy = evaluate(model, x, y, batch_size)
        return loss, {"accuracy": accuracy}

    return evaluate_fn
