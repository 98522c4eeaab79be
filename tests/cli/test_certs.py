import argparse
import itertools
import shlex
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from federa.cli.certs import add_certs_parser, certs_command
from federa.errors import ConfigError
from federa.transport.grpc.tls import channel_credentials, server_credentials


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="federa")
    add_certs_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def flag_values(line: str) -> dict[str, Path]:
    words = shlex.split(line)
    return {flag: Path(value) for flag, value in itertools.pairwise(words) if flag.startswith("--")}


def test_certs_parser_defaults_and_repeated_flags(tmp_path: Path) -> None:
    args = parse(["certs", "--out", str(tmp_path)])
    assert (args.host, args.client, args.days, args.force) == (None, None, 365, False)
    assert args.handler == "federa.cli.certs:certs_command"
    args = parse(
        ["certs", "--out", "d", "--host", "a.example", "--host", "10.0.0.5", "--client", "x"]
    )
    assert args.host == ["a.example", "10.0.0.5"]
    assert args.client == ["x"]


def test_certs_help_says_the_certificates_are_for_testing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse(["certs", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "for testing" in text
    assert "organisation's CA" in text


def test_certs_command_writes_files_and_prints_working_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "my certs"  # a space: the printed flags must be quoted for a shell
    args = argparse.Namespace(
        out=str(out), host=["server.example.org"], client=["alice", "bob"], days=7, force=False
    )
    assert certs_command(args) == 0
    printed = capsys.readouterr().out
    assert "for testing only" in printed
    names = ["ca", "server", "alice", "bob"]
    for name in names:
        assert str(out / f"{name}.pem") in printed
        assert stat.S_IMODE((out / f"{name}.key").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((out / "alice.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    san = x509.load_pem_x509_certificate((out / "server.pem").read_bytes()).extensions
    dns = san.get_extension_for_class(x509.SubjectAlternativeName).value
    assert dns.get_values_for_type(x509.DNSName) == ["server.example.org"]

    lines = [line.strip() for line in printed.splitlines()]
    servers = [flag_values(line) for line in lines if line.startswith("federa server ")]
    clients = [flag_values(line) for line in lines if line.startswith("federa client ")]
    mutual = next(flags for flags in servers if "--tls-client-ca" in flags)
    assert mutual == {
        "--tls-cert": out / "server.pem",
        "--tls-key": out / "server.key",
        "--tls-client-ca": out / "ca.pem",
    }
    assert {flags.get("--tls-cert") for flags in clients} == {
        out / "alice.pem",
        out / "bob.pem",
        None,
    }
    # Every printed command line names files that make working credentials.
    for flags in servers:
        server_credentials(flags["--tls-cert"], flags["--tls-key"], flags.get("--tls-client-ca"))
    for flags in clients:
        channel_credentials(flags["--tls-ca"], flags.get("--tls-cert"), flags.get("--tls-key"))


def test_certs_command_uses_default_hosts_and_client(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert certs_command(parse(["certs", "--out", str(tmp_path)])) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ca.key",
        "ca.pem",
        "client-0.key",
        "client-0.pem",
        "server.key",
        "server.pem",
    ]
    assert "localhost, 127.0.0.1" in capsys.readouterr().out


def test_certs_command_refuses_to_replace_a_ca_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs_command(parse(["certs", "--out", str(tmp_path)]))
    ca = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(ConfigError, match="--force"):
        certs_command(parse(["certs", "--out", str(tmp_path)]))
    assert (tmp_path / "ca.pem").read_bytes() == ca
    assert certs_command(parse(["certs", "--out", str(tmp_path), "--force"])) == 0
    assert (tmp_path / "ca.pem").read_bytes() != ca


def test_certs_command_rejects_a_host_with_a_port(tmp_path: Path) -> None:
    args = parse(["certs", "--out", str(tmp_path / "x"), "--host", "server:9092"])
    with pytest.raises(ConfigError, match="'server:9092' is neither a DNS name nor an IP"):
        certs_command(args)
    assert not (tmp_path / "x").exists()
