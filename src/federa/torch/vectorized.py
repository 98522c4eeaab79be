"""Train a whole cohort of clients at once: one batched step moves every client's model.

The standard loop (`federa.torch.train.train`) trains one client after the other. A
simulated round of small models spends most of its time in per-step overhead, so this
trainer stacks the cohort's parameters along a leading client axis and runs each local
step of every client in one set of batched operations (`torch.func.functional_call`
under `torch.func.vmap`; linear layers become batched matrix products, convolutions
grouped convolutions). What it computes is the standard loop's result for every client:

* the same minibatches: each client draws its epoch permutations from its own
  generator seeded as `train` seeds it, keeps the last, smaller batch, and clients
  with fewer examples stop early (their rows are masked, then dropped from the stack);
* the same optimizer arithmetic: SGD (momentum, weight decay) and Adam are written
  out functionally with torch.optim's single-tensor formulas, plus FedProx's proximal
  term (Li et al. 2020) added to the gradient before the optimizer sees it;
* the same dropout masks: `nn.Dropout` layers are fed masks drawn, client by client,
  with exactly the calls and generator state `train` uses, so they match bit for bit.

The results differ from the one-at-a-time loop only by floating-point rounding of the
batched kernels (about 1e-7 per step). Models that mix examples within a batch
(batch normalisation), keep buffers, or draw random numbers other than through
`nn.Dropout` are refused with `VectorizeError`; callers then train per client.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from federa.core.arrays import Arrays
from federa.errors import ConfigError
from federa.torch.train import TrainConfig

__all__ = ["VectorizeError", "train_cohort", "vectorize_reason"]

_MASK = "mask"  # buffer name of the mask fed to each replaced dropout layer


class VectorizeError(ConfigError):
    """The model or the data cannot be trained by the vectorized trainer."""


class _MaskedDropout(nn.Module):
    """nn.Dropout with its (already scaled) mask passed in as a buffer, one per client.

    While `probe` is a list, the layer passes its input through unchanged and appends
    (itself, input shape, input dtype) to it, so a probing forward pass finds the order
    and shapes of the dropout calls.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.register_buffer(_MASK, torch.empty(0), persistent=False)
        self.probe: list[tuple[_MaskedDropout, torch.Size, torch.dtype]] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return x times the mask (x itself while probing)."""
        if self.probe is not None:
            self.probe.append((self, x.shape, x.dtype))
            return x
        mask: torch.Tensor = getattr(self, _MASK)
        return x * mask


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to run one model functionally: its twin, parameter names and dropout layers."""

    twin: nn.Module
    names: tuple[str, ...]  # parameters in state-dict order
    trainable: tuple[str, ...]
    dropouts: tuple[tuple[str, float], ...]  # (module name, p) of each replaced nn.Dropout


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
        if isinstance(module, nn.modules.dropout._DropoutNd) and type(module) is not nn.Dropout:
            return f"{kind} uses {type(module).__name__} ({name}), only nn.Dropout is supported"
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        return f"{kind} keeps buffers ({', '.join(buffers[:3])})"
    names = tuple(model.state_dict(keep_vars=True))
    params = dict(model.named_parameters())
    if set(names) != set(params) or len(names) != len(params):
        return f"{kind} shares (ties) parameters between layers"
    twin = copy.deepcopy(model)
    dropouts: list[tuple[str, float]] = []
    for name, module in list(twin.named_modules()):
        if type(module) is nn.Dropout:
            parent_name, _, child = name.rpartition(".")
            parent = twin.get_submodule(parent_name)
            setattr(parent, child, _MaskedDropout(float(module.p)))
            dropouts.append((name, float(module.p)))
    twin.train()
    trainable = tuple(n for n in names if params[n].requires_grad)
    return _Plan(twin=twin, names=names, trainable=trainable, dropouts=tuple(dropouts))


def _probe_dropouts(
    plan: _Plan, params: Mapping[str, torch.Tensor], x: torch.Tensor
) -> list[tuple[str, float, tuple[int, ...], torch.dtype]]:
    """Return (layer name, p, one example's input shape, dtype) of each dropout call, in order.

    Raises:
        VectorizeError: if a dropout layer runs other than once per forward pass, or on
            inputs whose first axis is not the batch.
    """
    layers = {plan.twin.get_submodule(name): (name, p) for name, p in plan.dropouts}
    runs: list[list[tuple[_MaskedDropout, torch.Size, torch.dtype]]] = []
    with torch.no_grad():
        for size in (1, 2):
            calls: list[tuple[_MaskedDropout, torch.Size, torch.dtype]] = []
            for layer in layers:
                assert isinstance(layer, _MaskedDropout)
                layer.probe = calls
            try:
                functional_call(plan.twin, dict(params), (x[:1].expand(size, *x.shape[1:]),))
            finally:
                for layer in layers:
                    layer.probe = None  # type: ignore[assignment]  # layers are _MaskedDropout
            runs.append(calls)
    one, two = runs
    if (
        len(one) != len(layers)
        or len({id(c[0]) for c in one}) != len(layers)
        or any(
            a[0] is not b[0] or a[1][:1] != (1,) or b[1][:1] != (2,) or a[1][1:] != b[1][1:]
            for a, b in zip(one, two, strict=False)
        )
    ):
        raise VectorizeError(
            "each dropout layer must run exactly once per forward pass, on batch-first inputs"
        )
    return [(*layers[layer], tuple(shape[1:]), dtype) for layer, shape, dtype in one]


@dataclass(slots=True)
class _Schedule:
    """Every client's minibatches as rows of one index tensor over the concatenated data."""

    order: list[int]  # clients sorted by number of steps, most first
    steps: list[int]  # steps of each client in `order`
    index: torch.Tensor  # (clients, max steps, batch) into the concatenated data
    counts: torch.Tensor  # (clients, max steps) real examples in each batch


def _schedule(sizes: Sequence[int], seeds: Sequence[int], cfg: TrainConfig) -> _Schedule:
    """Draw each client's epoch permutations exactly as `train` does."""
    b = cfg.batch_size
    steps = [cfg.epochs * -(-n // b) for n in sizes]
    order = sorted(range(len(sizes)), key=lambda k: -steps[k])
    max_steps = max(steps, default=0)
    index = torch.zeros(len(sizes), max_steps, b, dtype=torch.int64)
    counts = torch.zeros(len(sizes), max_steps, dtype=torch.int64)
    offset = 0
    for row, k in enumerate(order):
        n = sizes[k]
        if n == 0:
            continue
        gen = torch.Generator().manual_seed(seeds[k])
        perms = torch.stack([torch.randperm(n, generator=gen) for _ in range(cfg.epochs)])
        per_epoch = -(-n // b)
        padded = torch.cat([perms, perms[:, : per_epoch * b - n]], dim=1)  # pad with valid rows
        index[row, : steps[k]] = padded.view(cfg.epochs * per_epoch, b) + offset
        last = torch.full((per_epoch,), b, dtype=torch.int64)
        last[-1] = n - (per_epoch - 1) * b
        counts[row, : steps[k]] = last.repeat(cfg.epochs)
        offset += n
    return _Schedule(order=order, steps=[steps[k] for k in order], index=index, counts=counts)


class _Optimizer:
    """SGD (momentum, weight decay) or Adam on stacked parameters, as torch.optim does it.

    The arithmetic is torch.optim's single-tensor path (the one it takes on CPU), applied
    to the first `m` clients of every stacked tensor; all clients still training have
    taken the same number of steps, so Adam's bias corrections are shared scalars.
    """

    def __init__(self, params: Mapping[str, torch.Tensor], cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.params = params
        self.state: dict[str, list[torch.Tensor]] = {}
        if cfg.optimizer == "adam":
            self.state = {n: [torch.zeros_like(p), torch.zeros_like(p)] for n, p in params.items()}
        elif cfg.momentum != 0:
            self.state = {n: [torch.zeros_like(p)] for n, p in params.items()}

    @torch.no_grad()
    def step(self, step: int, m: int, grads: Mapping[str, torch.Tensor]) -> None:
        """Apply step number `step` (0-based) to the first `m` clients."""
        cfg = self.cfg
        for name, grad in grads.items():
            param = self.params[name][:m]
            if cfg.weight_decay != 0:
                grad = grad.add(param, alpha=cfg.weight_decay)
            if cfg.optimizer == "adam":
                self._adam(step, param, grad, [s[:m] for s in self.state[name]])
                continue
            if cfg.momentum != 0:
                buf = self.state[name][0][:m]
                if step == 0:
                    buf.copy_(grad)
                else:
                    buf.mul_(cfg.momentum).add_(grad, alpha=1)
                grad = buf
            param.add_(grad, alpha=-cfg.lr)

    def _adam(
        self, step: int, param: torch.Tensor, grad: torch.Tensor, state: list[torch.Tensor]
    ) -> None:
        beta1, beta2, eps = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, as make_optimizer
        exp_avg, exp_avg_sq = state
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        count = float(step + 1)
        step_size = self.cfg.lr / (1 - beta1**count)
        denom = (exp_avg_sq.sqrt() / (1 - beta2**count) ** 0.5).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def _stack(
    names: Sequence[str], start: Sequence[Arrays], order: Sequence[int], device: torch.device
) -> dict[str, torch.Tensor]:
    """Return each array of every client, stacked along a new leading axis in `order`."""
    out: dict[str, torch.Tensor] = {}
    for name in names:
        first = start[order[0]][name]
        if all(start[k][name] is first for k in order):  # one global model for all (usual)
            base = torch.from_numpy(np.ascontiguousarray(first)).to(device)
            out[name] = base.expand(len(order), *base.shape).clone()
        else:
            out[name] = torch.stack([torch.from_numpy(np.asarray(start[k][name])) for k in order])
            out[name] = out[name].to(device)
    return out


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

    def __init__(
        self,
        calls: list[tuple[str, float, tuple[int, ...], torch.dtype]],
        seeds: Sequence[int],
        batch_size: int,
        device: torch.device,
    ) -> None:
        self.calls = calls
        self.gens = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.batch_size = batch_size
        self.device = device

    def draw(self, counts: list[int]) -> dict[str, torch.Tensor]:
        """Return one step's masks, (clients, batch, ...) per layer, zero on padded rows."""
        m = len(counts)
        out = {
            f"{name}.{_MASK}": torch.zeros(m, self.batch_size, *shape, dtype=dtype)
            for name, _, shape, dtype in self.calls
        }
        for row, count in enumerate(counts):
            gen = self.gens[row]
            for name, p, shape, dtype in self.calls:
                mask = out[f"{name}.{_MASK}"][row, :count]
                if p == 1:
                    continue  # torch multiplies by zero without drawing
                if p == 0:
                    mask.fill_(1)  # torch returns the input without drawing
                    continue
                # at::dropout on CPU: empty_like(input).bernoulli_(1 - p).div_(1 - p)
                noise = torch.empty((count, *shape), dtype=dtype).bernoulli_(1 - p, generator=gen)
                mask.copy_(noise.div_(1 - p))
        return {k: v.to(self.device) for k, v in out.items()}


def train_cohort(
    model: nn.Module,
    start: Sequence[Arrays],
    data: Sequence[tuple[torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
    seeds: Sequence[int],
) -> list[tuple[Arrays, dict[str, float]]]:
    """Train one copy of `model` per client, all at once, as `train` would train each.

    Args:
        model: The architecture (its own weights are not used or changed).
        start: Each client's starting arrays (the model's state dict, in order).
        data: Each client's (inputs, integer labels).
        cfg: Hyper-parameters shared by all these clients.
        seeds: Each client's seed, as `train` takes it.

    Returns:
        For each client in input order: its trained arrays and `train`'s metrics (mean
        loss, accuracy and number of steps).

    Raises:
        VectorizeError: if the model cannot be vectorized (see `vectorize_reason`), or
            the clients' arrays or example shapes differ.
    """
    if not len(start) == len(data) == len(seeds):
        raise VectorizeError(
            f"got {len(start)} starting arrays, {len(data)} datasets and {len(seeds)} seeds"
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
    sched = _schedule(sizes, seeds, cfg)
    params = _stack(plan.names, start, sched.order, device)
    x_all = torch.cat([data[k][0] for k in sched.order]).to(device)
    y_all = torch.cat([data[k][1] for k in sched.order]).to(device)
    masks = None
    if plan.dropouts and len(x_all):
        calls = _probe_dropouts(plan, {n: t[0] for n, t in params.items()}, x_all)
        masks = _DropoutMasks(calls, [seeds[k] for k in sched.order], cfg.batch_size, device)
    total_loss, correct = (t.cpu() for t in _run(plan, params, x_all, y_all, sched, cfg, masks))
    out: list[tuple[Arrays, dict[str, float]]] = [(Arrays(), {})] * len(data)
    cpu = {n: t.cpu() for n, t in params.items()}
    for row, k in enumerate(sched.order):
        arrays = Arrays({n: cpu[n][row].numpy() for n in plan.names})
        seen = cfg.epochs * sizes[k]
        metrics = {"loss": 0.0, "accuracy": 0.0, "num_steps": 0.0}
        if seen:
            metrics = {
                "loss": float(total_loss[row]) / seen,
                "accuracy": float(correct[row]) / seen,
                "num_steps": float(sched.steps[row]),
            }
        out[k] = (arrays, metrics)
    return out


def _run(
    plan: _Plan,
    params: dict[str, torch.Tensor],
    x_all: torch.Tensor,
    y_all: torch.Tensor,
    sched: _Schedule,
    cfg: TrainConfig,
    masks: _DropoutMasks | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run every local step, updating `params` in place; return summed losses and hits."""
    num = len(sched.order)
    trainable = plan.trainable
    anchors = {n: params[n].clone() for n in trainable} if cfg.proximal_mu > 0 else None
    optimizer = _Optimizer({n: params[n] for n in trainable}, cfg)
    twin = plan.twin

    def forward(p: dict[str, torch.Tensor], m: dict[str, torch.Tensor], x: torch.Tensor) -> Any:
        return functional_call(twin, (p, m), (x,))

    batched = vmap(forward, randomness="error")
    device, b = x_all.device, cfg.batch_size
    index, counts_all = sched.index.to(device), sched.counts.to(device)
    positions = torch.arange(b, device=device)
    # Clients still training at each step (a prefix, as they are sorted by steps), and
    # whether all their batches are full (no masking needed).
    active = [sum(1 for s in sched.steps if s > step) for step in range(max(sched.steps))]
    full = [bool((sched.counts[:m, step] == b).all()) for step, m in enumerate(active)]
    total_loss = torch.zeros(num, dtype=torch.float64, device=device)
    correct = torch.zeros(num, dtype=torch.int64, device=device)
    for step, m in enumerate(active):
        idx = index[:m, step]
        xb, yb = x_all[idx], y_all[idx]
        live = {n: params[n][:m] for n in plan.names}
        for n in trainable:
            live[n] = live[n].detach().requires_grad_()
        step_masks = masks.draw(sched.counts[:m, step].tolist()) if masks else {}
        logits = batched(live, step_masks, xb)
        per_example = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none")
        with torch.no_grad():
            hits = logits.argmax(-1) == yb
        if full[step]:
            loss = per_example.view(m, b).mean(1)
            counts: torch.Tensor | int = b
        else:
            counts = counts_all[:m, step]
            valid = positions < counts[:, None]
            loss = (per_example.view(m, b) * valid).sum(1) / counts
            hits &= valid
        grads = torch.autograd.grad(loss.sum(), [live[n] for n in trainable])
        named = dict(zip(trainable, grads, strict=True))
        if anchors is not None:
            with torch.no_grad():
                for n in trainable:
                    named[n].add_(live[n] - anchors[n][:m], alpha=cfg.proximal_mu)
        optimizer.step(step, m, named)
        with torch.no_grad():
            total_loss[:m] += loss * counts
            correct[:m] += hits.sum(1)
    return total_loss, correct
