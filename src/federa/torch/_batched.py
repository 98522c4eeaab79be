"""One forward pass of a model for many clients at once, each with its own parameters.

`trace` turns a model into a `BatchedForward` with `torch.fx`: every layer of a supported
kind is replaced by its batched form over a leading client axis. Linear layers become
batched matrix products whose backward pass hands each weight's gradient product
straight to the optimizer (`Updater.update_product`), so the large per-client gradient
of a dense layer is never allocated per step and, for plain SGD, never written at all:
the update is folded into the product. Convolutions become one grouped convolution
(one group per client, batch-major layout); pooling, flattening, dropout and
element-wise activations carry over directly.

Supported: nn.Linear, nn.Conv2d (zero padding), nn.MaxPool2d, nn.AvgPool2d,
nn.Flatten, nn.Dropout, nn.Identity, element-wise activation modules and functions
(ReLU, Tanh, GELU, ...), torch.flatten, and +, -, * between activations. Anything else
makes `trace` return the reason, and the caller trains per client.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from federa.torch._windowed import WindowedLinear

# Modules and functions that act on each element alone, so on any layout.
_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Identity,
)
_ELEMENTWISE_FUNCTIONS: set[Callable[..., Any]] = {
    torch.relu,
    F.relu,
    torch.tanh,
    torch.sigmoid,
    F.gelu,
    F.silu,
    F.leaky_relu,
    F.elu,
}
_BINARY = {operator.add, operator.sub, operator.mul, torch.add, torch.mul}


class Updater(Protocol):
    """Receives gradients during the backward pass and updates the parameters in place."""

    def update_product(self, name: str, a: torch.Tensor, b: torch.Tensor) -> None:
        """Apply the gradient a @ b (batched over clients) to parameter `name`."""

    def update(self, name: str, grad: torch.Tensor) -> None:
        """Apply `grad` to parameter `name`."""

    def window(self, name: str) -> WindowedLinear | None:
        """Return the `WindowedLinear` that owns weight `name`, or None."""


def linear_forward(
    x: torch.Tensor | None,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    window: WindowedLinear | None,
) -> torch.Tensor:
    """Return x @ W^T + b for stacked clients: x (m, rows, in), W (m, out, in), b (m, out).

    Through `window` when the weight has one (x is then None for a first layer whose
    window holds its inputs).
    """
    if window is not None:  # the weight is written once per window
        out = window.forward(x)
        return out if bias is None else out.add_(bias.unsqueeze(1))
    assert x is not None
    if bias is None:
        return torch.bmm(x, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))


def linear_backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    window: WindowedLinear | None,
    names: tuple[str | None, str | None],
    updater: Updater,
    input_grad: bool,
) -> torch.Tensor | None:
    """Update the layer's (weight, bias) `names` (None: frozen) from `grad` at its output
    (m, rows, out); return the gradient at its input if `input_grad`, else None."""
    weight_name, bias_name = names
    if window is not None:
        grad_x = window.input_grad(grad) if input_grad else None
        window.record(grad)
    else:
        # The input's gradient needs the weight before its update.
        grad_x = torch.bmm(grad, weight) if input_grad else None
        if weight_name is not None:
            updater.update_product(weight_name, grad.transpose(1, 2), x)
    if bias_name is not None:
        updater.update(bias_name, grad.sum(1))
    return grad_x


class _Linear(torch.autograd.Function):
    """Batched x @ W^T + b whose backward updates W and b through the updater."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        token: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        names: tuple[str | None, str | None],
        updater: Updater,
    ) -> torch.Tensor:
        ctx.save_for_backward(x)
        # Held outside save_for_backward: the backward pass updates them in place.
        ctx.weight, ctx.bias, ctx.names, ctx.updater = weight, bias, names, updater
        ctx.window = updater.window(names[0]) if names[0] is not None else None
        return linear_forward(x, weight, bias, ctx.window)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        grad_x = linear_backward(
            grad, x, ctx.weight, ctx.window, ctx.names, ctx.updater, ctx.needs_input_grad[0]
        )
        return grad_x, None, None, None, None, None


@dataclass(frozen=True, slots=True)
class _Value:
    """An activation of all clients: (clients, batch, ...), or (batch, clients, ...)."""

    tensor: torch.Tensor
    batch_major: bool

    def client_major(self) -> torch.Tensor:
        return self.tensor.transpose(0, 1) if self.batch_major else self.tensor

    def as_batch_major(self) -> torch.Tensor:
        return self.tensor if self.batch_major else self.tensor.transpose(0, 1)


DropoutFn = Callable[[float, tuple[int, ...], torch.dtype], torch.Tensor]
"""Returns the next dropout call's (clients, batch, *shape) mask, given p, shape and dtype."""


class BatchedForward:
    """Run a traced model for every client at once.

    Args:
        graph: The traced model.
        trainable: Names of the parameters training updates.
    """

    def __init__(self, graph: torch.fx.GraphModule, trainable: frozenset[str]) -> None:
        self.graph = graph
        self.modules = dict(graph.named_modules())
        self.trainable = trainable
        linear = [
            str(node.target)
            for node in graph.graph.nodes
            if node.op == "call_module" and isinstance(self.modules[node.target], nn.Linear)
        ]
        # Parameters owned by linear layers reach the updater from their backward pass.
        self.linear_params = frozenset(f"{t}.{kind}" for t in linear for kind in ("weight", "bias"))
        # Every linear weight's size, in graph order (`trace` refuses a module called twice).
        self.linear_weight_sizes = {f"{t}.weight": self.modules[t].weight.numel() for t in linear}
        # ReLU then max-pooling equals max-pooling then ReLU (ReLU is monotone, so the
        # window's maximum and its gradient's route agree), and the ReLU then runs on a
        # quarter of the values: such ReLU nodes pass their input through, and the
        # pooling node applies the ReLU after itself.
        self._deferred_relus = {
            node
            for node in graph.graph.nodes
            if is_relu(node, self.modules)
            and len(node.users) == 1
            and _is_max_pool(next(iter(node.users)), self.modules)
        }
        self._relu_after = {next(iter(node.users)) for node in self._deferred_relus}

    def __call__(
        self,
        params: dict[str, torch.Tensor],
        x: torch.Tensor,
        updater: Updater,
        token: torch.Tensor,
        dropout: DropoutFn,
    ) -> torch.Tensor:
        """Return logits (clients, batch, classes) for inputs x (clients, batch, ...).

        Linear layers' parameters in `params` are updated in place by the backward pass
        (through `updater`); all others must be leaves whose gradients the caller takes.
        `token` (a scalar that requires grad) ties linear layers into the graph.
        """
        env: dict[torch.fx.Node, Any] = {}
        for node in self.graph.graph.nodes:
            if node.op == "placeholder":
                env[node] = _Value(x, batch_major=False)
            elif node.op == "output":
                out: _Value = env[node.args[0]]
                return out.client_major()
            elif node in self._deferred_relus:
                env[node] = env[node.args[0]]
            elif node.op == "call_module":
                value = env[node.args[0]]
                module = self.modules[node.target]
                if node in self._relu_after:
                    pooled = self._module(node.target, module, value, params, updater, token)
                    env[node] = _elementwise(F.relu, pooled)
                elif isinstance(module, nn.Dropout):
                    t = value.tensor
                    env[node] = self._dropout(value, dropout(module.p, t.shape[2:], t.dtype))
                else:
                    env[node] = self._module(node.target, module, value, params, updater, token)
            elif node.op == "call_function" and node.target in _BINARY:
                env[node] = _binary(node.target, [env.get(a, a) for a in node.args])
            else:  # an element-wise function or torch.flatten, checked by trace()
                value = env[node.args[0]]
                if node.target is torch.flatten:
                    start, end = flatten_dims(node.args[1:], node.kwargs)
                    flat = value.tensor.flatten(_shift(start), _shift(end))
                    env[node] = _Value(flat, value.batch_major)
                else:
                    fn: Callable[..., torch.Tensor] = node.target
                    kwargs = {k: v for k, v in node.kwargs.items() if k != "inplace"}
                    call = functools.partial(_call_with, fn, node.args[1:], kwargs)
                    env[node] = _elementwise(call, value)
        raise AssertionError("a traced graph ends in an output node")

    def _module(
        self,
        name: str,
        module: nn.Module,
        value: _Value,
        params: dict[str, torch.Tensor],
        updater: Updater,
        token: torch.Tensor,
    ) -> _Value:
        if isinstance(module, nn.Linear):
            w, b = f"{name}.weight", f"{name}.bias"
            bias = params[b] if module.bias is not None else None
            names = (w if w in self.trainable else None, b if b in self.trainable else None)
            x = value.client_major()  # (clients, batch, ..., features): rows in between
            rows = x.reshape(x.shape[0], -1, x.shape[-1])
            out = _Linear.apply(rows, token, params[w], bias, names, updater)  # type: ignore[no-untyped-call]  # torch leaves apply unannotated
            return _Value(out.view(*x.shape[:-1], out.shape[-1]), batch_major=False)
        if isinstance(module, nn.Conv2d):
            return _conv(module, value, params[f"{name}.weight"], params.get(f"{name}.bias"))
        if isinstance(module, nn.Flatten):
            flat = value.tensor.flatten(_shift(module.start_dim), _shift(module.end_dim))
            return _Value(flat, value.batch_major)
        if isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
            t = value.tensor  # pool every (height, width) plane, whatever the leading axes
            if value.batch_major and t.dim() == 5:
                # (batch, clients x channels, h, w): a view even in channels-last layout
                out = module(t.flatten(1, 2))
            else:
                out = module(t.flatten(0, -3))
            return _Value(out.view(*t.shape[:-2], *out.shape[-2:]), value.batch_major)
        if isinstance(module, nn.ReLU):
            return _elementwise(F.relu, value)  # never in place
        return _elementwise(module, value)

    @staticmethod
    def _dropout(value: _Value, mask: torch.Tensor) -> _Value:
        return _Value(
            value.tensor * (mask.transpose(0, 1) if value.batch_major else mask), value.batch_major
        )


def is_relu(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Return whether `node` is a ReLU of one activation (module or function)."""
    if node.op == "call_module":
        return type(modules[str(node.target)]) is nn.ReLU
    return (
        node.op == "call_function"
        and node.target in (torch.relu, F.relu)
        and len(node.args) == 1
        and set(node.kwargs) <= {"inplace"}
    )


def _is_max_pool(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and type(modules[str(node.target)]) is nn.MaxPool2d


def _call_with(
    fn: Callable[..., torch.Tensor], args: Sequence[Any], kwargs: dict[str, Any], t: torch.Tensor
) -> torch.Tensor:
    return fn(t, *args, **kwargs)


def _elementwise(fn: Callable[[torch.Tensor], torch.Tensor], value: _Value) -> _Value:
    """Apply an element-wise function to an activation, keeping its layout.

    A convolution's batch-major output (batch, clients, channels, h, w) is a view of a
    channels-last 4-D tensor; element-wise kernels on that 5-D view take a strided path
    several times slower than on the 4-D tensor itself, so they get the 4-D view.
    """
    t = value.tensor
    if value.batch_major and t.dim() == 5:
        out = fn(t.flatten(1, 2))
        return _Value(out.view(t.shape), batch_major=True)
    return _Value(fn(t), value.batch_major)


def _conv(
    module: nn.Conv2d, value: _Value, weight: torch.Tensor, bias: torch.Tensor | None
) -> _Value:
    """Run every client's convolution as one grouped convolution, batch-major."""
    x = value.as_batch_major()
    batch, clients = x.shape[:2]
    # Channels-last: oneDNN's grouped convolutions, and the pooling after them, run
    # markedly faster in this layout on CPU than in NCHW.
    layout = torch.channels_last
    out = F.conv2d(
        x.reshape(batch, clients * x.shape[2], *x.shape[3:]).contiguous(memory_format=layout),
        weight.flatten(0, 1).contiguous(memory_format=layout),
        None if bias is None else bias.flatten(),
        module.stride,
        module.padding,
        module.dilation,
        module.groups * clients,
    )
    return _Value(out.view(batch, clients, -1, *out.shape[2:]), batch_major=True)


def _binary(op: Callable[..., Any], args: Sequence[Any]) -> _Value:
    values = [a for a in args if isinstance(a, _Value)]
    batch_major = all(v.batch_major for v in values)
    tensors = [
        (a.as_batch_major() if batch_major else a.client_major()) if isinstance(a, _Value) else a
        for a in args
    ]
    return _Value(op(*tensors), batch_major)


def flatten_dims(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[int, int]:
    """Return torch.flatten's (start_dim, end_dim) for one example's batch."""
    start = args[0] if args else kwargs.get("start_dim", 0)
    end = args[1] if len(args) > 1 else kwargs.get("end_dim", -1)
    return int(start), int(end)


def _shift(dim: int) -> int:
    """Return a non-negative axis of a batch as an axis of the stacked (clients, batch, ...)."""
    return dim + 1 if dim >= 0 else dim


def trace(model: nn.Module, trainable: frozenset[str]) -> BatchedForward | str:
    """Return `model`'s batched forward pass, or why it cannot be built."""
    kind = type(model).__name__
    try:
        graph = torch.fx.symbolic_trace(model)
    except Exception as exc:  # any model torch.fx cannot trace
        return f"{kind} cannot be traced by torch.fx ({type(exc).__name__}: {exc})"
    modules = dict(graph.named_modules())
    called: set[str] = set()
    for node in graph.graph.nodes:
        reason = _unsupported(node, modules, called)
        if reason is not None:
            return f"{kind} {reason}"
    return BatchedForward(graph, trainable)


def _unsupported(
    node: torch.fx.Node, modules: dict[str, nn.Module], called: set[str]
) -> str | None:
    """Return why `node` cannot run batched, or None."""
    if node.op in ("placeholder", "output"):
        if node.op == "placeholder" and node.name != next(iter(node.graph.nodes)).name:
            return "takes more than one input"
        return None
    if node.op == "call_module":
        module = modules[str(node.target)]
        if isinstance(module, nn.Linear | nn.Conv2d):
            if str(node.target) in called:
                return f"calls {node.target} twice in one forward pass"
            called.add(str(node.target))
            if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
                return f"pads {node.target} with {module.padding_mode!r}"
            return None
        if isinstance(module, nn.MaxPool2d) and module.return_indices:
            return f"returns pooling indices from {node.target}"
        if isinstance(module, nn.Flatten) and module.start_dim == 0:
            return f"flattens the batch axis away ({node.target})"
        if type(module) in (nn.Flatten, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d):
            return None
        if isinstance(module, _ELEMENTWISE_MODULES):
            return None
        return f"uses {type(module).__name__} ({node.target})"
    if node.op == "call_function":
        if node.target is torch.flatten:
            start, _ = flatten_dims(node.args[1:], dict(node.kwargs))
            return "flattens the batch axis away" if start == 0 else None
        if node.target in _ELEMENTWISE_FUNCTIONS:
            return None
        if node.target in _BINARY and not node.kwargs:
            return None
    return f"uses {node.op} {getattr(node.target, '__name__', node.target)}"
