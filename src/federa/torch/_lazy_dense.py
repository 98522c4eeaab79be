"""A dense chain's first layer under plain SGD, written once per window of steps.

Plain SGD moves the first layer's weight by -lr G_s^T X_s at step s, where X_s holds the
step's inputs (the raw examples: nothing below the layer trains) and G_s the gradient
at the layer's output; weight decay wd first scales the weight by c = 1 - lr wd. So
over a window of steps that starts from W, step j's weight and output are

    W_j = c^j (W - lr sum_{s<j} c^-(s+1) G_s^T X_s)
    X_j W_j^T = c^j (X_j W^T - lr sum_{s<j} (X_j X_s^T) c^-(s+1) G_s),

and the window needs X W^T for all of its inputs at once (one product with L b rows
instead of L products with b rows, and a single matrix product for the whole cohort
while every client still holds the global model), the Gram matrix of its inputs (L b
square) and the small G_s. The weight, the largest tensor of a multilayer perceptron
(156,800 of the 2NN's 199,210 weights), is then read once and written once per window
instead of read three times and written once per step: at ten examples a step those
passes over memory were most of a step. The arithmetic is the loop's up to the order of
float32 sums, within the equivalence tests' 1e-5.
"""

from __future__ import annotations

import torch

WINDOW_ROWS = 64  # examples per window: L = WINDOW_ROWS // batch steps


def window_steps(batch_size: int) -> int:
    """Return the steps per window for `batch_size` (below 2, windows do not pay)."""
    return WINDOW_ROWS // batch_size


class LazyFirstLayer:
    """The first layer's weight of every client, updated once per window of steps.

    Args:
        weight: Every client's starting weight, (clients, out, in), trained in place;
            its contents are not read if `shared` is given.
        shared: The starting weight of all clients, (out, in), when they share it
            (the usual case: the round's global model), or None.
        x_all: Every client's examples, concatenated, flattened to (examples, in).
        index: Each client's minibatches as rows of `x_all`, (clients, steps, batch),
            clients sorted by their number of steps, most first.
        steps: Each client's number of steps, in the order of `index`.
        lr: Learning rate.
        weight_decay: Weight decay (0 for none), below 0.5 / lr (the factors c^-(s+1)
            stay far from float32's limits).
        window: Steps per window (>= 1).
    """

    def __init__(
        self,
        weight: torch.Tensor,
        shared: torch.Tensor | None,
        x_all: torch.Tensor,
        index: torch.Tensor,
        steps: list[int],
        *,
        lr: float,
        weight_decay: float,
        window: int,
    ) -> None:
        self.weight, self.shared = weight, shared
        self.x_all, self.index, self.steps = x_all, index, steps
        self.lr, self.decay = lr, 1 - lr * weight_decay
        self.window = window
        self.start = 0  # first step of the current window
        self.length = 0  # its number of steps
        self.m0 = 0  # clients active at its start
        self.x = self.projected = self.gram = self.grads = torch.empty(0)

    def forward(self, step: int, m: int) -> torch.Tensor:
        """Return x @ W^T (m, batch, out) at `step` for the first `m` clients."""
        if step == self.start + self.length:
            self._open(step, m)
        j, b = step - self.start, self.index.shape[2]
        out = self.projected[:m, j * b : (j + 1) * b]
        if j:
            correction = torch.bmm(
                self.gram[:m, j * b : (j + 1) * b, : j * b], self.grads[:m, : j * b]
            )
            out = out - self.lr * correction
        if self.decay != 1 and j:
            out = out * self.decay**j
        return out

    def record(self, step: int, m: int, grad: torch.Tensor) -> None:
        """Take the gradient (m, batch, out) at the layer's output of `step`'s clients."""
        j, b = step - self.start, self.index.shape[2]
        target = self.grads[:m, j * b : (j + 1) * b]
        if self.decay == 1:
            target.copy_(grad)
        else:
            torch.mul(grad, self.decay ** -(j + 1), out=target)
        if j == self.length - 1:
            self._close()

    def result(self) -> torch.Tensor:
        """Return the trained weights, (clients, out, in)."""
        if self.shared is not None:  # no window closed: nobody trained
            self.weight[...] = self.shared
            self.shared = None
        return self.weight

    def _open(self, step: int, m: int) -> None:
        self.start, self.m0 = step, m
        self.length = min(self.window, self.steps[0] - step)
        rows = self.index[:m, step : step + self.length].reshape(-1)
        x = torch.index_select(self.x_all, 0, rows).view(m, -1, self.x_all.shape[1])
        if self.shared is not None:  # one product for all clients
            projected = torch.mm(x.view(-1, x.shape[2]), self.shared.t()).view(m, x.shape[1], -1)
        else:
            projected = torch.bmm(x, self.weight[:m].transpose(1, 2))
        self.x, self.projected = x, projected
        self.gram = torch.bmm(x, x.transpose(1, 2)) if self.length > 1 else self.gram
        self.grads = torch.zeros_like(projected)

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
