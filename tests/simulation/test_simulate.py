import numpy as np
import pytest

import federa as fd
from federa.simulation import ProcessExecutor

from .clients import flaky_client, linear_client, torch_client, torch_initial

INITIAL = fd.Arrays({"w": np.zeros(3)})


def linear_run(seed: int, executor: int | None = None, **strategy: float) -> fd.History:
    return fd.simulate(
        linear_client,
        fd.FedAvg(fraction_train=0.5, fraction_evaluate=0.3, **strategy),  # type: ignore[arg-type]
        num_clients=10,
        num_rounds=4,
        initial=INITIAL,
        seed=seed,
        executor=executor,
    )


def test_same_seed_gives_identical_history() -> None:
    a, b = linear_run(seed=3), linear_run(seed=3)
    assert a == b
    assert a.arrays == b.arrays
    assert a.rounds[-1].train_loss is not None
    assert a.rounds[-1].eval_loss is not None
    assert a != linear_run(seed=4)


def test_federated_regression_converges() -> None:
    history = linear_run(seed=0)
    assert history.arrays is not None
    np.testing.assert_allclose(history.arrays["w"], [1.0, -2.0, 0.5], atol=0.1)
    losses = [r.train_loss for r in history.rounds]
    assert losses[-1] is not None and losses[0] is not None and losses[-1] < losses[0]


def test_one_and_two_worker_processes_give_identical_histories() -> None:
    runs = {}
    for workers in (1, 2):
        runs[workers] = fd.simulate(
            torch_client,
            fd.FedAvg(fraction_train=0.5, fraction_evaluate=0.5),
            num_clients=6,
            num_rounds=3,
            initial=torch_initial(),
            seed=11,
            executor=workers,
        )
    serial = fd.simulate(
        torch_client,
        fd.FedAvg(fraction_train=0.5, fraction_evaluate=0.5),
        num_clients=6,
        num_rounds=3,
        initial=torch_initial(),
        seed=11,
    )
    assert runs[1] == runs[2]
    assert runs[1].arrays == runs[2].arrays
    assert serial == runs[1]
    assert all(r.num_results == 3 and not r.failures for r in runs[1].rounds)


def test_raising_client_becomes_failure_and_run_goes_on() -> None:
    history = fd.simulate(
        flaky_client,
        fd.FedAvg(fraction_train=1.0),
        num_clients=5,
        num_rounds=2,
        initial=INITIAL,
        seed=0,
    )
    for rec in history.rounds:
        assert rec.num_sampled == 5
        assert rec.num_results == 4
        assert rec.is_accepted
        [failure] = rec.failures
        assert failure.client_id == 3
        assert failure.phase == "train"
        assert failure.message == "RuntimeError: client 3 ran out of battery"


def test_raising_client_in_a_worker_process_becomes_failure() -> None:
    executor = ProcessExecutor(1)
    history = fd.simulate(
        flaky_client, fd.FedAvg(), num_clients=4, num_rounds=1, initial=INITIAL, executor=executor
    )
    assert [f.message for f in history.rounds[0].failures] == [
        "RuntimeError: client 3 ran out of battery"
    ]


def test_round_with_failures_is_rejected_when_strategy_refuses_them() -> None:
    history = fd.simulate(
        flaky_client,
        fd.FedAvg(fraction_train=1.0, accept_failures=False),
        num_clients=5,
        num_rounds=1,
        initial=INITIAL,
    )
    assert not history.rounds[0].is_accepted
    assert history.arrays == INITIAL


def test_wrong_arrays_from_a_client_become_a_failure() -> None:
    class Shrinking(fd.Client):
        def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
            return fd.TrainResult(arrays=fd.Arrays({"w": np.zeros(2)}), num_examples=1)

        def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
            raise NotImplementedError

    history = fd.simulate(
        lambda cid: Shrinking(), fd.FedAvg(), num_clients=2, num_rounds=1, initial=INITIAL
    )
    rec = history.rounds[0]
    assert rec.num_results == 0 and not rec.is_accepted
    assert "fit() returned arrays" in rec.failures[0].message


def test_unpicklable_client_fn_with_workers_says_what_to_do() -> None:
    with pytest.raises(fd.ConfigError, match="picklable"):
        fd.simulate(
            lambda cid: linear_client(cid),
            fd.FedAvg(),
            num_clients=2,
            num_rounds=1,
            initial=INITIAL,
            executor=1,
        )


def test_centralized_evaluation_runs_on_initial_and_every_round() -> None:
    calls: list[int] = []

    def evaluate_fn(round_num: int, arrays: fd.Arrays) -> tuple[float, fd.Metrics]:
        calls.append(round_num)
        return float(np.sum(arrays["w"] ** 2)), {"norm": float(np.linalg.norm(arrays["w"]))}

    history = fd.simulate(
        linear_client,
        fd.FedAvg(evaluate_fn=evaluate_fn),
        num_clients=3,
        num_rounds=2,
        initial=INITIAL,
    )
    assert calls == [0, 1, 2]
    assert history.initial is not None and history.initial.centralized_loss == 0.0
    assert [r for r, _ in history.series("centralized_norm")] == [0, 1, 2]
