"""Seconds to load the real datasets from disk (goal: all of MNIST from gzip in under 2 s).

Run: python bench/data_load.py [--data-root ../shared/data]
Prints one JSON line. Each figure is the best of --repeat loads in this process.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from federa.data import DatasetSplit, load_calculator, load_femnist, load_mnist, load_symbols

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def best_of(repeat: int, load: Callable[[], DatasetSplit]) -> tuple[float, DatasetSplit]:
    times, split = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        split = load()
        times.append(time.perf_counter() - start)
    assert split is not None
    return min(times), split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    root: Path = args.data_root
    out: dict[str, object] = {"bench": "data_load", "data_root": str(root)}
    jobs: dict[str, tuple[Path, Callable[[], DatasetSplit]]] = {
        "mnist": (root / "mnist", lambda: load_mnist(root / "mnist")),
        "femnist_leaf_torch": (
            root / "femnist" / "slz-ai__leaf-torch",
            lambda: load_femnist(root / "femnist" / "slz-ai__leaf-torch"),
        ),
        "symbols": (
            root / "math_symbols" / "mdas_symbols_v1.zip",
            lambda: load_symbols(root / "math_symbols" / "mdas_symbols_v1.zip"),
        ),
        "calculator": (
            root / "math_symbols",
            lambda: load_calculator(root / "mnist", root / "math_symbols" / "mdas_symbols_v1.zip"),
        ),
    }
    for name, (path, load) in jobs.items():
        if not path.exists():
            out[name] = f"skipped: {path} not present"
            continue
        seconds, split = best_of(args.repeat, load)
        out[name] = {
            "seconds": round(seconds, 3),
            "train": len(split.train),
            "test": len(split.test),
        }
    out["goal"] = "mnist seconds < 2"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
