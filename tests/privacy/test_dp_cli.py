"""`federa run --dp ...`: the flags, the run directory's privacy record, epsilon per round."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
import tomllib

import federa as fd
from federa.cli.config import RunConfig, validate
from federa.cli.main import main
from federa.cli.privacy import resolve_dp, wrap_strategy
from federa.privacy import CentralDP, compute_epsilon
from federa.strategy import FedAvg

SMALL = [
    *("--num-clients", "4", "--fraction-train", "1.0", "--rounds", "2"),
    *("--local-epochs", "1", "--batch-size", "128"),
]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_central_dp_run_records_its_privacy_parameters_and_epsilon(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    flags = ["--dp", "central", "--noise-multiplier", "0.8", "--clip-norm", "2", "--accountant"]
    code, stdout, _ = run_cli(["run", *SMALL, *flags, "rdp", "--out", str(out)], capsys)
    assert code == 0, stdout
    assert "central DP (noise multiplier 0.8, clip 2, delta 1e-05)" in stdout
    assert "eps " in stdout

    config = tomllib.loads((out / "config.toml").read_text())
    assert config["dp"] == "central"
    assert config["noise_multiplier"] == 0.8
    assert config["clip_norm"] == 2.0
    assert config["target_delta"] == 1e-5  # min(1e-5, 4^-1.1), resolved and written
    assert config["accountant"] == "rdp"

    history = fd.History.from_json(out / "history.json")
    spent = [eps for _, eps in history.series("train_epsilon")]
    expected = [
        compute_epsilon(noise_multiplier=0.8, sampling_rate=1.0, num_steps=t, delta=1e-5)
        for t in (1, 2)
    ]
    assert spent == pytest.approx(expected)
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert float(rows[2]["train_epsilon"]) == pytest.approx(expected[1])
    assert f"epsilon {expected[1]:.3f}" in stdout

    # The written config reproduces the run, noise included.
    again = tmp_path / "again"
    code, _, _ = run_cli(["run", "--config", str(out / "config.toml"), "--out", str(again)], capsys)
    assert code == 0
    assert fd.History.from_json(again / "history.json") == history


def test_target_epsilon_sizes_the_noise_and_the_config_records_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "run"
    flags = ["--dp", "local", "--clip-norm", "1", "--target-epsilon", "6", "--target-delta", "1e-6"]
    code, stdout, _ = run_cli(["run", "--quiet", *SMALL, *flags, "--out", str(out)], capsys)
    assert code == 0, stdout
    config = tomllib.loads((out / "config.toml").read_text())
    z = config["noise_multiplier"]
    assert config["target_epsilon"] == 6.0
    assert config["target_delta"] == 1e-6
    history = fd.History.from_json(out / "history.json")
    spent = history.series("train_epsilon")
    assert [r for r, _ in spent] == [1, 2]
    assert 5.9 < spent[-1][1] <= 6.0
    assert spent[-1][1] == pytest.approx(
        compute_epsilon(noise_multiplier=z, sampling_rate=1.0, num_steps=2, delta=1e-6)
    )


CENTRAL = ["--dp", "central", "--noise-multiplier", "1", "--clip-norm", "1"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--noise-multiplier", "1"], "--noise-multiplier needs --dp central or --dp local"),
        (["--dp", "global"], "--dp: unknown value 'global'; choose one of: central, local"),
        (["--dp", "central", "--clip-norm", "1"], "--dp central needs --noise-multiplier"),
        (["--dp", "central", "--noise-multiplier", "1"], "--dp central needs --clip-norm"),
        (
            ["--dp", "local", "--noise-multiplier", "1", "--adaptive-clip"],
            "--adaptive-clip applies to --dp central only",
        ),
        ([*CENTRAL, "--target-delta", "2"], "--target-delta must be in (0, 1), got 2"),
        ([*CENTRAL, "--target-epsilon", "0"], "--target-epsilon must be a positive number"),
        (
            [*CENTRAL, "--strategy", "krum", "--num-byzantine", "1", "--fraction-train", "1"],
            "CentralDP cannot wrap Krum",
        ),
    ],
)
def test_bad_dp_settings_give_one_clear_line(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(["run", "--out", str(tmp_path / "run"), *args], capsys)
    assert code == 2
    assert err.startswith("federa: error: ")
    assert message in err
    assert err.count("\n") == 1, err


def test_adaptive_clipping_config_resolves_to_a_recorded_start_and_an_adaptive_strategy() -> None:
    cfg = validate(RunConfig(dp="central", adaptive_clip=True, noise_multiplier=0.5))
    resolved = resolve_dp(replace(cfg, num_clients=3))
    assert resolved.clip_norm == 0.1  # Andrew et al.'s C_0, written to config.toml
    assert resolved.target_delta == 1e-5  # min(1e-5, 3^-1.1)
    assert resolved.to_toml_dict()["adaptive_clip"] is True
    strategy = wrap_strategy(resolved, FedAvg())
    assert isinstance(strategy, CentralDP)
    assert strategy.adaptive is not None
    assert strategy.clip_norm == 0.1
