"""The benchmarks' own arithmetic (the benchmarks themselves are not tests)."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rounds_to_target_interpolates_the_best_so_far_curve() -> None:
    rounds_to = load("noniid").rounds_to_target  # federa compare's own reading
    curve = [(1, 0.5), (2, 0.9), (3, 0.85), (4, 0.98)]
    # best-so-far: 0.5, 0.9, 0.9, 0.98; 0.95 is crossed between rounds 3 and 4.
    assert rounds_to(curve, 0.95) == 3 + (0.95 - 0.9) / (0.98 - 0.9)
    assert rounds_to(curve, 0.7) == 1 + (0.7 - 0.5) / (0.9 - 0.5)
    assert rounds_to(curve, 0.99) is None
