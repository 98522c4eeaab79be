"""An in-memory network for SecAgg+ tests: clients that drop out, a server that tampers.

`Network.collect` is what the round loop hands `SecAggPlus.aggregate`: it runs each
stage task on a long-lived `SecAggPlusClient` (as a deployed client would keep its
object) through the real task runner, and records every task and reply, so tests can
drop clients at a stage, alter messages in flight and look at what the server saw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

import federa as fd
from federa.client.runner import run_task
from federa.client.secagg import SecAggPlusClient
from federa.privacy.secagg import SecAggPlus, wire
from federa.strategy.aggregate import weighted_mean, weighted_metrics

NDArray = npt.NDArray[np.float64]
TaskHook = Callable[[fd.TrainTask], fd.TrainTask]
ResultHook = Callable[[fd.TrainTask, fd.TrainResult], fd.TrainResult]


class VectorClient(fd.Client):
    """Adds a fixed update to the arrays it is sent; n examples, a loss metric."""

    def __init__(self, update: NDArray, num_examples: int, loss: float) -> None:
        self.update = update
        self.num_examples = num_examples
        self.loss = loss

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        new = fd.Arrays({"w": arrays["w"] + self.update})
        return fd.TrainResult(
            arrays=new, num_examples=self.num_examples, metrics={"loss": self.loss}
        )

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        raise NotImplementedError


def make_clients(n: int, size: int, seed: int = 0, scale: float = 0.5) -> dict[int, VectorClient]:
    """Return n clients with random updates in [-scale, scale] and different sizes."""
    rng = np.random.default_rng(seed)
    return {
        cid: VectorClient(rng.uniform(-scale, scale, size), int(rng.integers(5, 500)), float(cid))
        for cid in range(n)
    }


def initial(size: int) -> fd.Arrays:
    return fd.Arrays({"w": np.linspace(-1.0, 1.0, size)})


def train_tasks(ids: Sequence[int], arrays: fd.Arrays, round_num: int = 1) -> list[fd.TrainTask]:
    return [
        fd.TrainTask(round_num=round_num, client_id=cid, arrays=arrays, seed=1000 + cid)
        for cid in ids
    ]


def plain_mean(
    clients: dict[int, VectorClient], ids: Sequence[int], arrays: fd.Arrays
) -> fd.TrainResult:
    """Return what FedAvg would compute from the plain results of `ids`."""
    results = [clients[cid].fit(arrays, {}) for cid in sorted(ids)]
    mean = weighted_mean([r.arrays for r in results], [r.num_examples for r in results])
    metrics = weighted_metrics([(r.num_examples, r.metrics) for r in results])
    total = sum(r.num_examples for r in results)
    return fd.TrainResult(arrays=mean, num_examples=total, metrics=metrics)


def tolerance(
    secagg: SecAggPlus, clients: dict[int, VectorClient], ids: Sequence[int], n: int
) -> float:
    """Return the worst-case error of the securely aggregated mean of `ids` (cohort of n).

    Each client's code is off by less than one step 2 clip / levels, scaled by its
    weight r <= 1; the mean divides the sum by sum(r).
    """
    levels = (2**32 - 1) // n
    step = 2 * secagg.clip / levels
    weight = sum(min(clients[c].num_examples, secagg.max_weight) for c in ids) / secagg.max_weight
    return len(ids) * step / weight + 1e-12


@dataclass
class Network:
    """Runs stage tasks on persistent wrapped clients; drops and tampers on request."""

    clients: dict[int, fd.Client]
    drop: dict[str, set[int]] = field(default_factory=dict)
    on_task: TaskHook | None = None
    on_result: ResultHook | None = None
    sent: list[fd.TrainTask] = field(default_factory=list)
    replies: list[tuple[fd.TrainTask, fd.TrainResult]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.wrapped = {cid: SecAggPlusClient(c) for cid, c in self.clients.items()}

    def collect(
        self, tasks: Sequence[fd.TrainTask]
    ) -> tuple[list[tuple[int, fd.TrainResult]], list[fd.Failure]]:
        results: list[tuple[int, fd.TrainResult]] = []
        failures: list[fd.Failure] = []
        for task in sorted(tasks, key=lambda t: t.client_id):
            self.sent.append(task)
            stage = wire.stage_of(task.config)
            assert stage is not None
            if task.client_id in self.drop.get(stage, set()):
                failures.append(
                    fd.Failure(
                        client_id=task.client_id,
                        round_num=task.round_num,
                        phase="train",
                        message="connection lost",
                    )
                )
                continue
            delivered = self.on_task(task) if self.on_task else task
            outcome = run_task(self.wrapped[task.client_id], delivered)
            if isinstance(outcome, fd.Failure):
                failures.append(outcome)
                continue
            assert isinstance(outcome, fd.TrainResult)
            outcome = replace(outcome, state=None)
            if self.on_result is not None:
                outcome = self.on_result(task, outcome)
            self.replies.append((task, outcome))
            results.append((task.client_id, outcome))
        return results, failures

    def stages_sent(self) -> list[str]:
        """Return the stages that were sent, in order, once each."""
        out: list[str] = []
        for task in self.sent:
            stage = wire.stage_of(task.config)
            if stage is not None and (not out or out[-1] != stage):
                out.append(stage)
        return out

    def replies_at(self, stage: str) -> dict[int, fd.Arrays]:
        return {t.client_id: r.arrays for t, r in self.replies if wire.stage_of(t.config) == stage}


def flip_byte(array: npt.NDArray[np.uint8], index: tuple[int, ...]) -> npt.NDArray[np.uint8]:
    """Return a copy of `array` with one byte inverted."""
    out = array.copy()
    out[index] ^= 0xFF
    return out


def with_array(arrays: fd.Arrays, name: str, value: npt.NDArray[np.generic]) -> fd.Arrays:
    return fd.Arrays({k: (value if k == name else v) for k, v in arrays.items()})
