from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import federa.apps.calculator as calculator
from federa.apps.calculator import Recognizer, segment
from federa.apps.calculator.synth import compose
from federa.cli.main import main
from federa.data import CALCULATOR_CLASSES
from tests.apps.symbols import font_pool
from tests.apps.test_reading import Scripted, make_run_dir

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "calculator"
    make_run_dir(folder)
    return folder


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    expression = compose("12+7", font_pool(np.random.default_rng(0)), np.random.default_rng(1))
    path = tmp_path_factory.mktemp("photos") / "expression.png"
    cv2.imwrite(str(path), expression.image)
    return path


def test_predict_prints_each_symbol_with_its_confidence_and_annotates(
    run_dir: Path, photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    annotated = tmp_path / "annotated.png"
    code = main(["predict", str(photo), "--run", str(run_dir), "--annotate", str(annotated)])
    out, err = capsys.readouterr()
    assert code in (0, 1)  # an untrained model may read something that does not compute
    lines = out.splitlines()
    assert lines[0].startswith("read '") and lines[0].endswith("(4 symbols)")
    symbol_lines = [line for line in lines if "box x=" in line]
    assert len(symbol_lines) == len(segment(cv2.imread(str(photo)))) == 4
    assert all("%" in line for line in symbol_lines)
    assert (code == 0) == (lines[-2].startswith("= ") and err == "")
    picture = cv2.imread(str(annotated))
    width = cv2.imread(str(photo)).shape[1]
    assert picture is not None and picture.shape[1] % width == 0  # small photos are enlarged
    assert f"annotated image written to {annotated}" in out


def test_predict_json_is_one_line_with_the_reading(
    run_dir: Path, photo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["predict", str(photo), "--run", str(run_dir), "--json"])
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    data = json.loads(out)
    assert set(data) == {"text", "value", "error", "symbols"}
    assert len(data["symbols"]) == 4 and len(data["text"]) == 4


def test_predict_computes_and_reports_a_division_by_zero(
    photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def scripted(chars: str) -> None:
        recognizer = Recognizer(Scripted(chars), CALCULATOR_CLASSES)
        monkeypatch.setattr(calculator, "load_recognizer", lambda run: recognizer)

    scripted("12+7")
    assert main(["predict", str(photo), "--run", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "read '12+7' (4 symbols)" in out and out.splitlines()[-1] == "= 19" and err == ""
    scripted("12÷0")
    assert main(["predict", str(photo), "--run", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "read '12÷0'" in out
    assert err.startswith("federa: error: cannot compute '12÷0': division by zero")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing image", "image {tmp}/missing.png does not exist"),
        ("not an image", "{tmp}/notes.txt is not an image"),
        ("run without model", "{tmp}/empty has no model.safetensors"),
        ("missing run", "run directory {tmp}/nowhere does not exist"),
        ("annotate into a missing folder", "cannot write {tmp}/no/such/folder.png"),
    ],
)
def test_predict_errors_are_one_clear_line(
    case: str,
    message: str,
    run_dir: Path,
    photo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "empty").mkdir()
    args = {
        "missing image": [str(tmp_path / "missing.png"), "--run", str(run_dir)],
        "not an image": [str(tmp_path / "notes.txt"), "--run", str(run_dir)],
        "run without model": [str(photo), "--run", str(tmp_path / "empty")],
        "missing run": [str(photo), "--run", str(tmp_path / "nowhere")],
        "annotate into a missing folder": [
            str(photo),
            "--run",
            str(run_dir),
            "--annotate",
            str(tmp_path / "no" / "such" / "folder.png"),
        ],
    }[case]
    code = main(["predict", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("federa: error: ")
    assert message.format(tmp=tmp_path) in err
    assert err.count("\n") == 1


def test_predict_needs_the_run_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["predict", "photo.png"])
    assert info.value.code == 2
    assert "--run" in capsys.readouterr().err
