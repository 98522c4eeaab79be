"""Streaming aggregation: accumulators match batch aggregation bit for bit, the round loop
feeds them in client-id order whatever the finishing order, and a streamed round keeps
O(1) clients' arrays alive."""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

import federa as fd
from federa.core.messages import Task, TaskResult
from federa.server.loop import run_rounds
from federa.simulation import ProcessExecutor, SerialExecutor
from federa.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedNova,
    FedProx,
    FedTrimmedMean,
    FedYogi,
    Krum,
    MultiKrum,
    QFedAvg,
    Scaffold,
)
from federa.strategy.base import TrainAccumulator
from federa.transport.inprocess import InProcessTransport

STREAMING: dict[str, Callable[[], fd.Strategy]] = {
    "fedavg": lambda: FedAvg(min_train_clients=1),
    "fedprox": lambda: FedProx(proximal_mu=0.1, min_train_clients=1),
    "fedavgm": lambda: FedAvgM(server_lr=0.7, server_momentum=0.9, min_train_clients=1),
    "fedadam": lambda: FedAdam(min_train_clients=1),
    "fedyogi": lambda: FedYogi(min_train_clients=1),
    "fedadagrad": lambda: FedAdagrad(min_train_clients=1),
    "scaffold": lambda: Scaffold(server_lr=0.5, min_train_clients=1),
}
BATCH_ONLY: dict[str, Callable[[], fd.Strategy]] = {
    "fednova": lambda: FedNova(min_train_clients=1),
    "qfedavg": lambda: QFedAvg(min_train_clients=1),
    "krum": lambda: Krum(num_byzantine=1, min_train_clients=1),
    "multikrum": lambda: MultiKrum(num_byzantine=1, num_selected=3, min_train_clients=1),
    "bulyan": lambda: Bulyan(num_byzantine=1, min_train_clients=1),
    "median": lambda: FedMedian(min_train_clients=1),
    "trimmedmean": lambda: FedTrimmedMean(beta=0.2, min_train_clients=1),
}


def ctx(round_num: int) -> fd.RoundContext:
    return fd.RoundContext(round_num=round_num, rng=np.random.default_rng(round_num), seed=0)


def global_arrays() -> fd.Arrays:
    rng = np.random.default_rng(7)
    return fd.Arrays(
        {
            "w": rng.normal(size=(3, 4)).astype(np.float32),
            "b": rng.normal(size=4) * 1e3,
            "count": np.array(5, np.int64),
        }
    )


def noisy_results(
    tasks: Sequence[fd.TrainTask], round_num: int
) -> list[tuple[int, fd.TrainResult]]:
    """Perturbed copies of what each client was sent; one NaN and one empty result."""
    rng = np.random.default_rng(100 + round_num)
    out = []
    for i, task in enumerate(tasks):
        arrays = {}
        for name, value in task.arrays.items():
            if value.dtype.kind == "f":
                arrays[name] = (value + rng.normal(scale=0.1, size=value.shape)).astype(value.dtype)
            else:
                arrays[name] = value + rng.integers(0, 4, size=value.shape)
        if i == 1:
            arrays["w"] = np.full_like(arrays["w"], np.nan)
        metrics = {"loss": float(rng.uniform()), "accuracy": float(rng.uniform())}
        n = 0 if i == 2 else int(rng.integers(1, 200))
        out.append(
            (
                task.client_id,
                fd.TrainResult(arrays=fd.Arrays(arrays), num_examples=n, metrics=metrics),
            )
        )
    return out


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_accumulator_gives_the_batch_floats_bit_for_bit(name: str) -> None:
    batch, streamed = STREAMING[name](), STREAMING[name]()
    x_batch = x_streamed = global_arrays()
    for round_num in (1, 2, 3):
        tasks = batch.configure_train(ctx(round_num), x_batch, range(8))
        assert [
            t.client_id for t in streamed.configure_train(ctx(round_num), x_streamed, range(8))
        ] == [t.client_id for t in tasks]
        results = noisy_results(tasks, round_num)
        new_batch, metrics_batch = batch.aggregate_train(ctx(round_num), x_batch, results, [])
        accumulator = streamed.begin_train_aggregation(ctx(round_num), x_streamed)
        assert accumulator is not None
        for client_id, result in results:
            accumulator.add(client_id, result)
        new_streamed, metrics_streamed = accumulator.finish([])
        assert new_batch is not None and new_streamed is not None
        assert new_streamed == new_batch  # same names, dtypes, and bits
        assert metrics_streamed == metrics_batch
        x_batch, x_streamed = new_batch, new_streamed
    assert x_batch != global_arrays()


@pytest.mark.parametrize("name", STREAMING)
def test_streaming_accumulator_refuses_failures_like_the_batch_rule(name: str) -> None:
    strategy = STREAMING[name]()
    strategy.accept_failures = False  # type: ignore[attr-defined]  # every FedAvg kin has it
    x = global_arrays()
    tasks = strategy.configure_train(ctx(1), x, range(4))
    accumulator = strategy.begin_train_aggregation(ctx(1), x)
    assert accumulator is not None
    for client_id, result in noisy_results(tasks, 1):
        accumulator.add(client_id, result)
    failure = fd.Failure(client_id=9, round_num=1, phase="train", message="gone")
    assert accumulator.finish([failure]) == (None, {})


@pytest.mark.parametrize("name", BATCH_ONLY)
def test_rules_that_need_every_result_do_not_stream(name: str) -> None:
    assert BATCH_ONLY[name]().begin_train_aggregation(ctx(1), global_arrays()) is None


def test_a_subclass_with_its_own_aggregate_train_falls_back_to_the_batch_path() -> None:
    class Halving(FedAvg):
        def aggregate_train(self, ctx, arrays, results, failures):  # type: ignore[no-untyped-def]
            new, metrics = super().aggregate_train(ctx, arrays, results, failures)
            return (None if new is None else fd.Arrays({k: v / 2 for k, v in new.items()})), metrics

    assert Halving().begin_train_aggregation(ctx(1), global_arrays()) is None
    assert FedAvg().begin_train_aggregation(ctx(1), global_arrays()) is not None


class ShuffledTransport(InProcessTransport):
    """Yield results in a seeded random order, as a pool of workers might."""

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, TaskResult]]:
        outcomes = list(super().run(tasks))
        order = np.random.default_rng(len(tasks) + tasks[0].round_num).permutation(len(outcomes))
        return iter([outcomes[i] for i in order])


class Recorder:
    """Pass results on to `inner`, recording the client ids in the order they come."""

    def __init__(self, inner: TrainAccumulator, order: list[int]) -> None:
        self.inner, self.order = inner, order

    def add(self, client_id: int, result: fd.TrainResult) -> None:
        self.order.append(client_id)
        self.inner.add(client_id, result)

    def finish(self, failures: Sequence[fd.Failure]) -> tuple[fd.Arrays | None, fd.Metrics]:
        return self.inner.finish(failures)


class RecordingFedAvg(FedAvg):
    """FedAvg whose accumulator records the client ids in the order it is fed."""

    def __init__(self, fed: list[list[int]], fraction_train: float) -> None:
        super().__init__(fraction_train=fraction_train, fraction_evaluate=0.5)
        self.fed = fed

    def _train_accumulator(self, ctx: fd.RoundContext, arrays: fd.Arrays) -> TrainAccumulator:
        order: list[int] = []
        self.fed.append(order)
        return Recorder(super()._train_accumulator(ctx, arrays), order)


class MeanClient(fd.Client):
    """Move towards a client-specific target by a seeded random step (numpy only)."""

    def __init__(self, cid: int) -> None:
        self.cid = cid

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        rng = np.random.default_rng(int(config["seed"]))
        w = arrays["w"] + 0.3 * (self.cid - arrays["w"]) + rng.normal(scale=0.01, size=3)
        return fd.TrainResult(arrays=fd.Arrays({"w": w}), num_examples=10 + self.cid)

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        loss = float(np.mean((arrays["w"] - self.cid) ** 2))
        return fd.EvalResult(loss=loss, num_examples=10 + self.cid)


def test_results_finishing_in_any_order_are_aggregated_in_client_id_order() -> None:
    initial = fd.Arrays({"w": np.zeros(3)})
    histories, fed_orders = [], []
    for transport_cls in (InProcessTransport, ShuffledTransport):
        fed: list[list[int]] = []
        transport = transport_cls(MeanClient, 12, SerialExecutor())
        strategy = RecordingFedAvg(fed, fraction_train=0.75)
        histories.append(run_rounds(strategy, transport, num_rounds=3, initial=initial, seed=5))
        fed_orders.append(fed)
    assert histories[0] == histories[1]
    assert histories[0].arrays == histories[1].arrays
    assert fed_orders[0] == fed_orders[1]
    assert all(order == sorted(order) and len(order) == 9 for order in fed_orders[1])


class BigClient(fd.Client):
    def __init__(self, cid: int) -> None:
        self.cid = cid

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        return fd.TrainResult(arrays=fd.Arrays({"w": arrays["w"] + self.cid}), num_examples=1)

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        raise NotImplementedError


class WatchingTransport(InProcessTransport):
    """Record, as each result is produced, how many earlier results' arrays are alive."""

    def __init__(self, num_clients: int) -> None:
        super().__init__(BigClient, num_clients, SerialExecutor())
        self.refs: list[weakref.ref[np.ndarray]] = []
        self.alive: list[int] = []

    def run(self, tasks: Sequence[Task]) -> Iterator[tuple[int, TaskResult]]:
        for client_id, result in super().run(tasks):
            self.alive.append(sum(r() is not None for r in self.refs))
            if isinstance(result, fd.TrainResult):
                self.refs.append(weakref.ref(result.arrays["w"]))
            yield client_id, result


@pytest.mark.parametrize(
    ("strategy", "most_alive"),
    [(FedAvg(min_train_clients=1), 2), (FedMedian(min_train_clients=1), 29)],
    ids=["streaming", "batch"],
)
def test_a_streamed_round_keeps_the_first_and_the_newest_result_only(
    strategy: fd.Strategy, most_alive: int
) -> None:
    transport = WatchingTransport(30)
    initial = fd.Arrays({"w": np.zeros(1000, np.float32)})
    history = run_rounds(strategy, transport, num_rounds=1, initial=initial)
    assert history.arrays is not None and history.rounds[0].num_results == 30
    # Streaming keeps the reference (first) result while the newest is produced; the
    # batch path holds every earlier result until it aggregates.
    assert max(transport.alive) == most_alive
    np.testing.assert_array_equal(history.arrays["w"], np.full(1000, 14.5, np.float32))


class SleepyClient(fd.Client):
    """Record its start in a folder; client 0 is slow so later clients finish first."""

    def __init__(self, cid: int, folder: str) -> None:
        self.cid, self.folder = cid, Path(folder)

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        (self.folder / str(self.cid)).touch()
        time.sleep(0.4 if self.cid == 0 else 0.01)
        return fd.TrainResult(arrays=arrays, num_examples=1 + self.cid)

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        raise NotImplementedError


def sleepy_client(cid: int, folder: str) -> SleepyClient:
    return SleepyClient(cid, folder)


@pytest.mark.slow
def test_process_executor_yields_in_task_order_with_bounded_tasks_in_flight(
    tmp_path: Path,
) -> None:
    executor = ProcessExecutor(2, max_in_flight=3)
    client_fn = functools.partial(sleepy_client, folder=str(tmp_path))
    arrays = fd.Arrays({"w": np.zeros(2)})
    tasks = [fd.TrainTask(round_num=1, client_id=c, arrays=arrays) for c in range(8)]
    try:
        outcomes = executor.run(client_fn, tasks)
        first_index, _ = next(outcomes)
        time.sleep(0.3)  # let the workers take whatever they were given
        started_after_first = len(list(tmp_path.iterdir()))
        rest = [index for index, _ in outcomes]
    finally:
        executor.close()
    assert [first_index, *rest] == list(range(8))  # client 0 was slowest yet comes first
    assert started_after_first <= 3
    assert len(list(tmp_path.iterdir())) == 8
