"""TLS for the gRPC transport: credentials from PEM files, and a throwaway test PKI.

The server presents a certificate; clients verify it against a CA (or the system roots).
With a client CA on the server, every client must present a certificate issued by that CA
(mutual TLS), and the server can tell clients apart by their certificate's common name.

`make_test_pki` writes a CA, a server certificate and client certificates for tests and
trials on one's own machines. Production deployments should use the organisation's CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import grpc
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federa.errors import ConfigError

__all__ = [
    "TlsBytes",
    "TlsFiles",
    "channel_credentials",
    "make_test_pki",
    "peer_common_name",
    "server_credentials",
]

# A client name becomes a file name and a certificate common name (at most 64 characters).
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DNS_NAME = re.compile(r"(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_-]+)*\.?")
_RESERVED_NAMES = frozenset({"ca", "server"})
# Certificates start a little in the past so that a clock slightly behind still accepts them.
_CLOCK_SKEW = dt.timedelta(minutes=5)


class TlsBytes(NamedTuple):
    """The contents of the PEM files of a `TlsFiles`, None where no file was given."""

    ca: bytes | None
    cert: bytes | None
    key: bytes | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsFiles:
    """Paths of the PEM files one side of a TLS connection needs.

    Attributes:
        ca: certificates to trust: the server's CA on a client (None: the system roots),
            the clients' CA on a server (None: clients are not asked for certificates).
        cert: this side's certificate chain, leaf first.
        key: this side's private key (unencrypted PEM).
    """

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def load(self, *, ca_flag: str = "--tls-ca") -> TlsBytes:
        """Read the files; an unreadable one raises ConfigError naming it and its flag.

        Args:
            ca_flag: the command-line flag that set `ca`, for error messages
                (`--tls-client-ca` on a server).
        """
        return TlsBytes(
            ca=_read_optional(self.ca, ca_flag),
            cert=_read_optional(self.cert, "--tls-cert"),
            key=_read_optional(self.key, "--tls-key"),
        )


def server_credentials(
    cert: Path, key: Path, client_ca: Path | None = None
) -> grpc.ServerCredentials:
    """Return TLS credentials for a server; with `client_ca`, require client certificates.

    Args:
        cert: the server's certificate chain (PEM, leaf first).
        key: the server's private key (unencrypted PEM); it must match `cert`.
        client_ca: CA certificates (PEM) that issue client certificates. When given, a client
            must present a certificate issued by one of them (mutual TLS).

    Raises:
        ConfigError: a file is unreadable, not PEM, expired, or the key does not match.
    """
    cert_pem, key_pem = _load_pair(cert, key)
    ca_pem = None
    if client_ca is not None:
        ca_pem = _read(client_ca, "--tls-client-ca")
        _parse_certificates(ca_pem, client_ca, "--tls-client-ca")
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)],
        root_certificates=ca_pem,
        require_client_auth=ca_pem is not None,
    )


def channel_credentials(
    ca: Path | None, cert: Path | None = None, key: Path | None = None
) -> grpc.ChannelCredentials:
    """Return TLS credentials for a client; with `cert` and `key`, for mutual TLS.

    Args:
        ca: CA certificates (PEM) to verify the server against; None uses the system roots.
        cert: the client's certificate chain (PEM, leaf first), given together with `key`.
        key: the client's private key (unencrypted PEM); it must match `cert`.

    Raises:
        ConfigError: only one of `cert` and `key` is given, a file is unreadable, not PEM,
            expired, or the key does not match the certificate.
    """
    if (cert is None) != (key is None):
        raise ConfigError(
            "--tls-cert and --tls-key go together: give both for mutual TLS, or neither"
        )
    ca_pem = None
    if ca is not None:
        ca_pem = _read(ca, "--tls-ca")
        _parse_certificates(ca_pem, ca, "--tls-ca")
    cert_pem = key_pem = None
    if cert is not None and key is not None:
        cert_pem, key_pem = _load_pair(cert, key)
    return grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
    )


def peer_common_name(auth_context: Mapping[str, Sequence[bytes]]) -> str | None:
    """Return the common name of the peer's certificate, or None if it presented none.

    Args:
        auth_context: what `grpc.ServicerContext.auth_context()` returns.
    """
    values = auth_context.get("x509_common_name")
    if not values:
        return None
    return values[0].decode("utf-8", errors="replace")


def make_test_pki(
    out_dir: Path,
    *,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    clients: Sequence[str] = ("client-0",),
    days: int = 365,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write a test CA, a server certificate and client certificates into `out_dir`.

    Writes `ca.pem`/`ca.key`, `server.pem`/`server.key` (valid for `hosts`) and
    `<name>.pem`/`<name>.key` per client (common name `name`). Keys are EC P-256, written
    unencrypted with mode 0o600; every file is replaced atomically. For tests and trials
    only: production deployments should use the organisation's CA.

    Args:
        out_dir: folder to write into; created if missing.
        hosts: DNS names and IP addresses clients use to reach the server.
        clients: client names, each a letter or digit then up to 63 of `A-Za-z0-9._-`.
        days: how long the certificates are valid.
        overwrite: replace files already in `out_dir` (certificates signed by an old CA
            stop working).

    Returns:
        Paths by logical name: `ca_cert`, `ca_key`, `server_cert`, `server_key`, and
        `<name>_cert`, `<name>_key` for each client.

    Raises:
        ConfigError: a host, client name or `days` is invalid, or files exist and
            `overwrite` is false.
    """
    sans = _subject_alt_names(hosts)
    _check_client_names(clients)
    if days < 1:
        raise ConfigError(f"certificates must be valid for at least 1 day, not {days}")
    now = dt.datetime.now(dt.timezone.utc)
    validity = (now - _CLOCK_SKEW, now + dt.timedelta(days=days))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue_ca(ca_key, validity)
    issued: dict[str, tuple[x509.Certificate, ec.EllipticCurvePrivateKey]] = {
        "ca": (ca_cert, ca_key),
        "server": _issue_leaf(
            ca_cert,
            ca_key,
            validity,
            common_name="federa test server",
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            sans=sans,
        ),
    }
    for name in clients:
        issued[name] = _issue_leaf(
            ca_cert, ca_key, validity, common_name=name, usage=ExtendedKeyUsageOID.CLIENT_AUTH
        )

    paths: dict[str, Path] = {}
    for name in issued:
        paths[f"{name}_cert"] = out_dir / f"{name}.pem"
        paths[f"{name}_key"] = out_dir / f"{name}.key"
    existing = [p.name for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise ConfigError(
            f"{out_dir} already holds {', '.join(existing)}; choose another --out folder or "
            "pass --force to replace them (certificates signed by the old CA stop working)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (cert, key) in issued.items():
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_atomic(paths[f"{name}_key"], key_pem, mode=0o600)
        _write_atomic(paths[f"{name}_cert"], cert.public_bytes(serialization.Encoding.PEM))
    return paths


def _read(path: Path, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"cannot read {flag} file {path}: {reason}") from exc


def _read_optional(path: Path | None, flag: str) -> bytes | None:
    return None if path is None else _read(path, flag)


def _parse_certificates(pem: bytes, path: Path, flag: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise ConfigError(
            f"{flag} file {path} is not a PEM certificate (expected '-----BEGIN CERTIFICATE-----')"
        ) from exc
    return certs


def _load_pair(cert: Path, key: Path) -> tuple[bytes, bytes]:
    """Read a certificate chain and its private key; check both parse and belong together."""
    cert_pem = _read(cert, "--tls-cert")
    key_pem = _read(key, "--tls-key")
    leaf = _parse_certificates(cert_pem, cert, "--tls-cert")[0]
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as exc:  # cryptography's way of saying "this key needs a password"
        raise ConfigError(
            f"--tls-key file {key} is encrypted; give an unencrypted PEM private key"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(
            f"--tls-key file {key} is not a PEM private key "
            "(expected '-----BEGIN PRIVATE KEY-----' or similar)"
        ) from exc
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if private_key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise ConfigError(
            f"--tls-key file {key} does not match the certificate in --tls-cert file {cert}"
        )
    if leaf.not_valid_after_utc < dt.datetime.now(dt.timezone.utc):
        raise ConfigError(
            f"--tls-cert file {cert} expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    return cert_pem, key_pem


def _subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    if not hosts:
        raise ConfigError("give at least one host name or IP address for the server certificate")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if len(host) > 253 or not _DNS_NAME.fullmatch(host):
            raise ConfigError(
                f"host {host!r} is neither a DNS name nor an IP address "
                "(give it without a port, scheme or brackets, e.g. server.example.org or 10.0.0.5)"
            )
        names.append(x509.DNSName(host))
    return names


def _check_client_names(clients: Sequence[str]) -> None:
    seen: set[str] = set()
    for name in clients:
        if not _CLIENT_NAME.fullmatch(name):
            raise ConfigError(
                f"client name {name!r} must start with a letter or digit and have at most "
                "64 of A-Z a-z 0-9 . _ -"
            )
        if name in _RESERVED_NAMES:
            raise ConfigError(f"client name {name!r} is taken by the CA or server files")
        if name in seen:
            raise ConfigError(f"client name {name!r} is given twice")
        seen.add(name)


def _builder(
    subject: str,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    validity: tuple[dt.datetime, dt.datetime],
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _issue_ca(
    key: ec.EllipticCurvePrivateKey, validity: tuple[dt.datetime, dt.datetime]
) -> x509.Certificate:
    name = "federa test CA"
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        _builder(name, issuer, key.public_key(), validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return builder.sign(key, hashes.SHA256())


def _issue_leaf(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    validity: tuple[dt.datetime, dt.datetime],
    *,
    common_name: str,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _builder(common_name, ca_cert.subject, key.public_key(), validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temporary file in the same folder, created with `mode`."""
    # mkstemp creates the file 0o600, so a key is never readable by others, even briefly.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
