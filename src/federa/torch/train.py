"""The standard local train and eval loops for PyTorch clients."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from federa.errors import ConfigError
from federa.torch.augment import augment_generator, augment_images

OptimizerName = Literal["sgd", "adam"]
OPTIMIZERS: tuple[OptimizerName, ...] = ("sgd", "adam")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainConfig:
    """Local training hyper-parameters.

    Attributes:
        epochs: Passes over the local data (E in McMahan et al.).
        batch_size: Minibatch size (B); the last, smaller batch of an epoch is kept.
        lr: Learning rate.
        optimizer: "sgd" (with optional momentum) or "adam".
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty passed to the optimizer.
        proximal_mu: FedProx's proximal coefficient: the local objective gains
            mu/2 * ||w - w_global||^2 (Li et al. 2020, "Federated Optimization in
            Heterogeneous Networks"); 0 is plain local training.
        augment: Distort every minibatch of images at random (`federa.torch.augment`:
            small affine maps, resize round trips, stroke-width changes), drawn from
            the training seed; off by default.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    optimizer: OptimizerName = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    proximal_mu: float = 0.0
    augment: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"local epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.proximal_mu < 0:
            raise ConfigError(f"proximal mu must be >= 0, got {self.proximal_mu}")
        if not isinstance(self.augment, bool):
            raise ConfigError(f"augment must be true or false, got {self.augment!r}")

    def updated(self, config: Mapping[str, object]) -> TrainConfig:
        """Return a copy with the fields that `config` names (a server can override them)."""
        names = {f.name for f in fields(self)}
        changes = {k: v for k, v in config.items() if k in names}
        return replace(self, **changes) if changes else self  # type: ignore[arg-type]  # validated in __post_init__


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Return the optimizer `cfg` names over `params`."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@contextlib.contextmanager
def seeded_rng(seed: int, model: nn.Module) -> Iterator[None]:
    """Seed the generator `model`'s random layers draw from, and restore it afterwards.

    Only the CPU generator (and, for a model on a GPU, that GPU's) is seeded:
    `torch.manual_seed` would also queue seeding calls for every accelerator backend,
    each formatting a stack trace, about 2 ms per client on a CPU-only machine.
    """
    device = next(iter(model.parameters()), torch.empty(0)).device
    on_gpu = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if on_gpu else []):
        torch.default_generator.manual_seed(seed)
        if on_gpu:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    seed: int,
    *,
    correction: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Train `model` in place on (x, y) and return mean loss and accuracy over all steps.

    Minibatch order and dropout masks come from `seed` only, so the same seed gives the
    same model wherever this runs. The global torch RNG is left as it was.

    Args:
        model: The model, holding the global arrays on entry.
        x: Inputs.
        y: Integer labels.
        cfg: Hyper-parameters; `proximal_mu` > 0 adds FedProx's proximal term.
        seed: Seed of every random choice.
        correction: Per-parameter tensors added to each gradient, by parameter name:
            SCAFFOLD's control-variate correction c - c_i (Karimireddy et al. 2020).
    """
    n = len(x)
    if n == 0:
        return {"loss": 0.0, "accuracy": 0.0, "num_steps": 0.0}
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    optimizer = make_optimizer(params, cfg)
    # Gradient adjustments, applied after backward: mu * (w - w_global) for FedProx and
    # the SCAFFOLD correction, both as (parameter, tensor or None) pairs.
    anchors = [p.detach().clone() for p in params] if cfg.proximal_mu > 0 else None
    corrections = [None if correction is None else correction.get(name) for name, _ in named]
    gen = torch.Generator().manual_seed(seed)
    aug_gen = augment_generator(seed) if cfg.augment else None
    total_loss = torch.zeros((), dtype=torch.float64)
    total_correct = torch.zeros((), dtype=torch.int64)
    seen = 0
    model.train()
    with seeded_rng(seed, model):
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, cfg.batch_size):
                idx = order[start : start + cfg.batch_size]
                xb, yb = x[idx], y[idx]
                if aug_gen is not None:
                    xb = augment_images(xb, aug_gen)
                logits = model(xb)
                loss = F.cross_entropy(logits, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]  # torch leaves backward unannotated
                _adjust_gradients(params, cfg.proximal_mu, anchors, corrections)
                optimizer.step()
                total_loss += loss.detach() * len(idx)
                total_correct += (logits.detach().argmax(1) == yb).sum()
                seen += len(idx)
    steps = cfg.epochs * -(-n // cfg.batch_size)
    return {
        "loss": float(total_loss) / seen,
        "accuracy": float(total_correct) / seen,
        "num_steps": float(steps),
    }


@torch.no_grad()
def _adjust_gradients(
    params: list[nn.Parameter],
    mu: float,
    anchors: list[torch.Tensor] | None,
    corrections: list[torch.Tensor | None],
) -> None:
    for i, p in enumerate(params):
        if p.grad is None:
            continue
        if anchors is not None:
            p.grad.add_(p - anchors[i], alpha=mu)
        if (c := corrections[i]) is not None:
            p.grad.add_(c)


@torch.inference_mode()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> tuple[float, float]:
    """Return (mean cross-entropy loss, accuracy) of `model` on (x, y)."""
    n = len(x)
    if n == 0:
        return 0.0, 0.0
    model.eval()
    total_loss = 0.0
    correct = 0
    for start in range(0, n, batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = model(xb)
        total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    return total_loss / n, correct / n
