"""`federa predict`: read a handwritten expression from an image with a trained run's model."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TypeVar

__all__ = ["add_predict_parser", "predict_command"]

_ParserT = TypeVar("_ParserT", bound=argparse.ArgumentParser)


def add_predict_parser(subparsers: argparse._SubParsersAction[_ParserT]) -> None:
    """Add `predict IMAGE --run RUN_DIR [--annotate PNG] [--json]`."""
    parser = subparsers.add_parser(
        "predict",
        help="read and compute a handwritten expression in a photo or scan",
        description=(
            "Find the handwritten symbols in IMAGE (one line: digits and + - x / ÷ . "
            "operators), classify each with the calculator model of RUN_DIR (from "
            "federa run --dataset calculator), print what was read with each symbol's "
            "confidence, and compute it exactly. Exits 1 when the expression cannot be "
            "computed (malformed, or a division by zero)."
        ),
    )
    parser.add_argument("image", metavar="IMAGE", help="photo or scan (PNG, JPEG, ...)")
    parser.add_argument(
        "--run", required=True, metavar="RUN_DIR", help="run directory with model.safetensors"
    )
    parser.add_argument(
        "--annotate", metavar="PNG", help="also write the image with boxes and labels here"
    )
    parser.add_argument("--json", action="store_true", help="print the reading as one JSON line")
    parser.set_defaults(handler="federa.cli.predict:predict_command")


def predict_command(args: argparse.Namespace) -> int:
    """Run `federa predict` with parsed arguments; return the exit status."""
    from federa.apps.calculator import (
        annotate,
        load_image,
        load_recognizer,
        read_expression,
        write_png,
    )

    image = load_image(args.image)
    recognizer = load_recognizer(args.run)
    reading = read_expression(image, recognizer)
    if args.annotate:
        write_png(args.annotate, annotate(image, reading))
    if args.json:
        print(json.dumps(reading.to_dict(), ensure_ascii=False))
    else:
        print(f"read {reading.text!r} ({len(reading.symbols)} symbols)")
        for i, symbol in enumerate(reading.symbols, start=1):
            x, y, w, h = symbol.box
            print(f"  {i:>2}  {symbol.char}  {symbol.confidence:6.1%}  box x={x} y={y} w={w} h={h}")
        if reading.error is None:
            print(f"= {reading.value_text}")
    if args.annotate and not args.json:
        print(f"annotated image written to {args.annotate}")
    if reading.error is not None:
        print(f"federa: error: {reading.error}", file=sys.stderr)
        return 1
    return 0
