"""`federa ui`: one-line errors for bad arguments, and a real process serving the page."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import federa
from federa.apps.calculator.upload import encode_png
from federa.cli.main import main
from tests.apps.glyph_model import glyph_run
from tests.apps.glyphs import render_expression

SERVING = re.compile(r"federa ui: serving .* at http://127\.0\.0\.1:(\d+)/ \(Ctrl-C to stop\)")
STARTUP_TIMEOUT = 60.0  # the process imports torch and loads the model before it listens


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_ui_help_names_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["ui", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--run RUN_DIR", "--host HOST", "--port PORT", "Ctrl-C"):
        assert flag in out


def test_ui_needs_a_run_directory(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["ui"])
    assert exited.value.code == 2
    assert "the following arguments are required: --run" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nowhere", "does not exist; pass the --out of a federa run"),
        ("", "has no model.safetensors; train a model into it"),
    ],
    ids=["missing-dir", "no-model"],
)
def test_ui_reports_a_missing_run_or_model_in_one_line(
    name: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["ui", "--run", str(tmp_path / name)], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("federa: error: ")
    assert message in err
    assert err.count("\n") == 1


def test_ui_refuses_a_port_out_of_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["ui", "--run", str(tmp_path), "--port", "70000"], capsys)
    assert code == 2
    assert err == "federa: error: --port must be in 0..65535 (0 picks a free port), got 70000\n"


@pytest.mark.slow
def test_ui_reports_a_port_in_use_in_one_line(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    run = glyph_run(tmp_path_factory)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli(["ui", "--run", str(run), "--port", str(port)], capsys)
    assert code == 2
    assert err == (
        f"federa: error: cannot listen on 127.0.0.1:{port}: the port is in use; pass another "
        "--port, or --port 0 for a free one\n"
    )


def _wait_for_port(process: subprocess.Popen[str], log: Path) -> int:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        found = SERVING.search(log.read_text(encoding="utf-8"))
        if found:
            return int(found.group(1))
        if process.poll() is not None:
            pytest.fail(f"federa ui exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    pytest.fail(f"federa ui did not print its address in {STARTUP_TIMEOUT} s:\n{log.read_text()}")


@pytest.mark.slow
@pytest.mark.e2e
def test_ui_serves_the_page_and_stops_cleanly_on_ctrl_c(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    run = glyph_run(tmp_path_factory)
    src = str(Path(federa.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
    }
    log = tmp_path / "ui.log"
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "federa", "ui", "--run", str(run), "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
    try:
        port = _wait_for_port(process, log)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/")
        assert b'<canvas id="pad"' in conn.getresponse().read()
        image = encode_png(render_expression("6x7"))
        conn.request("POST", "/api/read", body=image, headers={"Content-Type": "image/png"})
        answer = json.loads(conn.getresponse().read())
        conn.close()
        assert (answer["text"], answer["value"]) == ("6x7", "42")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert "federa ui: stopped" in log.read_text(encoding="utf-8")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
