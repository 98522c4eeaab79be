import numpy as np
import pytest

import federa as fd
from federa.client import run_client_task, run_task

ARRAYS = fd.Arrays({"w": np.zeros(2, np.float32)})


class Scripted(fd.Client):
    def __init__(self, train_result: object = None, eval_result: object = None) -> None:
        self.train_result = train_result
        self.eval_result = eval_result
        self.seen: dict[str, object] = {}

    def fit(self, arrays: fd.Arrays, config: fd.Config) -> fd.TrainResult:
        self.seen = dict(config)
        return self.train_result  # type: ignore[return-value]

    def evaluate(self, arrays: fd.Arrays, config: fd.Config) -> fd.EvalResult:
        return self.eval_result  # type: ignore[return-value]


def train_task(**config: float) -> fd.TrainTask:
    return fd.TrainTask(round_num=3, client_id=7, arrays=ARRAYS, config=config, seed=99)


def test_client_sees_round_and_seed_in_its_config() -> None:
    client = Scripted(fd.TrainResult(arrays=ARRAYS, num_examples=1))
    result = run_task(client, train_task(lr=0.1))
    assert isinstance(result, fd.TrainResult)
    assert client.seen == {"lr": 0.1, "round_num": 3, "seed": 99}


@pytest.mark.parametrize(
    ("returned", "message"),
    [
        (None, "fit() must return a TrainResult, got NoneType"),
        (fd.TrainResult(arrays=ARRAYS, num_examples=-1), "num_examples must be >= 0"),
        (
            fd.TrainResult(arrays=fd.Arrays({"w": np.zeros(2, np.float64)}), num_examples=1),
            "fit() returned arrays",
        ),
        (
            fd.TrainResult(
                arrays=fd.Arrays({"w": np.array([np.nan, 0], np.float32)}), num_examples=1
            ),
            "NaN or Inf",
        ),
        (
            fd.TrainResult(arrays=ARRAYS, num_examples=1, metrics={"acc": "high"}),  # type: ignore[dict-item]
            "metric 'acc' must be a number",
        ),
    ],
)
def test_results_breaking_the_contract_become_failures(returned: object, message: str) -> None:
    result = run_task(Scripted(returned), train_task())
    assert isinstance(result, fd.Failure)
    assert result.client_id == 7
    assert result.phase == "train"
    assert message in result.message


def test_evaluation_results_are_checked_too() -> None:
    bad = run_task(
        Scripted(eval_result=fd.TrainResult(arrays=ARRAYS, num_examples=1)),
        fd.EvalTask(round_num=1, client_id=2, arrays=ARRAYS),
    )
    assert isinstance(bad, fd.Failure)
    assert bad.phase == "evaluate"
    good = run_task(
        Scripted(eval_result=fd.EvalResult(loss=np.float32(0.5), num_examples=4)),  # type: ignore[arg-type]
        fd.EvalTask(round_num=1, client_id=2, arrays=ARRAYS),
    )
    assert good == fd.EvalResult(loss=0.5, num_examples=4, metrics={})


def test_client_fn_that_raises_becomes_a_failure() -> None:
    def client_fn(cid: int) -> fd.Client:
        raise FileNotFoundError(f"no data for client {cid}")

    result = run_client_task(client_fn, train_task())
    assert isinstance(result, fd.Failure)
    assert result.message == "client_fn(7) raised FileNotFoundError: no data for client 7"
