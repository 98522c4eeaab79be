"""A hand-written training step for stacks of dense layers and ReLUs, for many clients at once.

For a model that is a chain of flatten, `nn.Linear` and ReLU (McMahan et al.'s 2NN,
logistic regression, any multilayer perceptron), the batched step needs neither
autograd nor the traced graph's interpreter: the forward pass is one batched product
per layer, the gradient of the mean cross-entropy with respect to the logits is
softmax minus one-hot, and each layer's backward pass is one product for the input's
gradient and one for the weight's, handed to the optimizer as in
`federa.torch._batched`. At ten examples per client the products are small, and the
engine's bookkeeping was about half of a step; this path leaves only the arithmetic.
The arithmetic is the autograd path's, so results agree with the per-client loop to
float rounding (the equivalence tests cover both paths). A layer whose weight the
updater hands to a `federa.torch._windowed.WindowedLinear` (under plain SGD: the first
layer, and large ones) runs through it, and its weight is written once per window of
steps instead of every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from federa.torch._batched import (
    Updater,
    flatten_dims,
    is_relu,
    linear_backward,
    linear_forward,
)


@dataclass(frozen=True, slots=True)
class DenseLayer:
    """One dense layer of a chain: its parameter names and whether a ReLU follows it."""

    weight: str
    bias: str | None
    relu: bool


@dataclass(frozen=True, slots=True)
class DenseChain:
    """A model that is a chain of dense layers.

    Attributes:
        layers: The dense layers in order.
        flattens: Whether the chain starts by flattening each example; without it, the
            examples must be vectors already (a dense layer on a (rows, features)
            example acts on each row, which the generic path handles).
    """

    layers: tuple[DenseLayer, ...]
    flattens: bool


def dense_chain(graph: torch.fx.GraphModule) -> DenseChain | None:
    """Return the chain of a [flatten ->] (Linear [-> ReLU])* model, or None for other models.

    The chain may start with one flatten of all but the batch axis; every node feeds
    only the next one, and a ReLU follows a dense layer directly.
    """
    modules = dict(graph.named_modules())
    nodes = list(graph.graph.nodes)
    if not nodes or nodes[0].op != "placeholder" or nodes[-1].op != "output":
        return None
    layers: list[DenseLayer] = []
    flattens = False
    previous = nodes[0]
    for position, node in enumerate(nodes[1:-1], start=1):
        if node.args[:1] != (previous,) or len(node.users) != 1:
            return None
        module = modules.get(str(node.target)) if node.op == "call_module" else None
        if isinstance(module, nn.Linear):
            bias = f"{node.target}.bias" if module.bias is not None else None
            layers.append(DenseLayer(weight=f"{node.target}.weight", bias=bias, relu=False))
        elif is_relu(node, modules):
            if not layers or layers[-1].relu:  # a ReLU follows a dense layer directly
                return None
            last = layers[-1]
            layers[-1] = DenseLayer(weight=last.weight, bias=last.bias, relu=True)
        elif position == 1 and _is_full_flatten(node, module):
            flattens = True
        else:
            return None
        previous = node
    if nodes[-1].args[:1] != (previous,) or not layers:
        return None
    return DenseChain(layers=tuple(layers), flattens=flattens)


def _is_full_flatten(node: torch.fx.Node, module: nn.Module | None) -> bool:
    """Return whether `node` flattens every axis but the batch's."""
    if module is not None:
        return type(module) is nn.Flatten and module.start_dim == 1 and module.end_dim == -1
    if node.op != "call_function" or node.target is not torch.flatten:
        return False
    return flatten_dims(node.args[1:], dict(node.kwargs)) == (1, -1)


def dense_step(
    chain: DenseChain,
    params: dict[str, torch.Tensor],
    trainable: frozenset[str],
    x: torch.Tensor | None,
    y: torch.Tensor,
    example_weights: torch.Tensor | float,
    updater: Updater,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Take one step of the first m clients; return per-example losses and logits.

    Args:
        chain: The model, from `dense_chain`.
        params: Stacked parameters; the first m rows (m = len(x)) are used and updated.
        trainable: Parameters to update; the others stay as they are.
        x: Inputs (m, batch, ...), flattened per example: (m, batch, features)
            unless the chain flattens; None when the first layer's window holds them.
        y: Labels (m, batch).
        example_weights: Each example's weight in its client's loss, (m, batch, 1), or
            one number for all: 1/batch for a full minibatch, 1/count on the valid rows of a
            short one and 0 on the padding.
        updater: Applies the gradients; a layer whose weight it has a window for
            (`Updater.window`) runs through the window.

    Returns:
        The per-example cross-entropy (m, batch) and the logits (m, batch, classes).
    """
    m, b = y.shape
    layers = chain.layers
    h = torch.empty(0) if x is None else x.reshape(m, b, -1)  # else the window holds them
    windows = [updater.window(layer.weight) for layer in layers]
    inputs: list[torch.Tensor] = []
    with torch.no_grad():
        for i, (layer, window) in enumerate(zip(layers, windows, strict=True)):
            inputs.append(h)
            bias = None if layer.bias is None else params[layer.bias][:m]
            given = None if i == 0 and x is None else h
            h = linear_forward(given, params[layer.weight][:m], bias, window)
            if layer.relu:
                h.relu_()
        logits = h
        per_example = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        # d(sum over clients of the weighted mean loss) / d logits = w * (softmax - onehot)
        grad = torch.softmax(logits, dim=-1)
        grad.scatter_add_(-1, y.unsqueeze(-1), torch.full_like(grad[..., :1], -1.0))
        grad.mul_(example_weights)
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            if layer.relu:  # ReLU's gradient: where its output is positive
                grad.mul_((inputs[i + 1] if i + 1 < len(inputs) else logits) > 0)
            names = (
                layer.weight if layer.weight in trainable else None,
                layer.bias if layer.bias is not None and layer.bias in trainable else None,
            )
            below = linear_backward(
                grad, inputs[i], params[layer.weight][:m], windows[i], names, updater, i > 0
            )
            if below is not None:
                grad = below
    return per_example.view(m, b), logits
