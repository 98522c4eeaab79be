import math

import pytest

import federa as fd
from federa.server.history import RoundRecord


def sample_history() -> fd.History:
    failure = fd.Failure(client_id=4, round_num=1, phase="train", message="boom")
    return fd.History(
        initial=RoundRecord(
            round_num=0, centralized_loss=2.3, centralized_metrics={"accuracy": 0.1}
        ),
        rounds=[
            RoundRecord(
                round_num=1,
                num_sampled=3,
                num_results=2,
                failures=[failure],
                is_accepted=True,
                train_metrics={"loss": 1.5, "accuracy": 0.4},
                eval_loss=None,
                centralized_loss=1.2,
                centralized_metrics={"accuracy": 0.6},
                timings={"total_s": 0.5},
            )
        ],
    )


def test_history_json_round_trip() -> None:
    history = sample_history()
    again = fd.History.from_json(history.to_json())
    assert again == history
    assert again.rounds[0].timings == {"total_s": 0.5}
    assert again.series("centralized_accuracy") == [(0, 0.1), (1, 0.6)]
    assert again.rounds[0].train_loss == 1.5


def test_history_json_writes_nan_as_null(tmp_path: pytest.TempPathFactory) -> None:
    history = sample_history()
    history.rounds[0].train_metrics["loss"] = math.nan
    text = history.to_json()
    assert "NaN" not in text
    assert math.isnan(fd.History.from_json(text).rounds[0].train_metrics["loss"])


def test_history_from_bad_json_says_what_is_wrong() -> None:
    with pytest.raises(fd.FederaError, match="not valid JSON"):
        fd.History.from_json("{not json")
    with pytest.raises(fd.FederaError, match="format_version"):
        fd.History.from_json('{"rounds": []}')
