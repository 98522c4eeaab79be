"""Gradient inversion (Zhu, Liu, Han. "Deep Leakage from Gradients." NeurIPS 2019).

A client's plain update after one SGD step on one image gives the image away: the server
optimises a dummy image until its gradient matches (with the label read off the last
bias, Zhao et al. 2020, "iDLG"). Under SecAgg+ the server holds only a masked input,
uniform over the ring, and the sum of the cohort's updates: the same attack on either
recovers no client's image better than guessing the data set's mean image would.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import federa as fd
from federa.data import load_digits
from federa.privacy.secagg import SecAggPlus, quantize, wire
from tests.privacy.secagg_harness import Network, VectorClient, train_tasks

pytestmark = pytest.mark.slow

LR = 0.1
NUM_CLIENTS = 5
CLIP = 1.0


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.Sigmoid(), torch.nn.Linear(32, 10))


def gradient(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, graph: bool = False
) -> torch.Tensor:
    loss = torch.nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=graph)
    return torch.cat([g.reshape(-1) for g in grads])


def deep_leakage(model: torch.nn.Module, target: torch.Tensor, steps: int = 100) -> torch.Tensor:
    """Return the image whose gradient best matches `target`, clamped to [0, 1]."""
    # iDLG: for one example, only the true class has a negative last-bias gradient.
    label = torch.tensor([int(torch.argmin(target[-10:]))])
    dummy = torch.full((1, 64), 0.5, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [dummy], lr=1, max_iter=steps, history_size=100, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        diff = gradient(model, dummy, label, graph=True) - target
        loss = (diff * diff).sum()
        loss.backward()
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]  # torch's LBFGS.step is untyped
    return dummy.detach().reshape(64).clamp(0.0, 1.0)


def mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).mean())


def test_plain_update_reveals_the_image_but_secagg_views_do_not() -> None:
    torch.set_num_threads(1)
    split = load_digits()
    images = torch.tensor(split.train.x[:NUM_CLIENTS].reshape(NUM_CLIENTS, 64))
    labels = torch.tensor(split.train.y[:NUM_CLIENTS])
    prior = torch.tensor(split.train.x.reshape(-1, 64).mean(axis=0))  # guess without data
    guess_error = [mse(prior, image) for image in images]
    model = tiny_model()
    # Each client takes one SGD step on its one image: update = -lr * gradient.
    updates = [
        (-LR * gradient(model, images[i : i + 1], labels[i : i + 1])).detach() for i in range(5)
    ]

    # Plain FedAvg: the server sees client 0's update and inverts it.
    stolen = deep_leakage(model, -updates[0] / LR)
    assert mse(stolen, images[0]) < 1e-4 < guess_error[0] / 100

    # SecAgg+: the server sees client 0's masked input and the mean of all updates.
    size = updates[0].numel()
    clients = {
        cid: VectorClient(updates[cid].double().numpy(), 1, 0.0) for cid in range(NUM_CLIENTS)
    }
    net = Network(dict(clients))
    secagg = SecAggPlus(clip=CLIP)
    initial = fd.Arrays({"w": np.zeros(size)})
    [(_, aggregate)] = secagg.aggregate(
        train_tasks(range(NUM_CLIENTS), initial), net.collect, seed=0
    )[0]
    mean = aggregate.arrays["w"]
    np.testing.assert_allclose(mean, torch.stack(updates).mean(0).double().numpy(), atol=1e-4)

    masked = net.replies_at(wire.MASK)[0][wire.MASKED][:size]
    weight = 1 / secagg.max_weight  # what client 0's weight would be: the best case
    as_update = quantize.decode_sum(masked, -CLIP, CLIP, quantize.levels_for(NUM_CLIENTS), 1)
    from_masked = deep_leakage(model, torch.tensor(-as_update / weight / LR, dtype=torch.float32))
    assert mse(from_masked, images[0]) > guess_error[0]

    from_sum = deep_leakage(model, torch.tensor(-mean / LR, dtype=torch.float32))
    for image, error in zip(images, guess_error, strict=True):
        assert mse(from_sum, image) > error
