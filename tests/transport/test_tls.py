import ipaddress
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federa.errors import ConfigError
from federa.transport.grpc.tls import (
    TlsFiles,
    channel_credentials,
    make_test_pki,
    peer_common_name,
    server_credentials,
)

SERVICE = "federa.test.Echo"
METHOD = f"/{SERVICE}/Echo"
TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_test_pki(tmp_path_factory.mktemp("pki"), clients=("client-0", "client-1"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_test_pki(tmp_path_factory.mktemp("other-pki"))


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


@dataclass
class EchoServer:
    port: int
    peers: list[str | None] = field(default_factory=list)


@dataclass
class Servers:
    """Starts echo servers on 127.0.0.1 and stops every one of them."""

    started: list[tuple[Any, ThreadPoolExecutor]] = field(default_factory=list)

    def start(self, creds: grpc.ServerCredentials) -> EchoServer:
        echo = EchoServer(port=0)

        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            echo.peers.append(peer_common_name(context.auth_context()))
            return b"echo:" + request

        handler = grpc.method_handlers_generic_handler(
            SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(handle)}
        )
        pool = ThreadPoolExecutor(max_workers=2)
        server = grpc.server(pool)
        self.started.append((server, pool))
        server.add_generic_rpc_handlers((handler,))
        echo.port = server.add_secure_port("127.0.0.1:0", creds)
        assert echo.port != 0, "could not bind a port on 127.0.0.1"
        server.start()
        return echo

    def stop_all(self) -> None:
        for server, pool in self.started:
            server.stop(0).wait()
            pool.shutdown(wait=True)


@pytest.fixture
def servers() -> Iterator[Servers]:
    running = Servers()
    try:
        yield running
    finally:
        running.stop_all()


def call(
    port: int, creds: grpc.ChannelCredentials, options: tuple[tuple[str, str], ...] = ()
) -> bytes:
    with grpc.secure_channel(f"127.0.0.1:{port}", creds, options=options) as channel:
        echo = channel.unary_unary(METHOD)
        response: bytes = echo(b"hello", timeout=TIMEOUT_S)
        return response


def assert_refused(port: int, creds: grpc.ChannelCredentials) -> None:
    with pytest.raises(grpc.RpcError) as info:
        call(port, creds)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


# make_test_pki


def test_make_test_pki_writes_a_ca_that_signs_server_and_client_certificates(
    pki: dict[str, Path],
) -> None:
    ca = load_cert(pki["ca_cert"])
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for name in ("server_cert", "client-0_cert", "client-1_cert"):
        cert = load_cert(pki[name])
        cert.verify_directly_issued_by(ca)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_make_test_pki_server_certificate_names_dns_hosts_and_ip_addresses(
    pki: dict[str, Path],
) -> None:
    server = load_cert(pki["server_cert"])
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_make_test_pki_client_certificates_carry_name_and_client_auth(
    pki: dict[str, Path],
) -> None:
    for name in ("client-0", "client-1"):
        cert = load_cert(pki[f"{name}_cert"])
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        assert [a.value for a in cn] == [name]
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert pki[f"{name}_cert"].name == f"{name}.pem"


def test_make_test_pki_writes_private_keys_readable_by_owner_only(pki: dict[str, Path]) -> None:
    keys = [path for name, path in pki.items() if name.endswith("_key")]
    assert len(keys) == 4
    for path in keys:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert key.public_key() == load_cert(path.with_suffix(".pem")).public_key()
    assert not [p for p in pki["ca_cert"].parent.iterdir() if p.name.endswith(".tmp")]


def test_make_test_pki_certificates_last_the_given_days(tmp_path: Path) -> None:
    paths = make_test_pki(tmp_path, days=30)
    cert = load_cert(paths["server_cert"])
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 30 * 86400 <= lifetime.total_seconds() <= 30 * 86400 + 3600


def test_make_test_pki_accepts_ipv6_and_wildcard_hosts(tmp_path: Path) -> None:
    paths = make_test_pki(tmp_path, hosts=("::1", "*.example.org"), clients=())
    san = load_cert(paths["server_cert"]).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]
    assert san.value.get_values_for_type(x509.DNSName) == ["*.example.org"]
    assert sorted(paths) == ["ca_cert", "ca_key", "server_cert", "server_key"]


def test_make_test_pki_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    first = make_test_pki(tmp_path)
    old_ca = first["ca_cert"].read_bytes()
    with pytest.raises(ConfigError, match=r"already holds ca\.pem"):
        make_test_pki(tmp_path)
    assert first["ca_cert"].read_bytes() == old_ca
    make_test_pki(tmp_path, overwrite=True)
    assert first["ca_cert"].read_bytes() != old_ca


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hosts": ()}, "at least one host"),
        ({"hosts": ("localhost:9092",)}, "neither a DNS name nor an IP address"),
        ({"hosts": ("[::1]",)}, "neither a DNS name nor an IP address"),
        ({"clients": ("../evil",)}, "client name '../evil'"),
        ({"clients": ("server",)}, "taken by the CA or server"),
        ({"clients": ("a", "a")}, "given twice"),
        ({"days": 0}, "at least 1 day"),
    ],
)
def test_make_test_pki_rejects_bad_arguments_before_writing(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    out = tmp_path / "pki"
    with pytest.raises(ConfigError, match=message):
        make_test_pki(out, **kwargs)
    assert not out.exists()


# credentials: file checks


def test_server_credentials_rejects_a_key_that_does_not_match_the_certificate(
    pki: dict[str, Path],
) -> None:
    with pytest.raises(ConfigError, match=r"--tls-key file .*client-0\.key does not match"):
        server_credentials(pki["server_cert"], pki["client-0_key"])


def test_channel_credentials_rejects_a_key_that_does_not_match_the_certificate(
    pki: dict[str, Path],
) -> None:
    with pytest.raises(ConfigError, match="does not match"):
        channel_credentials(pki["ca_cert"], pki["client-0_cert"], pki["client-1_key"])


def test_credentials_reject_files_that_are_not_pem(pki: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"--tls-cert file .*junk\.pem is not a PEM certificate"):
        server_credentials(junk, pki["server_key"])
    with pytest.raises(ConfigError, match=r"--tls-key file .*junk\.pem is not a PEM private key"):
        server_credentials(pki["server_cert"], junk)
    with pytest.raises(ConfigError, match="--tls-client-ca file"):
        server_credentials(pki["server_cert"], pki["server_key"], client_ca=junk)
    with pytest.raises(ConfigError, match="--tls-ca file"):
        channel_credentials(junk)


def test_credentials_name_the_flag_of_a_missing_file(pki: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=r"cannot read --tls-cert file .*nope\.pem"):
        server_credentials(missing, pki["server_key"])
    with pytest.raises(ConfigError, match="cannot read --tls-ca file"):
        channel_credentials(missing)


def test_credentials_reject_an_encrypted_key(pki: dict[str, Path], tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki["server_key"].read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError, match="is encrypted"):
        server_credentials(pki["server_cert"], encrypted)


@pytest.mark.parametrize("given", ["cert", "key"])
def test_channel_credentials_needs_cert_and_key_together(pki: dict[str, Path], given: str) -> None:
    kwargs = {given: pki[f"client-0_{given}"]}
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key go together"):
        channel_credentials(pki["ca_cert"], **kwargs)


def test_tls_files_load_reads_given_files_and_names_the_flag_of_missing_ones(
    pki: dict[str, Path], tmp_path: Path
) -> None:
    loaded = TlsFiles(ca=pki["ca_cert"], cert=None, key=pki["server_key"]).load()
    assert loaded.ca == pki["ca_cert"].read_bytes()
    assert loaded.cert is None
    assert loaded.key == pki["server_key"].read_bytes()
    with pytest.raises(ConfigError, match=r"--tls-client-ca file .*gone\.pem"):
        TlsFiles(ca=tmp_path / "gone.pem", cert=None, key=None).load(ca_flag="--tls-client-ca")


def test_peer_common_name_reads_x509_common_name() -> None:
    assert peer_common_name({"x509_common_name": [b"client-7"]}) == "client-7"
    assert peer_common_name({"transport_security_type": [b"ssl"]}) is None
    assert peer_common_name({}) is None


# credentials: real connections on 127.0.0.1


def test_tls_round_trip_without_client_certificate(pki: dict[str, Path], servers: Servers) -> None:
    server = servers.start(server_credentials(pki["server_cert"], pki["server_key"]))
    assert call(server.port, channel_credentials(pki["ca_cert"])) == b"echo:hello"
    assert server.peers == [None]


def test_tls_server_name_is_checked_against_the_dns_san(
    pki: dict[str, Path], servers: Servers
) -> None:
    server = servers.start(server_credentials(pki["server_cert"], pki["server_key"]))
    creds = channel_credentials(pki["ca_cert"])
    good = (("grpc.ssl_target_name_override", "localhost"),)
    assert call(server.port, creds, good) == b"echo:hello"
    bad = (("grpc.ssl_target_name_override", "elsewhere.example.org"),)
    with pytest.raises(grpc.RpcError) as info:
        call(server.port, creds, bad)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_round_trip_tells_the_server_the_client_name(
    pki: dict[str, Path], servers: Servers
) -> None:
    creds = server_credentials(pki["server_cert"], pki["server_key"], client_ca=pki["ca_cert"])
    server = servers.start(creds)
    for name in ("client-0", "client-1"):
        client = channel_credentials(pki["ca_cert"], pki[f"{name}_cert"], pki[f"{name}_key"])
        assert call(server.port, client) == b"echo:hello"
    assert server.peers == ["client-0", "client-1"]


def test_mutual_tls_refuses_a_client_without_a_certificate(
    pki: dict[str, Path], servers: Servers
) -> None:
    creds = server_credentials(pki["server_cert"], pki["server_key"], client_ca=pki["ca_cert"])
    server = servers.start(creds)
    assert_refused(server.port, channel_credentials(pki["ca_cert"]))
    assert server.peers == []


def test_mutual_tls_refuses_a_client_certificate_from_another_ca(
    pki: dict[str, Path], other_pki: dict[str, Path], servers: Servers
) -> None:
    creds = server_credentials(pki["server_cert"], pki["server_key"], client_ca=pki["ca_cert"])
    server = servers.start(creds)
    stranger = channel_credentials(
        pki["ca_cert"], other_pki["client-0_cert"], other_pki["client-0_key"]
    )
    assert_refused(server.port, stranger)
    assert server.peers == []


def test_client_trusting_another_ca_refuses_the_server(
    pki: dict[str, Path], other_pki: dict[str, Path], servers: Servers
) -> None:
    server = servers.start(server_credentials(pki["server_cert"], pki["server_key"]))
    assert_refused(server.port, channel_credentials(other_pki["ca_cert"]))
    assert server.peers == []


def test_server_refuses_plaintext_clients(pki: dict[str, Path], servers: Servers) -> None:
    server = servers.start(server_credentials(pki["server_cert"], pki["server_key"]))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        echo = channel.unary_unary(METHOD)
        with pytest.raises(grpc.RpcError) as info:
            echo(b"hello", timeout=TIMEOUT_S)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert server.peers == []
