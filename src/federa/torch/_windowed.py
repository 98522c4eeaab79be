"""Dense layers under plain SGD whose weights are written once per window of steps.

Plain SGD moves a dense layer's weight by -lr G_s^T X_s at step s, where X_s holds the
layer's inputs at that step and G_s the gradient at its output; weight decay wd first
scales the weight by c = 1 - lr wd. Over a window of steps that starts from W, step j's
weight is therefore

    W_j = c^j (W - lr sum_{s<j} c^-(s+1) G_s^T X_s),

and what a step needs of W_j follows without forming it:

    X_j W_j^T = c^j (X_j W^T - lr sum_{s<j} (X_j X_s^T) c^-(s+1) G_s)     (forward)
    G_j W_j   = c^j (G_j W   - lr sum_{s<j} (G_j c^-(s+1) G_s^T) X_s)     (input's gradient)

The window keeps its inputs X_s and output gradients G_s (a few rows each) and writes
W once, at its end: W <- c^n (W - lr sum_s c^-(s+1) G_s^T X_s) for a client that took n
steps in it. A step then reads W once or twice and never writes it, where the step-by-
step update read it three times and wrote it once: for a layer whose weights of all
clients do not stay in cache (the CNN's 1.6M-weight dense layer, a 2NN's first layer in
a cohort) those passes over memory were most of its time. While every client still holds
the round's global model (the first window), W is one matrix for all, read once for the
whole cohort. When a layer's inputs are the raw examples (a network's first layer), the
whole window's inputs are known at its start: X W^T for all of them is one product with
L b rows instead of L with b, and their Gram matrix is one more.

The arithmetic is the step-by-step update's up to the order of float32 sums, within the
equivalence tests' 1e-5 of the one-at-a-time loop.
"""

from __future__ import annotations

import torch

from federa.torch import _buffers

WINDOW_ROWS = 64  # examples per window: L = WINDOW_ROWS // batch steps
LARGE = 1 << 16  # weights per client from which a layer is windowed (256 KiB in float32)


def _empty(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Return an uninitialised tensor with `like`'s dtype and device (see `_buffers`)."""
    return _buffers.tensor(shape, like.dtype, like.device)


def _zeros(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Return zeros with `like`'s dtype and device (see `_buffers`)."""
    return _empty(shape, like).zero_()


def window_steps(batch_size: int) -> int:
    """Return the steps per window for `batch_size` (below 2, windows do not pay)."""
    return WINDOW_ROWS // batch_size


class WindowedLinear:
    """One dense layer's weight of every client, written once per window of steps.

    Each step calls `begin`, then `forward`, then (in the backward pass) `input_grad` if
    the layer's input needs a gradient, then `record`, which ends the window at its last
    step.

    Args:
        weight: Every client's weight, (clients, out, in), trained in place; its
            contents are not read if `shared` is given, and between window ends it
            holds the current window's starting weights.
        shared: The starting weight of all clients, (out, in), when they share it
            (the usual case: the round's global model), or None.
        steps: Each client's number of steps, most first (clients in `weight`'s order).
        lr: Learning rate.
        weight_decay: Weight decay (0 for none), below 0.5 / lr (so that the factors
            c^-(s+1) stay far from float32's limits).
        window: Steps per window (>= 1).
        inputs: For a first layer, every client's examples concatenated and flattened
            (examples, in) and each client's minibatches as rows of them (clients, steps,
            batch); `forward` then takes no inputs.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        shared: torch.Tensor | None,
        steps: list[int],
        *,
        lr: float,
        weight_decay: float,
        window: int,
        inputs: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.weight, self.shared = weight, shared
        self.steps, self.inputs = steps, inputs
        self.lr, self.decay = lr, 1 - lr * weight_decay
        self.window = window
        self.step = self.m = 0  # the current step and its number of clients
        self.start = self.length = 0  # the current window's first step and length
        self.m0 = 0  # clients active at the window's start
        self.rows = 0  # input rows a client gives per step
        self.x = self.grads = self.projected = self.gram = torch.empty(0)

    def begin(self, step: int, m: int) -> None:
        """Start step `step` (0-based) of the first `m` clients."""
        self.step, self.m = step, m
        if step == self.start + self.length:
            self.start, self.m0, self.length = step, m, min(self.window, self.steps[0] - step)
            self.rows = 0
            if self.inputs is not None:
                self._open_known()

    def forward(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """Return x @ W^T (m, rows, out) for this step's inputs x (m, rows, in).

        x is None for a first layer (`inputs` given). The result may be a view of the
        window's state that the caller may modify in place.
        """
        m, j = self.m, self.step - self.start
        if x is None:
            r = self.rows
            out = self.projected[:m, j * r : (j + 1) * r]
        else:
            r = self._store(x)
            out = self._times(x, transpose=True)
        if j:
            past = slice(0, j * r)
            if x is None:
                here = self.gram[:m, j * r : (j + 1) * r, past]
            else:
                here = torch.bmm(x, self.x[:m, past].transpose(1, 2))
            out = out - self.lr * torch.bmm(here, self.grads[:m, past])
            if self.decay != 1:
                out.mul_(self.decay**j)
        return out

    def input_grad(self, grad: torch.Tensor) -> torch.Tensor:
        """Return grad @ W (m, rows, in): the gradient at the layer's input."""
        j, past = self.step - self.start, slice(0, (self.step - self.start) * self.rows)
        out = self._times(grad, transpose=False)
        if j:
            m = self.m
            here = torch.bmm(grad, self.grads[:m, past].transpose(1, 2))
            out.sub_(torch.bmm(here, self.x[:m, past]), alpha=self.lr)
            if self.decay != 1:
                out.mul_(self.decay**j)
        return out

    def record(self, grad: torch.Tensor) -> None:
        """Take this step's gradient at the layer's output (m, rows, out)."""
        j, r = self.step - self.start, self.rows
        target = self.grads[: self.m, j * r : (j + 1) * r]
        if self.decay == 1:
            target.copy_(grad)
        else:
            torch.mul(grad, self.decay ** -(j + 1), out=target)
        if j == self.length - 1:
            self._close()

    def finish(self) -> None:
        """Leave the trained weights in `weight` (all windows end with the last step)."""
        if self.shared is not None:  # no step was taken: every client keeps the start
            self.weight[...] = self.shared
            self.shared = None

    def _times(
        self, t: torch.Tensor, *, transpose: bool, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return t @ W^T (transpose) or t @ W with the window's starting weights."""
        if self.shared is not None:  # one product for all clients
            w = self.shared.t() if transpose else self.shared
            flat = None if out is None else out.view(-1, w.shape[1])
            return torch.mm(t.reshape(-1, t.shape[2]), w, out=flat).view(*t.shape[:2], w.shape[1])
        w = self.weight[: self.m]
        return torch.bmm(t, w.transpose(1, 2) if transpose else w, out=out)

    def _store(self, x: torch.Tensor) -> int:
        """Keep this step's inputs for the window; return the rows per client."""
        m, j, r = self.m, self.step - self.start, x.shape[1]
        if j == 0:
            self.rows = r
            # zeros: rows of clients that stop within the window meet zero gradients
            self.x = _zeros((m, self.length * r, x.shape[2]), x)
            self.grads = _zeros((m, self.length * r, self.weight.shape[1]), x)
        self.x[:m, j * r : (j + 1) * r] = x
        return r

    def _open_known(self) -> None:
        """Take the whole window's inputs now: one product for all, and their Gram matrix."""
        assert self.inputs is not None
        x_all, index = self.inputs
        m, start, length = self.m0, self.start, self.length
        self.rows = index.shape[2]
        rows = index[:m, start : start + length].reshape(-1)
        x = _empty((len(rows), x_all.shape[1]), x_all)
        self.x = torch.index_select(x_all, 0, rows, out=x).view(m, -1, x_all.shape[1])
        rows_out = (m, self.x.shape[1], self.weight.shape[1])
        self.projected = self._times(self.x, transpose=True, out=_empty(rows_out, x_all))
        if length > 1:
            gram = _empty((m, self.x.shape[1], self.x.shape[1]), x_all)
            self.gram = torch.bmm(self.x, self.x.transpose(1, 2), out=gram)
        self.grads = _zeros(rows_out, x_all)

    def _close(self) -> None:
        """Write the window's updates into the weights: W <- c^n (W - lr G^T X)."""
        m, grads_t = self.m0, self.grads.transpose(1, 2)
        if self.shared is not None:
            self.weight[m:] = self.shared  # clients without steps keep the start
            torch.baddbmm(self.shared, grads_t, self.x, alpha=-self.lr, out=self.weight[:m])
            self.shared = None
        else:
            self.weight[:m].baddbmm_(grads_t, self.x, alpha=-self.lr)
        if self.decay != 1:
            taken = torch.tensor([min(s - self.start, self.length) for s in self.steps[:m]])
            scale = torch.pow(torch.tensor(self.decay, dtype=torch.float64), taken)
            self.weight[:m].mul_(scale.to(self.weight.device, self.weight.dtype).view(-1, 1, 1))
