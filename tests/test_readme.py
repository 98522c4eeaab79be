"""The README's Python examples work as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.strip(), "each example prints its result"
    history = namespace["history"]
    import federa as fd

    assert isinstance(history, fd.History)
    assert history.rounds[-1].is_accepted
