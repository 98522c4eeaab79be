"""Adaptive server optimizers: FedAdagrad, FedYogi and FedAdam.

Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar, McMahan. "Adaptive Federated
Optimization." ICLR 2021 (arXiv:2003.00295), Algorithm 2. The server treats the mean
client change Delta_t = sum_k p_k (x_k - x_t), p_k = n_k / n, as a pseudo-gradient:

    m_t = beta_1 m_{t-1} + (1 - beta_1) Delta_t
    v_t = v_{t-1} + Delta_t^2                                        (FedAdagrad)
    v_t = v_{t-1} - (1 - beta_2) Delta_t^2 sign(v_{t-1} - Delta_t^2)  (FedYogi)
    v_t = beta_2 v_{t-1} + (1 - beta_2) Delta_t^2                     (FedAdam)
    x_{t+1} = x_t + eta m_t / (sqrt(v_t) + tau)

As in the paper, m starts at 0, v at tau^2 (its "v_{-1} >= tau^2"; Flower starts v at 0),
and there is no bias correction. The paper averages the cohort uniformly; federa weights
by `num_examples`, as FedAvg does. Only floating arrays are optimized: integer arrays
(BatchNorm's `num_batches_tracked`) take FedAvg's weighted mean. Results whose arrays
hold NaN or Inf are ignored and counted in the metric `num_nonfinite_results`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from federa.core.arrays import Arrays, NDArray
from federa.core.messages import Failure, Metrics, TrainResult
from federa.errors import AggregationError, ConfigError
from federa.strategy.aggregate import (
    RunningMetrics,
    RunningWeightedMean,
    weighted_mean,
    weighted_metrics,
)
from federa.strategy.base import RoundContext, TrainAccumulator
from federa.strategy.fedavg import FedAvg

Results = Sequence[tuple[int, TrainResult]]


def select_results(arrays: Arrays, results: Results) -> tuple[list[tuple[int, TrainResult]], int]:
    """Return the results to aggregate and how many were dropped for NaN or Inf arrays.

    Results with no examples are skipped, as FedAvg does.

    Raises:
        AggregationError: A client returned arrays whose names, dtypes or shapes differ
            from the global arrays it was sent.
    """
    usable: list[tuple[int, TrainResult]] = []
    num_nonfinite = 0
    for cid, result in results:
        if result.num_examples <= 0:
            continue
        check_result_spec(arrays, cid, result)
        if result.arrays.is_finite():
            usable.append((cid, result))
        else:
            num_nonfinite += 1
    return usable, num_nonfinite


def check_result_spec(arrays: Arrays, client_id: int, result: TrainResult) -> None:
    """Raise AggregationError unless `result` holds arrays shaped like the global `arrays`."""
    if not result.arrays.same_spec(arrays):
        raise AggregationError(
            f"client {client_id} returned arrays {result.arrays.spec()} but the global arrays "
            f"are {arrays.spec()}; a client must return the arrays it was sent, trained"
        )


def round_metrics(usable: Results, num_nonfinite: int) -> dict[str, float]:
    """Return the example-weighted training metrics, plus the count of dropped results."""
    metrics = weighted_metrics([(r.num_examples, r.metrics) for _, r in usable])
    if num_nonfinite:
        metrics["num_nonfinite_results"] = float(num_nonfinite)
    return metrics


def assemble(arrays: Arrays, usable: Results, floats: Mapping[str, NDArray]) -> Arrays:
    """Cast `floats` back to each array's dtype; other arrays take FedAvg's weighted mean."""
    others = [name for name in arrays if name not in floats]
    mean = Arrays()
    if others:
        mean = weighted_mean(
            [Arrays((n, r.arrays[n]) for n in others) for _, r in usable],
            [r.num_examples for _, r in usable],
        )
    return Arrays(
        (name, floats[name].astype(ref.dtype) if name in floats else mean[name])
        for name, ref in arrays.items()
    )


ServerStep = Callable[[Arrays, dict[str, NDArray]], dict[str, NDArray]]
"""(global arrays x, pseudo-gradient Delta per floating array) -> new float64 values of x."""


class ChangeAccumulator:
    """Stream the mean client change Delta = sum_k p_k (x_k - x) and apply a server step.

    The streaming form of `select_results`, the pseudo-gradient, `round_metrics` and
    `assemble`: floating arrays accumulate n_k (x_k - x) in float64 and `finish` hands
    Delta to `step`; other arrays take FedAvg's weighted mean. Results with no examples
    are skipped; results with NaN or Inf are counted in `num_nonfinite_results`.

    Args:
        arrays: The global arrays x the round started from.
        accept_failures: Whether a round with failures is aggregated at all.
        step: The server update, called once by `finish` when some result is usable.
    """

    def __init__(self, arrays: Arrays, *, accept_failures: bool, step: ServerStep) -> None:
        floats = [name for name, a in arrays.items() if a.dtype.kind == "f"]
        others = [name for name in arrays if name not in floats]
        self._arrays = arrays
        self._accept_failures = accept_failures
        self._step = step
        self._changes = RunningWeightedMean(reference=arrays, names=floats)
        self._others = RunningWeightedMean(names=others) if others else None
        self._metrics = RunningMetrics()
        self._num_nonfinite = 0

    def add(self, client_id: int, result: TrainResult) -> None:
        """Add one client's change (see `select_results` for what is skipped)."""
        if result.num_examples <= 0:
            return
        check_result_spec(self._arrays, client_id, result)
        if not result.arrays.is_finite():
            self._num_nonfinite += 1
            return
        self._changes.add(result.arrays, result.num_examples)
        if self._others is not None:
            self._others.add(result.arrays, result.num_examples)
        self._metrics.add(result.num_examples, result.metrics)

    def finish(self, failures: Sequence[Failure]) -> tuple[Arrays | None, Metrics]:
        """Apply the server step to Delta and return the new arrays and the metrics."""
        if failures and not self._accept_failures:
            return None, {}
        metrics = self._metrics.result()
        if self._num_nonfinite:
            metrics["num_nonfinite_results"] = float(self._num_nonfinite)
        if self._changes.count == 0:
            return None, metrics
        new_x = self._step(self._arrays, self._changes.offsets())
        mean = self._others.mean() if self._others is not None else Arrays()
        return Arrays(
            (name, new_x[name].astype(ref.dtype) if name in new_x else mean[name])
            for name, ref in self._arrays.items()
        ), metrics


def check_state_arrays(owner: str, state: Arrays, delta: Mapping[str, NDArray]) -> None:
    """Raise AggregationError unless `state` covers exactly the arrays of `delta`."""
    spec = [(n, tuple(a.shape)) for n, a in state.items()]
    want = [(n, tuple(a.shape)) for n, a in delta.items()]
    if spec != want:
        raise AggregationError(
            f"{owner} state holds arrays {spec} but the model's floating arrays are {want}; "
            "restore the checkpoint of this model or start from a fresh strategy"
        )


class FedOpt(FedAvg):
    """Server optimizer over the pseudo-gradient (Reddi et al. 2021, Algorithm 2).

    Defaults: beta_1 = 0.9 and beta_2 = 0.99 as in the paper's experiments and Flower's
    FedAdam and FedYogi; eta = 1e-2 and tau = 1e-3 are Flower's FedYogi defaults (the
    paper tunes eta and tau per task). Set beta_1 = 0 for Adagrad without momentum.

    Attributes:
        m: First moment per floating array (float64), None before the first update.
        v: Second moment per floating array (float64), None before the first update.
        num_updates: Server updates applied so far (t).

    Args:
        server_lr: Server step size eta (> 0).
        beta_1: First-moment decay in [0, 1).
        beta_2: Second-moment decay in [0, 1) (FedAdagrad does not use it).
        tau: Adaptivity tau (> 0): the floor of the denominator and sqrt(v_0).
        **kwargs: FedAvg's arguments.
    """

    def __init__(
        self,
        *,
        server_lr: float = 1e-2,
        beta_1: float = 0.9,
        beta_2: float = 0.99,
        tau: float = 1e-3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (("beta_1", beta_1), ("beta_2", beta_2)):
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value}")
        for name, value in (("server_lr", server_lr), ("tau", tau)):
            if not value > 0.0:
                raise ConfigError(f"{name} must be > 0, got {value}")
        self.server_lr, self.beta_1, self.beta_2, self.tau = server_lr, beta_1, beta_2, tau
        self.m: Arrays | None = None
        self.v: Arrays | None = None
        self.num_updates = 0

    def __repr__(self) -> str:
        return (
            f"{super().__repr__()[:-1]}, server_lr={self.server_lr}, beta_1={self.beta_1}, "
            f"beta_2={self.beta_2}, tau={self.tau})"
        )

    @abstractmethod
    def second_moment(self, v: NDArray, delta_sq: NDArray) -> NDArray:
        """Return v_t from v_{t-1} and Delta_t^2 (float64)."""

    def _train_accumulator(self, ctx: RoundContext, arrays: Arrays) -> TrainAccumulator:
        """Stream the cohort's mean change into one adaptive server step."""
        return ChangeAccumulator(arrays, accept_failures=self.accept_failures, step=self._step)

    def _step(self, arrays: Arrays, delta: dict[str, NDArray]) -> dict[str, NDArray]:
        """Take one adaptive server step along the cohort's mean change `delta`."""
        owner = type(self).__name__
        m = self.m or Arrays((n, np.zeros_like(d)) for n, d in delta.items())
        v = self.v or Arrays((n, np.full_like(d, self.tau**2)) for n, d in delta.items())
        check_state_arrays(owner, m, delta)
        check_state_arrays(owner, v, delta)
        new_m, new_v, new_x = {}, {}, {}
        for name, d in delta.items():
            new_m[name] = self.beta_1 * m[name] + (1.0 - self.beta_1) * d
            new_v[name] = self.second_moment(v[name], d * d)
            step = self.server_lr * new_m[name] / (np.sqrt(new_v[name]) + self.tau)
            new_x[name] = arrays[name].astype(np.float64) + step
        self.m, self.v, self.num_updates = Arrays(new_m), Arrays(new_v), self.num_updates + 1
        return new_x

    def state_dict(self) -> dict[str, Any]:
        """Return m, v (empty `Arrays` before the first update) and num_updates."""
        return {
            "m": (self.m or Arrays()).copy(),
            "v": (self.v or Arrays()).copy(),
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` output."""
        name = type(self).__name__
        if set(state) != {"m", "v", "num_updates"}:
            raise ConfigError(f"{name} state must hold m, v and num_updates, got {sorted(state)}")
        m, v = Arrays(state["m"]).copy(), Arrays(state["v"]).copy()
        if list(m) != list(v):
            raise ConfigError(f"{name} state has m for {list(m)} but v for {list(v)}")
        self.m, self.v = (m, v) if len(m) else (None, None)
        self.num_updates = int(state["num_updates"])


class FedAdagrad(FedOpt):
    """FedAdagrad: v_t = v_{t-1} + Delta_t^2 (`beta_2` is unused)."""

    def second_moment(self, v: NDArray, delta_sq: NDArray) -> NDArray:
        """Return v_{t-1} + Delta_t^2."""
        return v + delta_sq


class FedYogi(FedOpt):
    """FedYogi: v_t = v_{t-1} - (1 - beta_2) Delta_t^2 sign(v_{t-1} - Delta_t^2)."""

    def second_moment(self, v: NDArray, delta_sq: NDArray) -> NDArray:
        """Return Yogi's additive, sign-controlled second moment."""
        sign: NDArray = np.sign(v - delta_sq)
        return v - (1.0 - self.beta_2) * delta_sq * sign


class FedAdam(FedOpt):
    """FedAdam: v_t = beta_2 v_{t-1} + (1 - beta_2) Delta_t^2."""

    def second_moment(self, v: NDArray, delta_sq: NDArray) -> NDArray:
        """Return Adam's exponential moving average of Delta_t^2."""
        return self.beta_2 * v + (1.0 - self.beta_2) * delta_sq
