import argparse
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from federa.cli.data_download import add_download_parser, download_command
from federa.data.download import SOURCES, RemoteFile
from federa.errors import ConfigError, FederaError
from tests.data.test_download import FAKE_HOST, LocalServer, Served, running_server


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with running_server() as srv:
        yield srv


@pytest.fixture
def served_source(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> bytes:
    content = bytes(range(256)) * 4000
    server.files["/sets/a.bin"] = Served(content)
    remote = RemoteFile(
        url=FAKE_HOST + "/sets/a.bin",
        filename="a.bin",
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
    )
    monkeypatch.setitem(SOURCES, "mnist", (remote,))
    return content


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="federa data")
    add_download_parser(parser.add_subparsers(dest="data_command"))
    return parser.parse_args(argv)


def test_download_command_fetches_the_files_and_says_where_they_are(
    server: LocalServer,
    served_source: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dest = tmp_path / "mnist"
    args = parse(["download", "mnist", "--dir", str(dest), "--mirror", server.base_url])
    assert args.handler == "federa.cli.data_download:download_command"
    assert download_command(args) == 0
    assert (dest / "a.bin").read_bytes() == served_source
    out = capsys.readouterr().out
    assert f"mnist is in {dest}" in out
    assert f"{dest / 'a.bin'} (1,024,000 bytes, verified)" in out
    assert f"federa run --dataset mnist --data-dir {dest}" in out


def test_download_command_rejects_an_unknown_name_with_the_choices(tmp_path: Path) -> None:
    args = parse(["download", "imagenet", "--dir", str(tmp_path)])
    choices = re.escape(", ".join(sorted(SOURCES)))
    with pytest.raises(ConfigError, match=f"unknown dataset 'imagenet' .*choose one of: {choices}"):
        download_command(args)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_raises_a_federa_error_naming_the_url(
    server: LocalServer, served_source: bytes, tmp_path: Path
) -> None:
    del server.files["/sets/a.bin"]
    args = parse(["download", "mnist", "--dir", str(tmp_path), "--mirror", server.base_url])
    url = re.escape(f"{server.base_url}/sets/a.bin")
    with pytest.raises(FederaError, match=f"{url} answered HTTP 404"):
        download_command(args)
    assert list(tmp_path.iterdir()) == []
