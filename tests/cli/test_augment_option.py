"""`--augment` (and `augment` in a config file) switches on the clients' augmentation."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from federa.cli.config import load_toml, resolve
from federa.cli.experiment import build_experiment
from federa.cli.main import add_options
from federa.errors import ConfigError
from federa.torch.client import TorchClient


def client_augments(flags: dict[str, object], file_values: dict[str, object]) -> bool:
    cfg = resolve(file_values, {"num_clients": 2, "rounds": 1, **flags})
    client = build_experiment(cfg).client_fn(0)
    assert isinstance(client, TorchClient)
    return client.train_config.augment


def main_flags(argv: list[str]) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    add_options(parser, ["augment"])
    return vars(parser.parse_args(argv))


@pytest.mark.slow
def test_augment_is_off_by_default_and_on_with_the_flag() -> None:
    assert client_augments({}, {}) is False
    assert client_augments({"augment": True}, {}) is True
    assert main_flags(["--augment"])["augment"] is True


@pytest.mark.slow
def test_config_file_sets_augment_and_rejects_a_non_bool(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("augment = true\n", encoding="utf-8")
    assert client_augments({}, load_toml(path)) is True
    path.write_text('augment = "yes"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="augment"):
        load_toml(path)
