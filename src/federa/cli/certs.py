"""`federa certs`: write a test CA, server and client certificates for TLS trials."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TypeVar

from federa.transport.grpc.tls import make_test_pki

_ParserT = TypeVar("_ParserT", bound=argparse.ArgumentParser)

_DEFAULT_HOSTS = ("localhost", "127.0.0.1")
_DEFAULT_CLIENTS = ("client-0",)


def add_certs_parser(subparsers: argparse._SubParsersAction[_ParserT]) -> _ParserT:
    """Add `certs --out DIR [--host H ...] [--client NAME ...] [--days N] [--force]`."""
    parser = subparsers.add_parser(
        "certs",
        help="write test TLS certificates (for testing; production should use your CA)",
        description=(
            "Write a self-signed test CA, a server certificate and one certificate per client "
            "into DIR, and print the `federa server` and `federa client` flags that use them. "
            "These are for testing and trials: in production, use certificates from your "
            "organisation's CA. Private keys are written unencrypted with mode 600."
        ),
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write into")
    parser.add_argument(
        "--host",
        action="append",
        default=None,
        metavar="H",
        help=(
            "DNS name or IP address clients use to reach the server; repeat for several "
            f"[default: {' '.join(_DEFAULT_HOSTS)}]"
        ),
    )
    parser.add_argument(
        "--client",
        action="append",
        default=None,
        metavar="NAME",
        help=(
            "client certificate to write (its common name, which the server sees); repeat "
            f"for several [default: {' '.join(_DEFAULT_CLIENTS)}]"
        ),
    )
    parser.add_argument(
        "--days", type=int, default=365, metavar="N", help="days the certificates are valid"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace certificates already in DIR (ones signed by the old CA stop working)",
    )
    parser.set_defaults(handler="federa.cli.certs:certs_command")
    return parser


def certs_command(args: argparse.Namespace) -> int:
    """Run `federa certs` with parsed arguments; return the exit status."""
    out = Path(args.out)
    hosts: list[str] = args.host or list(_DEFAULT_HOSTS)
    clients: list[str] = args.client or list(_DEFAULT_CLIENTS)
    paths = make_test_pki(
        out,
        hosts=hosts,
        clients=clients,
        days=args.days,
        overwrite=bool(getattr(args, "force", False)),
    )
    q = _quote
    count = f"{len(clients)} client certificate{'s' if len(clients) != 1 else ''}"
    print(f"federa certs: wrote a test CA, a server certificate and {count} to {out}")
    print("  for testing only: in production, use your organisation's CA")
    rows = [
        (paths["ca_cert"], "CA certificate: give it to the server and to every client"),
        (paths["ca_key"], "CA private key: signs certificates; keep it secret"),
        (paths["server_cert"], f"server certificate for {', '.join(hosts)}"),
        (paths["server_key"], "server private key (mode 600)"),
    ]
    for name in clients:
        rows.append((paths[f"{name}_cert"], f"client certificate, common name {name}"))
        rows.append((paths[f"{name}_key"], f"{name}'s private key (mode 600)"))
    width = max(len(str(path)) for path, _ in rows)
    for path, what in rows:
        print(f"  {path!s:<{width}}  {what}")
    print(f"valid for {args.days} days")

    server = (
        f"federa server --tls-cert {q(paths['server_cert'])} --tls-key {q(paths['server_key'])}"
    )
    client = f"federa client --tls-ca {q(paths['ca_cert'])}"
    if clients:
        print("mutual TLS (the server accepts only clients with a certificate from this CA):")
        print(f"  {server} --tls-client-ca {q(paths['ca_cert'])}")
        for name in clients:
            key = paths[f"{name}_key"]
            print(f"  {client} --tls-cert {q(paths[f'{name}_cert'])} --tls-key {q(key)}")
    print("TLS without client certificates (any client may connect):")
    print(f"  {server}")
    print(f"  {client}")
    return 0


def _quote(path: Path) -> str:
    return shlex.quote(str(path))
