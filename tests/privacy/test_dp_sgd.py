"""Per-example DP-SGD through Opacus: each example's gradient is clipped, noise is calibrated."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import federa as fd
from federa.errors import ConfigError
from federa.privacy import compute_epsilon
from federa.torch.arrays import module_to_arrays
from federa.torch.client import TorchClient
from federa.torch.dp_sgd import DPSGDConfig, train_dp_sgd
from federa.torch.train import TrainConfig

pytestmark = pytest.mark.slow  # importing opacus takes seconds

SGD = TrainConfig(epochs=1, batch_size=64, lr=0.5, optimizer="sgd", momentum=0.0)


def tiny(inputs: int = 3, classes: int = 2) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(inputs, 4), nn.Tanh(), nn.Linear(4, classes))


def data(n: int = 6, inputs: int = 3, classes: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return 3 * torch.randn(n, inputs, generator=g), torch.randint(0, classes, (n,), generator=g)


def per_example_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float) -> nn.Module:
    """One SGD step on the mean of per-example gradients, each clipped to `clip`, by hand."""
    params = list(model.parameters())
    total = [torch.zeros_like(p) for p in params]
    norms = []
    for i in range(len(x)):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        norms.append(float(norm))
        for t, g in zip(total, grads, strict=True):
            t += g * min(1.0, clip / float(norm))
    assert max(norms) > clip > min(norms)  # clipping is active for some examples only
    stepped = copy.deepcopy(model)
    with torch.no_grad():
        for p, t in zip(stepped.parameters(), total, strict=True):
            p -= SGD.lr * t / len(x)
    return stepped


def test_each_examples_gradient_is_clipped_before_averaging() -> None:
    model, (x, y) = tiny(), data()
    clip = 1.5
    expected = per_example_step(model, x, y, clip)
    # batch_size >= n samples every example (q = 1): one step over all six.
    metrics = train_dp_sgd(
        model, x, y, SGD, 0, DPSGDConfig(noise_multiplier=0.0, max_grad_norm=clip)
    )
    assert metrics["num_steps"] == 1.0
    for got, want in zip(model.parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_noise_has_std_z_c_over_the_expected_batch() -> None:
    x, y = data(n=8, inputs=40, classes=30)
    runs = []
    for z in (0.0, 2.0):
        model = tiny(40, 30)
        train_dp_sgd(model, x, y, SGD, 7, DPSGDConfig(noise_multiplier=z, max_grad_norm=0.3))
        runs.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    diff = (runs[1] - runs[0]).numpy()
    # The noise on the sum is N(0, (z C)^2); the step divides by q n = 8 and scales by lr.
    assert diff.std() == pytest.approx(SGD.lr * 2.0 * 0.3 / 8, rel=0.1)


def test_dp_sgd_is_deterministic_by_seed_and_leaves_no_hooks() -> None:
    x, y = data(n=40)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1)
    dp = DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0)
    models = [tiny(), tiny(), tiny()]
    for model, seed in zip(models, (3, 3, 4), strict=True):
        train_dp_sgd(model, x, y, cfg, seed, dp)
    a, b, c = (module_to_arrays(m) for m in models)
    assert a == b
    assert a != c
    for module in models[0].modules():
        assert not module._forward_hooks and not module._backward_hooks
    assert all(not hasattr(p, "grad_sample") for p in models[0].parameters())


def test_torch_client_reports_the_rounds_epsilon() -> None:
    x, y = data(n=40)
    dp = DPSGDConfig(noise_multiplier=1.2, max_grad_norm=1.0, delta=1e-5)
    client = TorchClient(tiny, (x, y), train_config=TrainConfig(batch_size=10), dp_sgd=dp)
    result = client.fit(module_to_arrays(tiny()), {"seed": 1})
    expected = compute_epsilon(noise_multiplier=1.2, sampling_rate=0.25, num_steps=4, delta=1e-5)
    assert result.metrics["dp_sgd_epsilon"] == pytest.approx(expected)
    assert result.arrays.is_finite()
    assert isinstance(result, fd.TrainResult)


def test_layers_that_mix_examples_are_refused() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    x, y = data()
    with pytest.raises(ConfigError, match="GroupNorm"):
        train_dp_sgd(model, x, y, SGD, 0, DPSGDConfig(noise_multiplier=1.0, max_grad_norm=1.0))
    assert all(not hasattr(p, "grad_sample") for p in model.parameters())
