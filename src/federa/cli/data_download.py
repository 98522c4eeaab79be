"""`federa data download`: fetch a dataset's original files, verified by checksum."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from federa.data.download import SOURCES, download, source_files

_ParserT = TypeVar("_ParserT", bound=argparse.ArgumentParser)

# What to do with the files once they are in DIR.
_NEXT_STEPS: dict[str, str] = {
    "mnist": "train on it: federa run --dataset mnist --data-dir {dir}",
    "emnist": "train on it: federa run --dataset emnist --data-dir {dir} --emnist-split balanced",
    "cifar10": "train on it: federa run --dataset cifar10 --data-dir {dir}",
    "symbols": (
        "the operator symbols are {dir}/mdas_symbols_v1.zip; for --dataset calculator, "
        "download them into <root>/math_symbols and MNIST into <root>/mnist, then pass "
        "--data-dir <root>"
    ),
    "femnist": (
        "these are NIST SD-19's by_class/ and by_write/, not FEMNIST yet: LEAF's "
        "preprocessing builds FEMNIST from them. git clone https://github.com/TalwalkarLab/leaf, "
        "move by_class/ and by_write/ into leaf/data/femnist/data/raw_data/, run "
        "./preprocess.sh -s niid --sf 0.05 -k 0 -t sample in leaf/data/femnist (it needs numpy "
        "and pillow), then federa run --dataset femnist --data-dir leaf/data/femnist/data"
    ),
}


def add_download_parser(subparsers: argparse._SubParsersAction[_ParserT]) -> _ParserT:
    """Add `download NAME --dir DIR [--mirror URL]` to the `federa data` commands."""
    names = ", ".join(sorted(SOURCES))
    parser = subparsers.add_parser(
        "download",
        help="download a dataset's original files and verify their checksums",
        description=(
            "Download a dataset from its original public address into DIR, verify each "
            "file's checksum and unpack archives. An interrupted download resumes where it "
            "stopped when run again; files already verified are not fetched again."
        ),
    )
    parser.add_argument("name", metavar="NAME", help=f"dataset to download: one of {names}")
    parser.add_argument("--dir", required=True, metavar="DIR", help="folder to download into")
    parser.add_argument(
        "--mirror",
        metavar="URL",
        default=None,
        help="http(s) address of a mirror that replaces each file's scheme and host",
    )
    parser.set_defaults(handler="federa.cli.data_download:download_command")
    return parser


def download_command(args: argparse.Namespace) -> int:
    """Run `federa data download` with parsed arguments; return the exit status."""
    name: str = args.name
    files = source_files(name)  # ConfigError naming the choices before any output
    console = Console(highlight=False)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        tasks: dict[str, TaskID] = {}

        def on_progress(filename: str, done: int, total: int | None) -> None:
            if filename not in tasks:
                tasks[filename] = progress.add_task(filename, total=total, completed=done)
            else:
                progress.update(tasks[filename], completed=done, total=total)

        dest = download(name, args.dir, progress=on_progress, base_url=args.mirror)
    console.print(f"federa data download: {name} is in {dest}", soft_wrap=True, markup=False)
    for remote in files:
        path = Path(dest) / remote.filename
        console.print(
            f"  {path} ({path.stat().st_size:,} bytes, verified)", soft_wrap=True, markup=False
        )
    console.print(_NEXT_STEPS.get(name, "").format(dir=dest), soft_wrap=True, markup=False)
    return 0
