"""On-the-fly augmentation: deterministic per seed, changes the images, off by default."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from federa.errors import ConfigError
from federa.torch.augment import Augmentation, augment_images
from federa.torch.train import TrainConfig, train


def strokes(n: int = 8) -> torch.Tensor:
    """Return `n` 28x28 images holding a bright bar each, as a handwritten "1"."""
    x = torch.zeros(n, 1, 28, 28)
    for i in range(n):
        x[i, 0, 4:24, 12 + i % 4 : 14 + i % 4] = 1.0
    return x


def test_same_seed_gives_the_same_images_and_another_seed_others() -> None:
    x = strokes()
    a = augment_images(x, torch.Generator().manual_seed(3))
    b = augment_images(x, torch.Generator().manual_seed(3))
    c = augment_images(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_augmented_images_differ_keep_shape_range_and_input() -> None:
    x = strokes()
    before = x.clone()
    out = augment_images(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(x, before)  # a new tensor; the input is left alone
    changed = (out - x).abs().flatten(1).amax(1) > 0.1
    assert bool(changed.all())
    assert float(out.flatten(1).sum(1).min()) > 0.3 * float(x.flatten(1).sum(1).min())  # ink kept


def test_round_trip_alone_blurs_a_sharp_stroke() -> None:
    still = Augmentation(
        rotation_deg=0.0, scale=(1.0, 1.0), shift_px=0.0, round_trip=1.0,
        round_trip_sizes=(12,), contrast=(1.0, 1.0),
    )  # fmt: skip
    x = strokes(2)
    out = augment_images(x, torch.Generator().manual_seed(0), still)
    assert float(((out > 0.05) & (out < 0.95)).sum()) > float(((x > 0.05) & (x < 0.95)).sum())


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 5, stride=4), nn.Flatten(), nn.Linear(72, 2))


def trained(cfg: TrainConfig, seed: int) -> list[torch.Tensor]:
    model = tiny_cnn()
    x = strokes(12)
    y = torch.arange(12) % 2
    train(model, x, y, cfg, seed)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.slow  # the first training step pays torch's (and opacus') lazy setup
def test_training_with_augment_is_deterministic_and_differs_from_plain() -> None:
    cfg = TrainConfig(batch_size=4, lr=0.1)
    assert cfg.augment is False  # off unless asked for
    on = cfg.updated({"augment": True})  # the server may switch it on
    first, again = trained(on, seed=5), trained(on, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    plain = trained(cfg, seed=5)
    assert not all(torch.equal(a, b) for a, b in zip(first, plain, strict=True))


def test_augment_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="augment must be true or false"):
        TrainConfig().updated({"augment": 1})


@pytest.mark.slow  # the first training step pays torch's (and opacus') lazy setup
def test_dp_sgd_training_with_augment_is_deterministic_and_differs_from_plain() -> None:
    from federa.torch.dp_sgd import DPSGDConfig, train_dp_sgd  # imports opacus

    dp = DPSGDConfig(noise_multiplier=0.0, max_grad_norm=1.0)

    def dp_trained(cfg: TrainConfig) -> list[torch.Tensor]:
        model = tiny_cnn()
        train_dp_sgd(model, strokes(12), torch.arange(12) % 2, cfg, 5, dp)
        return [p.detach().clone() for p in model.parameters()]

    cfg = TrainConfig(batch_size=4, lr=0.1, augment=True)
    first, again = dp_trained(cfg), dp_trained(cfg)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    plain = dp_trained(TrainConfig(batch_size=4, lr=0.1))
    assert not all(torch.equal(a, b) for a, b in zip(first, plain, strict=True))
