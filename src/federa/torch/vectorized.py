"""Train a whole cohort of clients at once: one batched step moves every client's model.

The standard loop (`federa.torch.train.train`) trains one client after the other. A
simulated round of small models spends most of its time in per-step overhead and in
memory traffic, so this trainer stacks the cohort's parameters along a leading client
axis and runs each local step of every client in one set of batched operations
(`federa.torch._batched`: batched matrix products, grouped convolutions). What it
computes is the standard loop's result for every client:

* the same minibatches: each client draws its epoch permutations from its own
  generator seeded as `train` seeds it, keeps the last, smaller batch, and clients
  with fewer examples stop early (their padded rows are masked out of the loss, and
  finished clients leave the stack);
* the same optimizer arithmetic: SGD (momentum, weight decay) and Adam written out
  with torch.optim's single-tensor formulas, plus FedProx's proximal term (Li et al.
  2020, "Federated Optimization in Heterogeneous Networks") added to the gradient first;
  under plain SGD, large dense weights (and a multilayer perceptron's first) are written
  once per window of steps, their steps computed from the window's starting weight
  (`federa.torch._windowed`), which is the same arithmetic regrouped;
* the same dropout masks: each client's masks are drawn with the calls and generator
  state `train` uses (`at::dropout` on CPU: bernoulli_(1 - p) / (1 - p)), bit for bit.

The trained arrays differ from the one-at-a-time loop's only by floating-point rounding
of the batched kernels: for SGD typically below 1e-7 after a few dozen steps. Adam
normalises each update by the gradient's own size, so a coordinate whose gradient is
pure rounding noise (a cancellation near zero) can move by up to about `lr` more or less
than in the one-at-a-time loop; on MNIST's CNN this stays below 1e-5, on the 6.6M
parameter FEMNIST CNN it reached 1.5e-4 after 3 steps at lr 0.01. Models the batched
forward pass does not cover (batch normalisation, buffers, tied weights, layers other
than those `federa.torch._batched` lists) are refused with `VectorizeError`, with the
reason; callers then train per client.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from federa.core.arrays import Arrays, NDArray
from federa.errors import ConfigError
from federa.torch import _buffers
from federa.torch._batched import BatchedForward, trace
from federa.torch._mlp import DenseChain, dense_chain, dense_step
from federa.torch._windowed import LARGE, WindowedLinear, window_steps
from federa.torch.train import TrainConfig

__all__ = ["VectorizeError", "release_buffers", "train_cohort", "vectorize_reason"]

_ADAM_BETAS, _ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, as make_optimizer


class VectorizeError(ConfigError):
    """The model or the data cannot be trained by the vectorized trainer."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to train one model batched: its batched forward pass and parameter names."""

    forward: BatchedForward
    names: tuple[str, ...]  # parameters in state-dict order
    trainable: tuple[str, ...]
    dense: DenseChain | None  # a chain of dense layers, stepped without autograd


# One plan per model object, dropped with the model.
_PLANS: weakref.WeakKeyDictionary[nn.Module, _Plan | str] = weakref.WeakKeyDictionary()


def vectorize_reason(model: nn.Module) -> str | None:
    """Return why `model` cannot be trained by `train_cohort`, or None if it can."""
    plan = _plan(model)
    return plan if isinstance(plan, str) else None


def _plan(model: nn.Module) -> _Plan | str:
    plan = _PLANS.get(model)
    if plan is None:
        plan = _PLANS[model] = _make_plan(model)
    return plan


def _make_plan(model: nn.Module) -> _Plan | str:
    kind = type(model).__name__
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return f"{kind} normalises over the batch ({name or 'model'})"
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        return f"{kind} keeps buffers ({', '.join(buffers[:3])})"
    names = tuple(model.state_dict(keep_vars=True))
    params = dict(model.named_parameters())
    if set(names) != set(params) or len(names) != len(params):
        return f"{kind} shares (ties) parameters between layers"
    trainable = tuple(n for n in names if params[n].requires_grad)
    forward = trace(model, frozenset(trainable))
    if isinstance(forward, str):
        return forward
    dense = dense_chain(forward.graph)
    return _Plan(forward=forward, names=names, trainable=trainable, dense=dense)


@dataclass(slots=True)
class _Schedule:
    """Every client's minibatches as rows of one index tensor over the concatenated data."""

    order: list[int]  # clients sorted by number of steps, most first
    steps: list[int]  # steps of each client in `order`
    index: torch.Tensor  # (clients, max steps, batch) into the concatenated data
    counts: torch.Tensor  # (clients, max steps) real examples in each batch


def _schedule(
    sizes: Sequence[int], seeds: Sequence[int], epochs: Sequence[int], b: int
) -> _Schedule:
    """Draw each client's epoch permutations exactly as `train` does."""
    steps = [e * -(-n // b) for n, e in zip(sizes, epochs, strict=True)]
    order = sorted(range(len(sizes)), key=lambda k: -steps[k])
    max_steps = max(steps, default=0)
    index = np.zeros((len(sizes), max_steps, b), dtype=np.int64)
    counts = np.zeros((len(sizes), max_steps), dtype=np.int64)
    offset = 0
    for row, k in enumerate(order):
        n = sizes[k]
        if n == 0:
            continue
        gen = torch.Generator().manual_seed(seeds[k])
        per_epoch = -(-n // b)
        rows = index[row, : steps[k]].reshape(epochs[k], per_epoch * b)
        for epoch in range(epochs[k]):
            rows[epoch, :n] = torch.randperm(n, generator=gen).numpy()
        rows[:, n:] = rows[:, : per_epoch * b - n]  # pad the last batch with valid rows
        rows += offset
        counts[row, : steps[k]] = b
        counts[row, per_epoch - 1 : steps[k] : per_epoch] = n - (per_epoch - 1) * b
        offset += n
    return _Schedule(
        order=order,
        steps=[steps[k] for k in order],
        index=torch.from_numpy(index),
        counts=torch.from_numpy(counts),
    )


class _Optimizer:
    """SGD (momentum, weight decay) or Adam on stacked parameters, as torch.optim does it.

    The arithmetic is torch.optim's single-tensor path (the one it takes on CPU), applied
    to the first `m` clients of each stacked tensor. All clients still training have
    taken the same number of steps, so Adam's bias corrections are shared scalars. It
    is the batched forward pass's `Updater`: a dense layer's weight gradient arrives as
    a product, written into a buffer kept across steps or, for plain SGD, folded into
    the update itself (W <- (1 - lr * wd) W - lr * a @ b, one pass over W).
    """

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        cfg: TrainConfig,
        trainable: Sequence[str],
        windows: dict[str, WindowedLinear],
    ) -> None:
        self.cfg = cfg
        self.windows = windows
        self.params = params
        self.anchors = {n: _copy(params[n]) for n in trainable} if cfg.proximal_mu else {}
        self.state: dict[str, list[torch.Tensor]] = {}
        if cfg.optimizer == "adam":
            self.state = {n: [_zeros(params[n]) for _ in range(2)] for n in trainable}
        elif cfg.momentum != 0:
            self.state = {n: [_zeros(params[n])] for n in trainable}
        self.is_plain_sgd = _is_plain_sgd(cfg)
        self.buffers: dict[str, torch.Tensor] = {}
        self.step_num, self.m = 0, 0

    def begin(self, step_num: int, m: int) -> None:
        """Start step `step_num` (0-based) of the first `m` clients."""
        self.step_num, self.m = step_num, m
        for window in self.windows.values():
            window.begin(step_num, m)

    def window(self, name: str) -> WindowedLinear | None:
        """Return the window that writes weight `name`, or None."""
        return self.windows.get(name)

    @torch.no_grad()
    def update_product(self, name: str, a: torch.Tensor, b: torch.Tensor) -> None:
        """Apply the gradient a @ b to parameter `name`."""
        param = self.params[name][: self.m]
        if self.is_plain_sgd:
            lr, wd = self.cfg.lr, self.cfg.weight_decay
            param.baddbmm_(a, b, beta=1 - lr * wd, alpha=-lr)
            return
        if name not in self.buffers:
            self.buffers[name] = _zeros(self.params[name])
        self.update(name, torch.bmm(a, b, out=self.buffers[name][: self.m]))

    @torch.no_grad()
    def update(self, name: str, grad: torch.Tensor) -> None:
        """Apply `grad` (which this call may overwrite) to parameter `name`."""
        cfg, m = self.cfg, self.m
        param = self.params[name][:m]
        if cfg.proximal_mu:
            grad.add_(param - self.anchors[name][:m], alpha=cfg.proximal_mu)
        if cfg.weight_decay != 0:
            grad = grad.add(param, alpha=cfg.weight_decay)
        if cfg.optimizer == "adam":
            self._adam(param, grad, [s[:m] for s in self.state[name]])
            return
        if cfg.momentum != 0:
            buf = self.state[name][0][:m]
            if self.step_num == 0:
                buf.copy_(grad)
            else:
                buf.mul_(cfg.momentum).add_(grad, alpha=1)
            grad = buf
        param.add_(grad, alpha=-cfg.lr)

    def _adam(self, param: torch.Tensor, grad: torch.Tensor, state: list[torch.Tensor]) -> None:
        (beta1, beta2), exp_avg, exp_avg_sq = _ADAM_BETAS, state[0], state[1]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        count = float(self.step_num + 1)
        step_size = self.cfg.lr / (1 - beta1**count)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**count) ** 0.5).add_(_ADAM_EPS)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def _is_plain_sgd(cfg: TrainConfig) -> bool:
    """Return whether `cfg` trains with SGD without momentum or proximal term."""
    return cfg.optimizer == "sgd" and cfg.momentum == 0 and not cfg.proximal_mu


def _shared_start(name: str, start: Sequence[Arrays], order: Sequence[int]) -> NDArray | None:
    """Return array `name` if every client starts from that one array, else None."""
    first = start[order[0]][name]
    return first if all(start[k][name] is first for k in order) else None


def _stack(
    names: Sequence[str], start: Sequence[Arrays], order: Sequence[int], device: torch.device
) -> dict[str, torch.Tensor]:
    """Return each array of every client, stacked along a new leading axis in `order`."""
    out: dict[str, torch.Tensor] = {}
    for name in names:
        first = start[order[0]][name]
        stacked = _empty((len(order), *first.shape), first.dtype)
        shared = _shared_start(name, start, order)
        if shared is not None:  # one global model for all (usual)
            stacked[...] = shared
        else:
            for row, k in enumerate(order):
                stacked[row] = start[k][name]
        out[name] = torch.from_numpy(stacked).to(device)
    return out


def release_buffers() -> None:
    """Drop the free buffers kept for later cohorts (at most 256 MiB; see `_buffers`)."""
    _buffers.release()


def _empty(shape: tuple[int, ...], dtype: np.dtype[Any]) -> NDArray:
    """Return an uninitialised array whose data starts on a 64-byte boundary.

    The stacked tensors are allocated by numpy: its allocator asks for huge pages for
    large arrays and its broadcasting copy is fast, where a fresh torch tensor of tens
    of MB spends longer in page faults than a training step takes. Large ones are reused
    from earlier chunks once nothing views them (`_buffers`).
    """
    return _buffers.empty(shape, dtype)


def _concat(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Return the tensors concatenated along their first axis, on `device` (see `_empty`)."""
    first = tensors[0]
    if device.type != "cpu" or any(t.dtype != first.dtype for t in tensors):
        return torch.cat(tensors).to(device)
    shape = (sum(len(t) for t in tensors), *first.shape[1:])
    out = torch.from_numpy(_empty(shape, torch.empty(0, dtype=first.dtype).numpy().dtype))
    return torch.cat(tensors, out=out)


def _rows(data: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Return data[index] for a 2-D index (index_select: a few times faster than indexing)."""
    return torch.index_select(data, 0, index.flatten()).view(*index.shape, *data.shape[1:])


def _zeros(like: torch.Tensor) -> torch.Tensor:
    """Return zeros shaped like `like` (see `_empty`)."""
    if like.device.type != "cpu":
        return torch.zeros_like(like)
    out = _empty(tuple(like.shape), like.numpy().dtype)
    out.fill(0)
    return torch.from_numpy(out)


def _copy(tensor: torch.Tensor) -> torch.Tensor:
    """Return a copy of `tensor` (see `_empty`)."""
    if tensor.device.type != "cpu":
        return tensor.clone()
    source = tensor.numpy()
    out = _empty(source.shape, source.dtype)
    out[...] = source
    return torch.from_numpy(out)


def _check(
    plan: _Plan, start: Sequence[Arrays], data: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> None:
    spec = start[0].spec()
    if list(start[0]) != list(plan.names):
        raise VectorizeError("arrays do not name the model's parameters in state-dict order")
    if any(a.spec() != spec for a in start[1:]):
        raise VectorizeError("clients start from arrays of different names, shapes or dtypes")
    shapes = {tuple(x.shape[1:]) for x, _ in data}
    if len(shapes) > 1:
        raise VectorizeError(f"clients hold examples of different shapes {sorted(shapes)}")
    if any(len(x) != len(y) for x, y in data):
        raise VectorizeError("a client holds different numbers of inputs and labels")


class _DropoutMasks:
    """Each client's dropout masks, drawn as `train` draws them from its seeded global RNG."""

    def __init__(self, seeds: Sequence[int], batch_size: int, device: torch.device) -> None:
        self.gens = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.batch_size = batch_size
        self.device = device
        self.counts: list[int] = []

    def __call__(self, p: float, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Return this step's mask (clients, batch, *shape) for the next dropout call."""
        mask = torch.zeros(len(self.counts), self.batch_size, *shape, dtype=dtype)
        if p == 0:
            mask.fill_(1)  # torch returns the input without drawing
        elif p < 1:  # p == 1 multiplies by zero without drawing
            for row, count in enumerate(self.counts):
                # at::dropout on CPU: empty_like(input).bernoulli_(1 - p).div_(1 - p)
                noise = torch.empty((count, *shape), dtype=dtype)
                noise.bernoulli_(1 - p, generator=self.gens[row])
                mask[row, :count] = noise.div_(1 - p)
        return mask.to(self.device)


def train_cohort(
    model: nn.Module,
    start: Sequence[Arrays],
    data: Sequence[tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    seeds: Sequence[int],
    epochs: Sequence[int] | None = None,
) -> list[tuple[Arrays, dict[str, float]]]:
    """Train one copy of `model` per client, all at once, as `train` would train each.

    Args:
        model: The architecture (its own weights are not used or changed).
        start: Each client's starting arrays (the model's state dict, in order).
        data: Each client's (inputs, integer labels).
        cfg: Hyper-parameters shared by all these clients.
        seeds: Each client's seed, as `train` takes it.
        epochs: Each client's local epochs (clients that do less work, such as
            stragglers, leave the stack early); `cfg.epochs` for all if None.

    Returns:
        For each client in input order: its trained arrays and `train`'s metrics (mean
        loss, accuracy and number of steps).

    Raises:
        VectorizeError: if the model cannot be vectorized (see `vectorize_reason`), or
            the clients' arrays or example shapes differ.
    """
    epochs = [cfg.epochs] * len(data) if epochs is None else list(epochs)
    if not len(start) == len(data) == len(seeds) == len(epochs):
        raise VectorizeError(
            f"got {len(start)} starting arrays, {len(data)} datasets, {len(seeds)} seeds "
            f"and {len(epochs)} epoch counts"
        )
    plan = _plan(model)
    if isinstance(plan, str):
        raise VectorizeError(f"cannot vectorize: {plan}")
    if not data:
        return []
    _check(plan, start, data)
    if not any(len(x) for x, _ in data):
        return [(arrays, {"loss": 0.0, "accuracy": 0.0, "num_steps": 0.0}) for arrays in start]
    device = next(iter(model.parameters()), torch.empty(0)).device
    sizes = [len(x) for x, _ in data]
    sched = _schedule(sizes, seeds, epochs, cfg.batch_size)
    x_all = _concat([data[k][0] for k in sched.order], device)
    y_all = _concat([data[k][1] for k in sched.order], device)
    dense = _dense(plan, x_all)
    windowed = _windowed_weights(plan, dense, cfg, sched)
    params = _stack([n for n in plan.names if n not in windowed], start, sched.order, device)
    windows = {n: _window(n, start, sched, x_all, cfg, known) for n, known in windowed.items()}
    params |= {n: w.weight for n, w in windows.items()}
    masks = _DropoutMasks([seeds[k] for k in sched.order], cfg.batch_size, device)
    run = _run(plan, params, x_all, y_all, sched, cfg, masks, dense, windows)
    total_loss, correct = (t.cpu() for t in run)
    for window in windows.values():
        window.finish()
    out: list[tuple[Arrays, dict[str, float]]] = [(Arrays(), {})] * len(data)
    cpu = {n: t.cpu() for n, t in params.items()}
    for row, k in enumerate(sched.order):
        arrays = Arrays({n: cpu[n][row].numpy() for n in plan.names})
        seen = epochs[k] * sizes[k]
        metrics = {"loss": 0.0, "accuracy": 0.0, "num_steps": 0.0}
        if seen:
            metrics = {
                "loss": float(total_loss[row]) / seen,
                "accuracy": float(correct[row]) / seen,
                "num_steps": float(sched.steps[row]),
            }
        out[k] = (arrays, metrics)
    return out


def _dense(plan: _Plan, x_all: torch.Tensor) -> DenseChain | None:
    """Return the model's dense chain if it is stepped by hand, else None.

    That is when nothing but dense layers trains, and examples are vectors unless the
    chain flattens them.
    """
    dense = plan.dense
    if dense is None or any(n not in plan.forward.linear_params for n in plan.trainable):
        return None
    return dense if dense.flattens or x_all.dim() == 2 else None


def _windowed_weights(
    plan: _Plan, dense: DenseChain | None, cfg: TrainConfig, sched: _Schedule
) -> dict[str, bool]:
    """Return the dense weights written once per window (`WindowedLinear`).

    Under plain SGD (weight decay allowed), when windows of at least two steps fit: a dense
    chain's first weight, whose inputs (the examples) are known for the whole window
    (True), and any other dense weight of at least `LARGE` entries (False).
    """
    if not _is_plain_sgd(cfg):
        return {}
    if cfg.lr * cfg.weight_decay >= 0.5 or min(window_steps(cfg.batch_size), sched.steps[0]) < 2:
        return {}  # a decay that halves the weight each step; windows of one step
    trainable = set(plan.trainable)
    first = dense.layers[0].weight if dense is not None else None
    out = {first: True} if first is not None and first in trainable else {}
    for name, size in plan.forward.linear_weight_sizes.items():
        if name in trainable and name != first and size >= LARGE:
            out[name] = False
    return out


def _window(
    name: str,
    start: Sequence[Arrays],
    sched: _Schedule,
    x_all: torch.Tensor,
    cfg: TrainConfig,
    known_inputs: bool,
) -> WindowedLinear:
    """Return the window of weight `name`, starting from each client's arrays."""
    device, shared = x_all.device, _shared_start(name, start, sched.order)
    if shared is not None:  # one global model for all: the stack is written at a window's end
        weight = torch.from_numpy(_empty((len(sched.order), *shared.shape), shared.dtype))
        weight, first = weight.to(device), torch.from_numpy(shared).to(device)
    else:
        weight, first = _stack([name], start, sched.order, device)[name], None
    inputs = (x_all.view(len(x_all), -1), sched.index.to(device)) if known_inputs else None
    return WindowedLinear(
        weight,
        first,
        sched.steps,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        window=window_steps(cfg.batch_size),
        inputs=inputs,
    )


def _run(
    plan: _Plan,
    params: dict[str, torch.Tensor],
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    sched: _Schedule,
    cfg: TrainConfig,
    masks: _DropoutMasks,
    dense: DenseChain | None,
    windows: dict[str, WindowedLinear],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run every local step, updating `params` in place; return summed losses and hits.

    A chain of dense layers (`dense`) is stepped by hand; other models run the batched
    forward pass under autograd. Weights in `windows` are written by their windows.
    """
    optimizer = _Optimizer(params, cfg, plan.trainable, windows)
    # A windowed first layer gathers its window's examples itself.
    known = any(w.inputs is not None for w in windows.values())
    # Dense layers update their own parameters in the backward pass; the rest are
    # leaves whose gradients autograd returns.
    leaves = [n for n in plan.trainable if n not in plan.forward.linear_params]
    token = torch.zeros((), requires_grad=True)  # ties dense layers into the graph
    trainable = frozenset(plan.trainable)
    device, b = x_all.device, cfg.batch_size
    index, counts_all = sched.index.to(device), sched.counts.to(device)
    positions = torch.arange(b, device=device)
    # Clients still training at each step (a prefix: they are sorted by steps), and
    # whether all their batches are full (no masking needed).
    active = [sum(1 for s in sched.steps if s > step) for step in range(max(sched.steps))]
    full = [bool((sched.counts[:m, step] == b).all()) for step, m in enumerate(active)]
    total_loss = torch.zeros(len(sched.order), dtype=torch.float64, device=device)
    correct = torch.zeros(len(sched.order), dtype=torch.int64, device=device)
    for step, m in enumerate(active):
        optimizer.begin(step, m)
        masks.counts = sched.counts[:m, step].tolist()
        idx = index[:m, step]
        xb = None if known else _rows(x_all, idx)
        yb = _rows(y_all, idx)
        counts: torch.Tensor | int = b
        valid = None
        weights: torch.Tensor | float = 1.0 / b  # of each example in its client's mean loss
        if not full[step]:
            counts = counts_all[:m, step]
            valid = positions < counts[:, None]
            if dense is not None:  # 0 on a short batch's padding
                weights = (valid / counts[:, None]).unsqueeze(-1)
        if dense is not None:
            per_example, logits = dense_step(dense, params, trainable, xb, yb, weights, optimizer)
        else:
            assert xb is not None  # only a dense chain's first layer gathers its own
            live = {n: params[n][:m] for n in plan.names}
            for n in leaves:
                live[n] = live[n].detach().requires_grad_()
            logits = plan.forward(live, xb, optimizer, token, masks)
            per_example = F.cross_entropy(
                logits.flatten(0, 1), yb.flatten(), reduction="none"
            ).view(m, b)
        with torch.no_grad():
            hits = logits.argmax(-1) == yb
            if valid is not None:
                hits &= valid
        loss = per_example.mean(1) if valid is None else (per_example * valid).sum(1) / counts
        if dense is None:
            grads = torch.autograd.grad(
                loss.sum(), [token, *(live[n] for n in leaves)], allow_unused=True
            )
            for n, grad in zip(leaves, grads[1:], strict=True):
                if grad is not None:
                    optimizer.update(n, grad)
        with torch.no_grad():
            total_loss[:m] += loss * counts
            correct[:m] += hits.sum(1)
    return total_loss, correct
