"""Per-example DP-SGD for a client's local training, on Opacus' per-sample gradients.

Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang, "Deep Learning with
Differential Privacy", CCS 2016, Algorithm 1: every step samples each local example
with probability q = B / n (Poisson, as the accountant assumes), clips each example's
gradient to L2 norm C, sums, adds N(0, (z C)^2) and divides by the expected batch size
q n. Opacus (Yousefpour et al. 2021) computes the per-example gradients; the clipping,
noise and step are here, so that an empty batch still takes a noise-only step and the
noise comes from the task seed like everything else in local training.

The guarantee is per example of one client's data, for one round of local training:
`train_dp_sgd` reports that round's epsilon as the metric "dp_sgd_epsilon". A client
that trains in several rounds spends the composition of its rounds. BatchNorm and other
layers with buffers mix examples and are refused (use GroupNorm).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from federa.errors import ConfigError
from federa.privacy.accountant import compute_epsilon
from federa.torch.augment import augment_generator, augment_images
from federa.torch.train import TrainConfig, make_optimizer, seeded_rng


@dataclass(frozen=True, slots=True, kw_only=True)
class DPSGDConfig:
    """DP-SGD settings for `TorchClient(dp_sgd=...)`.

    Attributes:
        noise_multiplier: z; each step's noise has standard deviation z C on the sum.
        max_grad_norm: C, the bound on each example's gradient norm.
        delta: The delta of the epsilon reported per round.
    """

    noise_multiplier: float
    max_grad_norm: float
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise ConfigError(f"noise_multiplier must be >= 0, got {self.noise_multiplier}")
        if not (self.max_grad_norm > 0 and math.isfinite(self.max_grad_norm)):
            raise ConfigError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta}")


@functools.lru_cache(maxsize=64)
def round_epsilon(
    noise_multiplier: float, sampling_rate: float, num_steps: int, delta: float
) -> float:
    """Return the epsilon of `num_steps` DP-SGD steps (cached: clients share their settings)."""
    return compute_epsilon(
        noise_multiplier=noise_multiplier,
        sampling_rate=sampling_rate,
        num_steps=num_steps,
        delta=delta,
    )


def _grad_sample_module(model: nn.Module) -> Any:
    try:
        from opacus import GradSampleModule
    except ModuleNotFoundError:
        raise ConfigError("DP-SGD needs opacus: pip install 'federa[opacus]'") from None
    errors = GradSampleModule.validate(model, strict=False)
    if errors:
        raise ConfigError(
            f"DP-SGD cannot train {type(model).__name__}: a layer with buffers (BatchNorm?) "
            "mixes examples; use GroupNorm or LayerNorm instead"
        )
    return GradSampleModule(model, loss_reduction="sum")


@torch.no_grad()
def _clipped_sum(params: list[nn.Parameter], clip_norm: float) -> list[torch.Tensor]:
    """Return the sum over the batch of each example's gradient clipped to `clip_norm`."""
    samples = [p.grad_sample for p in params]  # type: ignore[attr-defined]  # set by Opacus
    norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in samples]).sum(0).sqrt()
    scale = (clip_norm / (norms + 1e-12)).clamp(max=1.0)
    return [torch.einsum("i,i...->...", scale, g) for g in samples]


def train_dp_sgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: TrainConfig,
    seed: int,
    dp: DPSGDConfig,
) -> dict[str, float]:
    """Train `model` in place with DP-SGD; return loss, accuracy, steps and the round's epsilon.

    Batches, noise and dropout come from `seed` only; the global torch RNG is left as
    it was. FedProx's proximal term is applied to the noised gradient (it depends on
    the weights and the global model only). `cfg.batch_size` is the expected batch.
    """
    n = len(x)
    if n == 0:
        return {"loss": 0.0, "accuracy": 0.0, "num_steps": 0.0, "dp_sgd_epsilon": 0.0}
    q = min(1.0, cfg.batch_size / n)
    steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    gsm = _grad_sample_module(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    anchors = [p.detach().clone() for p in params] if cfg.proximal_mu > 0 else None
    std = dp.noise_multiplier * dp.max_grad_norm
    gen = torch.Generator().manual_seed(seed)
    aug_gen = augment_generator(seed) if cfg.augment else None
    total_loss, correct, seen = 0.0, 0, 0
    model.train()
    try:
        with seeded_rng(seed, model), warnings.catch_warnings():
            # Opacus' hooks fire on the first layer, whose input needs no gradient.
            warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
            for _ in range(steps):
                idx = torch.nonzero(torch.rand(n, generator=gen) < q).squeeze(1)
                optimizer.zero_grad(set_to_none=True)
                sums = [torch.zeros_like(p) for p in params]
                if len(idx):
                    xb = x[idx] if aug_gen is None else augment_images(x[idx], aug_gen)
                    logits = gsm(xb)
                    loss = F.cross_entropy(logits, y[idx], reduction="sum")
                    loss.backward()  # type: ignore[no-untyped-call]  # torch leaves backward unannotated
                    sums = _clipped_sum(params, dp.max_grad_norm)
                    total_loss += float(loss.detach())
                    correct += int((logits.detach().argmax(1) == y[idx]).sum())
                    seen += len(idx)
                for i, p in enumerate(params):
                    noise = torch.normal(0.0, std, p.shape, generator=gen) if std else 0.0
                    p.grad = (sums[i] + noise) / (q * n)
                    if anchors is not None:
                        p.grad.add_(p.detach() - anchors[i], alpha=cfg.proximal_mu)
                    p.grad_sample = None  # type: ignore[attr-defined]  # Opacus' attribute
                optimizer.step()
    finally:
        gsm.cleanup()  # remove the hooks: the model may be shared with other clients
    return {
        "loss": total_loss / max(seen, 1),
        "accuracy": correct / max(seen, 1),
        "num_steps": float(steps),
        "dp_sgd_epsilon": round_epsilon(dp.noise_multiplier, q, steps, dp.delta),
    }
