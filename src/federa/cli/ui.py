"""`federa ui`: serve the handwriting calculator page for a trained run on this machine."""

from __future__ import annotations

import argparse
import errno
import sys
from typing import TypeVar

_ParserT = TypeVar("_ParserT", bound=argparse.ArgumentParser)


def add_ui_parser(subparsers: argparse._SubParsersAction[_ParserT]) -> _ParserT:
    """Add `ui --run RUN_DIR [--host H] [--port N]`."""
    parser = subparsers.add_parser(
        "ui",
        help="serve a web page to draw or upload an expression and see it computed",
        description=(
            "Serve a small web page where you write an arithmetic expression with the mouse, "
            "a pen or a finger (or upload a photo of one) and see it read, boxed and computed "
            "by the calculator model of RUN_DIR. Serves until Ctrl-C."
        ),
    )
    parser.add_argument(
        "--run",
        required=True,
        metavar="RUN_DIR",
        help="run directory holding the trained calculator model (model.safetensors)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on [default: 127.0.0.1, this machine only]",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port to listen on [default: 0, a free one]"
    )
    parser.set_defaults(handler="federa.cli.ui:ui_command")
    return parser


def ui_command(args: argparse.Namespace) -> int:
    """Load the run's model, serve the page and print its address; stop on Ctrl-C."""
    from federa.apps.calculator.web import CalculatorServer, reader_from_run
    from federa.errors import ConfigError

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 0..65535 (0 picks a free port), got {args.port}")
    reader = reader_from_run(args.run)
    try:
        server = CalculatorServer(reader, host=args.host, port=args.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is in use; pass another --port, or --port 0 for a free one"
        else:
            reason = f"{exc.strerror or exc}; pass an address of this machine with --host"
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {reason}") from None
    with server:
        print(f"federa ui: serving {args.run} at {server.url} (Ctrl-C to stop)", flush=True)
        if server.host not in ("127.0.0.1", "::1", "localhost"):
            print(
                f"federa ui: listening on {server.host}: other machines can reach this page",
                file=sys.stderr,
            )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("federa ui: stopped", file=sys.stderr)
    return 0
