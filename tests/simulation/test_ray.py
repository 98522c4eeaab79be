"""The Ray executor: a local 2-CPU Ray instance gives the serial History."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import ray
import torch

import federa as fd
from federa.cli.config import RunConfig, resolve
from federa.cli.experiment import build_experiment
from federa.cli.run import build_executor
from federa.server.loop import run_rounds
from federa.simulation import ProcessExecutor, SerialExecutor
from federa.simulation.ray import RayExecutor
from federa.transport.inprocess import Executor, InProcessTransport

from .clients import flaky_client

INITIAL = fd.Arrays({"w": np.zeros(3)})


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Serial clients compute with one intra-op thread, as every Ray actor does."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_ray_executor_gives_the_serial_history_on_digits() -> None:
    cfg = RunConfig(
        dataset="digits",
        model="mnist_2nn",  # a small MLP: the test is about placement, not accuracy
        num_clients=20,
        rounds=3,
        fraction_train=0.5,
        fraction_evaluate=0.25,
        local_epochs=1,
        seed=4,
    )
    experiment = build_experiment(cfg)

    def run(executor: Executor) -> fd.History:
        transport = InProcessTransport(experiment.client_fn, 20, executor)
        return run_rounds(
            experiment.strategy, transport, num_rounds=3, initial=experiment.initial, seed=4
        )

    serial = run(SerialExecutor())
    executor = RayExecutor(num_cpus=2, max_in_flight=3)
    try:
        on_ray = run(executor)
        assert ray.cluster_resources()["CPU"] == 2
        # The same actors run another federation (a new client_fn), and a client that
        # raises becomes the same Failure as in this process.
        flaky = fd.simulate(flaky_client, fd.FedAvg(), num_clients=5, num_rounds=1, initial=INITIAL)
        flaky_on_ray = run_rounds(
            fd.FedAvg(),
            InProcessTransport(flaky_client, 5, executor),
            num_rounds=1,
            initial=INITIAL,
        )
        # A consumer that stops early leaves the executor usable.
        tasks = [fd.TrainTask(round_num=1, client_id=c, arrays=INITIAL) for c in range(5)]
        outcomes = executor.run(flaky_client, tasks)
        assert next(outcomes)[0] == 0
        outcomes.close()
        assert [i for i, _ in executor.run(flaky_client, tasks)] == [0, 1, 2, 3, 4]
    finally:
        executor.close()
    assert not ray.is_initialized()  # it started the local instance, so it stops it
    assert on_ray == serial
    assert on_ray.arrays == serial.arrays
    assert [r.num_results for r in on_ray.rounds] == [10, 10, 10]
    assert all(r.num_eval_results == 5 and not r.failures for r in on_ray.rounds)
    accuracy = serial.series("centralized_accuracy")
    assert accuracy[-1][1] > accuracy[0][1]  # the clients did train
    assert flaky_on_ray == flaky and flaky_on_ray.arrays == flaky.arrays
    assert [f.message for f in flaky_on_ray.rounds[0].failures] == [
        "RuntimeError: client 3 ran out of battery"
    ]


def test_ray_executor_rejects_a_local_cpu_count_with_a_cluster_address() -> None:
    with pytest.raises(fd.ConfigError, match="leave it unset"):
        RayExecutor(address="ray://head:10001", num_cpus=2)
    with pytest.raises(fd.ConfigError, match="num_gpus_per_client"):
        RayExecutor(num_gpus_per_client=-0.5)


def test_federa_run_picks_the_executor_from_its_flags() -> None:
    assert isinstance(build_executor(resolve({}, {})), SerialExecutor)
    assert isinstance(build_executor(resolve({}, {"workers": 2})), ProcessExecutor)
    local = build_executor(resolve({}, {"executor": "ray", "workers": 2}))
    assert isinstance(local, RayExecutor)
    assert (local.address, local.num_cpus, local.num_actors) == (None, 2, 2)
    cluster = build_executor(resolve({}, {"ray_address": "ray://head:10001"}))
    assert isinstance(cluster, RayExecutor)
    assert (cluster.address, cluster.num_cpus, cluster.num_actors) == (
        "ray://head:10001",
        None,
        None,
    )
    with pytest.raises(fd.ConfigError, match="--ray-address needs --executor ray"):
        resolve({}, {"executor": "process", "workers": 2, "ray_address": "auto"})
    with pytest.raises(fd.ConfigError, match="--executor process needs --workers"):
        resolve({}, {"executor": "process"})
    with pytest.raises(fd.ConfigError, match="--executor: unknown value 'dask'"):
        resolve({}, {"executor": "dask"})
