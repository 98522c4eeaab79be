import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib

import federa as fd
from federa.cli.config import FIELD_TYPES
from federa.cli.main import main


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--dataset", "imagenet"],
            "--dataset: unknown value 'imagenet'; choose one of: calculator, cifar10, digits, "
            "emnist, femnist, mnist",
        ),
        (["--model", "resnet"], "--model: unknown value 'resnet'; choose one of: cifar10_cnn,"),
        (["--fraction-train", "0"], "--fraction-train must be in (0, 1], got 0"),
        (["--fraction-train", "1.5"], "--fraction-train must be in (0, 1], got 1.5"),
        (["--num-clients", "0"], "--num-clients must be >= 1, got 0"),
        (
            ["--partition", "zipf"],
            "--partition: unknown value 'zipf'; choose one of: dirichlet, iid, natural, "
            "quantity, shards",
        ),
        (["--alpha", "-1"], "--alpha must be a positive number, got -1"),
        (["--rounds", "0"], "--rounds must be >= 1, got 0"),
        (["--lr", "0"], "--lr must be a positive number, got 0"),
        (["--dataset", "mnist"], "--data-dir is required for --dataset mnist"),
        (
            ["--dataset", "mnist", "--data-dir", "/nonexistent/mnist"],
            "--data-dir: /nonexistent/mnist does not exist or is not a folder",
        ),
        (["--num-clients", "5000"], "--num-clients"),
        (["--stragglers", "1.5"], "--stragglers must be a fraction in [0, 1], got 1.5"),
        (["--stragglers", "0.5", "--local-epochs", "1"], "set --local-epochs 2 or more"),
        (["--partial-work"], "--partial-work needs --stragglers"),
    ],
)
def test_bad_config_gives_one_clear_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(["run", "--out", str(tmp_path / "run"), *args], capsys)
    assert code == 2
    assert err.startswith("federa: error: ")
    assert message in err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def test_bad_config_file_cases(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cases = {
        "rounds = 'many'\n": "rounds in",
        "num_clients = 3\ncolour = 'red'\n": "unknown key 'colour'",
        "rounds = [1\n": "is not valid TOML",
    }
    for text, message in cases.items():
        path = tmp_path / "bad.toml"
        path.write_text(text)
        code, _, err = run_cli(["run", "--config", str(path)], capsys)
        assert code == 2
        assert message in err
        assert err.count("\n") == 1
    code, _, err = run_cli(["run", "--config", str(tmp_path / "missing.toml")], capsys)
    assert code == 2
    assert "does not exist" in err


def test_out_folder_with_files_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "old.txt").write_text("keep me")
    code, _, err = run_cli(["run", "--out", str(tmp_path)], capsys)
    assert code == 2
    assert "already exists and is not empty" in err


def test_run_writes_a_complete_run_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "run.toml"
    config.write_text("rounds = 5\nnum_clients = 4\nlocal-epochs = 1\n")
    out = tmp_path / "run"
    code, stdout, _ = run_cli(
        ["run", "--config", str(config), "--rounds", "2", "--out", str(out)], capsys
    )
    assert code == 0
    assert f"run written to {out}" in stdout
    assert "round   2" in stdout

    resolved = tomllib.loads((out / "config.toml").read_text())
    assert resolved["rounds"] == 2  # the flag overrides the file
    assert resolved["num_clients"] == 4
    assert resolved["local_epochs"] == 1
    assert resolved["model"] == "simple_cnn"
    assert set(resolved) <= set(FIELD_TYPES)

    history = fd.History.from_json(out / "history.json")
    assert [r.round_num for r in history.records()] == [0, 1, 2]
    accuracy = history.series("centralized_accuracy")
    assert len(accuracy) == 3
    assert all(0.0 <= a <= 1.0 for _, a in accuracy)

    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [row["round"] for row in rows] == ["0", "1", "2"]
    assert float(rows[2]["centralized_accuracy"]) == pytest.approx(accuracy[-1][1])
    assert float(rows[1]["train_loss"]) > 0

    png = (out / "curves.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 10_000

    with np.load(out / "model.npz", allow_pickle=False) as model:
        assert "conv1.weight" in model.files or len(model.files) >= 4

    # The written config reproduces the run exactly.
    again = tmp_path / "again"
    code, _, _ = run_cli(["run", "--config", str(out / "config.toml"), "--out", str(again)], capsys)
    assert code == 0
    assert fd.History.from_json(again / "history.json") == history


def test_help_explains_every_option() -> None:
    top = subprocess.run(
        [sys.executable, "-m", "federa", "--help"], capture_output=True, text=True, check=True
    )
    assert "run" in top.stdout
    run_help = subprocess.run(
        [sys.executable, "-m", "federa", "run", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for name in FIELD_TYPES:
        assert "--" + name.replace("_", "-") in run_help.stdout
    assert "--config" in run_help.stdout


def test_cli_model_names_match_the_model_registry() -> None:
    from federa.cli.config import MODELS
    from federa.torch.models import MODELS as REGISTRY

    assert tuple(sorted(REGISTRY)) == MODELS


@pytest.mark.slow
def test_embedded_default_reaches_90_percent_test_accuracy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, stdout, _ = run_cli(["run", "--quiet", "--out", str(tmp_path / "run")], capsys)
    assert code == 0
    history = fd.History.from_json(tmp_path / "run" / "history.json")
    assert len(history.rounds) == 20
    final = history.rounds[-1].centralized_metrics["accuracy"]
    assert final >= 0.90, stdout


def test_one_and_two_workers_give_identical_histories_for_a_cnn(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    histories = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        args = ["run", "--quiet", "--rounds", "2", "--fraction-train", "0.4", "--out", str(out)]
        code, _, _ = run_cli([*args, "--workers", str(workers)], capsys)
        assert code == 0
        histories.append(fd.History.from_json(out / "history.json"))
    assert histories[0] == histories[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "fedsgd"], "--strategy: unknown value 'fedsgd'"),
        (["--server-lr", "0.1"], "--server-lr does not apply to --strategy fedavg"),
        (["--strategy", "krum"], "--strategy krum needs --num-byzantine"),
        (
            ["--strategy", "krum", "--num-byzantine", "2"],
            "--strategy krum needs at least 7 clients per round, but --fraction-train 0.5 of 10",
        ),
        (["--attack", "signflip"], "--attackers must be a fraction in (0, 1), got 0"),
        (["--attackers", "0.2"], "--attackers needs --attack"),
    ],
)
def test_bad_strategy_settings_stop_before_the_first_round(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(["run", "--out", str(tmp_path / "run"), *args], capsys)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1


def test_cli_strategy_and_attack_names_match_their_registries() -> None:
    from federa.cli.config import ATTACK_NAMES, STRATEGY_NAMES
    from federa.cli.strategies import STRATEGIES
    from federa.simulation.attacks import ATTACKS

    assert tuple(sorted(STRATEGIES)) == STRATEGY_NAMES
    assert ATTACKS == ATTACK_NAMES


def test_stragglers_are_dropped_or_kept_with_partial_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = ["run", "--rounds", "2", "--num-clients", "6", "--fraction-train", "1"]
    args += ["--local-epochs", "3", "--stragglers", "0.5"]
    code, _, _ = run_cli([*args, "--out", str(tmp_path / "drop")], capsys)
    assert code == 0
    code, _, _ = run_cli([*args, "--partial-work", "--out", str(tmp_path / "keep")], capsys)
    assert code == 0
    dropped = json.loads((tmp_path / "drop" / "history.json").read_text())
    kept = json.loads((tmp_path / "keep" / "history.json").read_text())
    assert [r["num_results"] for r in dropped["rounds"]] == [3, 3]  # 3 of 6 dropped
    assert [r["num_results"] for r in kept["rounds"]] == [6, 6]
    config = tomllib.loads((tmp_path / "keep" / "config.toml").read_text())
    assert config["stragglers"] == 0.5 and config["partial_work"] is True
