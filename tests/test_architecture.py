"""ARCHITECTURE.md rules that code can check: layers import downward, protobuf is quarantined."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import federa

SRC = Path(federa.__file__).parent
# Lower layers first; a module may import its own layer and any layer listed before it.
LAYERS = [
    {"core", "errors"},
    {"strategy", "privacy", "data"},
    {"client"},
    {"torch"},  # the PyTorch adapter builds on client; simulation may use its trainer
    {"transport"},
    {"server"},
    {"simulation"},
    {"cli", "apps", "__main__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
CORE_ALLOWED = {"numpy", "federa"}


def federa_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def layer_of(module_path: Path) -> str:
    rel = module_path.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)
HAND_WRITTEN = [p for p in MODULES if "_proto" not in p.parts]


def test_every_package_is_assigned_a_layer() -> None:
    top = {layer_of(p) for p in MODULES}
    assert top <= set(RANK), f"unassigned packages: {top - set(RANK)}"


@pytest.mark.parametrize("path", HAND_WRITTEN, ids=lambda p: str(p.relative_to(SRC)))
def test_layers_import_downward_only(path: Path) -> None:
    own = RANK[layer_of(path)]
    for lineno, module in federa_imports(path):
        parts = module.split(".")
        if parts[0] != "federa" or len(parts) < 2:
            continue
        target = RANK.get(parts[1])
        assert target is not None, f"{path.name}:{lineno} imports unknown package {module}"
        assert target <= own, f"{path.relative_to(SRC)}:{lineno} imports upward: {module}"


@pytest.mark.parametrize(
    "path", sorted((SRC / "core").rglob("*.py")), ids=lambda p: str(p.relative_to(SRC))
)
def test_core_imports_numpy_and_stdlib_only(path: Path) -> None:
    import sys

    for lineno, module in federa_imports(path):
        root = module.split(".")[0]
        ok = root in CORE_ALLOWED or root in sys.stdlib_module_names or root == "__future__"
        assert ok, f"core/{path.name}:{lineno} imports {module}"


def test_only_the_codec_imports_protobuf() -> None:
    for path in MODULES:
        if path.name == "codec.py" or "_proto" in path.parts:
            continue
        for lineno, module in federa_imports(path):
            assert "_pb2" not in module and not module.startswith("google.protobuf"), (
                f"{path.relative_to(SRC)}:{lineno} imports {module}"
            )
