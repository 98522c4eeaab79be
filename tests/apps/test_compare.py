from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from federa.cli.compare import load_run, rounds_to_target
from federa.cli.config import RunConfig
from federa.cli.main import main
from federa.cli.rundir import write_config
from federa.server.history import History, RoundRecord

cv2 = pytest.importorskip("cv2")


def test_rounds_to_target_interpolates_the_best_so_far_curve() -> None:
    curve = [(0, 0.1), (1, 0.5), (2, 0.9), (3, 0.85), (4, 0.98)]
    # best so far: 0.1, 0.5, 0.9, 0.9, 0.98; 0.95 is crossed between rounds 3 and 4.
    assert rounds_to_target(curve, 0.95) == pytest.approx(3 + 0.05 / 0.08)
    assert rounds_to_target(curve, 0.7) == pytest.approx(1 + 0.2 / 0.4)
    assert rounds_to_target(curve, 0.9) == 2.0
    assert rounds_to_target(curve, 0.99) is None
    assert rounds_to_target([(0, 0.97)], 0.95) == 0.0


def write_run(folder: Path, partition: str, accuracies: list[float]) -> Path:
    """Write the history.json and config.toml of a finished run."""
    folder.mkdir()
    records = [
        RoundRecord(
            round_num=r,
            is_accepted=r > 0,
            centralized_loss=2.5 * (1 - acc),
            centralized_metrics={"accuracy": acc},
        )
        for r, acc in enumerate(accuracies)
    ]
    History(initial=records[0], rounds=records[1:]).to_json(folder / "history.json")
    cfg = RunConfig(dataset="calculator", partition=partition, num_clients=20, rounds=5)
    write_config(folder / "config.toml", cfg)
    return folder


def test_compare_draws_both_runs_on_one_png_and_prints_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    iid = write_run(tmp_path / "iid", "iid", [0.1, 0.8, 0.95, 0.975, 0.98, 0.985])
    skewed = write_run(tmp_path / "noniid", "dirichlet", [0.1, 0.5, 0.8, 0.9, 0.96, 0.965])
    out = tmp_path / "compare.png"
    code = main(["compare", str(iid), str(skewed), "--out", str(out), "--target", "0.97"])
    printed = capsys.readouterr().out
    assert code == 0
    image = cv2.imread(str(out))
    assert image is not None and image.shape[1] > 800
    # Matplotlib's first two line colours, blue and orange, both appear (RGB -> BGR).
    for rgb in ((31, 119, 180), (255, 127, 14)):
        near = np.abs(image.astype(int) - np.array(rgb[::-1])).sum(axis=2) < 40
        assert near.sum() > 200, rgb
    assert "iid (iid, 20 clients)" in printed
    assert "noniid (dirichlet, alpha=0.5, 20 clients)" in printed
    assert "0.9850 (round 5)" in printed  # the IID run's best
    assert "2.8" in printed  # IID crosses 0.97 at 2 + 0.02 / 0.025 = 2.8 rounds
    assert str(out) in printed.replace("\n", "")


def test_compare_falls_back_to_client_metrics_without_a_test_set(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    rounds = [
        RoundRecord(round_num=r, train_metrics={"accuracy": 0.5, "loss": 1.0}) for r in (1, 2)
    ]
    History(rounds=rounds).to_json(folder / "history.json")
    run = load_run(folder)
    assert run.source == "train"
    assert run.accuracy == [(1, 0.5), (2, 0.5)]
    assert run.label == "run"  # no config.toml: the folder's name alone


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p, "has no history.json"),
    ],
)
def test_compare_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, message: str
) -> None:
    folder = make(tmp_path)  # type: ignore[operator]  # a lambda from the parameters
    code = main(["compare", str(folder), "--out", str(tmp_path / "c.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("federa: error: ") and message in err
    assert err.count("\n") == 1


def test_compare_refuses_an_out_folder_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = write_run(tmp_path / "a", "iid", [0.1, 0.9])
    code = main(["compare", str(run), "--out", str(tmp_path / "nope" / "c.png")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
