from __future__ import annotations

from pathlib import Path

import pytest

from federa.data import DatasetSplit

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL_MNIST = SHARED_DATA / "mnist"
REAL_SYMBOLS = SHARED_DATA / "math_symbols" / "mdas_symbols_v1.zip"
HAS_REAL_DATA = REAL_MNIST.is_dir() and REAL_SYMBOLS.is_file()
needs_real_data = pytest.mark.skipif(
    not HAS_REAL_DATA,
    reason="../shared/data/mnist or ../shared/data/math_symbols not present (real symbols)",
)


@pytest.fixture(scope="session")
def real_symbols() -> DatasetSplit:
    """The real calculator set as written (operators at their natural size), loaded once."""
    from federa.data import load_calculator

    return load_calculator(REAL_MNIST, REAL_SYMBOLS)
