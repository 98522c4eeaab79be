"""A trained model on disk: `Arrays` plus string metadata in one safetensors file.

safetensors (https://github.com/huggingface/safetensors) is a JSON header followed by
raw little-endian tensor bytes: reading one never runs code, unlike a pickle, so a
model file from someone else is safe to open. The header's `__metadata__` holds
strings only; federa records there what is needed to use the model (its architecture,
class names, input shape and format) and the arrays' order, which safetensors does not
keep.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

from federa.core.arrays import Arrays
from federa.errors import FederaError

__all__ = ["MODEL_FILE", "MODEL_FORMAT", "load_model_file", "save_model_file"]

MODEL_FORMAT = "federa.model.v1"
"""The `format` metadata value of the files this module writes."""
MODEL_FILE = "model.safetensors"
"""The name of the model file in a run directory."""

_ORDER_KEY = "array_names"
_RESERVED = frozenset({"format", _ORDER_KEY})
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


def save_model_file(
    path: str | os.PathLike[str], arrays: Arrays, metadata: Mapping[str, str]
) -> None:
    """Write `arrays` and `metadata` to a safetensors file, atomically.

    Args:
        path: The file to write (conventionally model.safetensors).
        arrays: The model's arrays; their order is kept.
        metadata: Strings describing the model, e.g. {"model": "symbol_cnn"}; the keys
            "format" and "array_names" are federa's own.

    Raises:
        FederaError: safetensors is not installed, or `metadata` uses a reserved key
            or holds a value that is not a string.
    """
    try:
        import safetensors.numpy
    except ImportError as exc:
        raise FederaError(
            "writing model.safetensors needs safetensors, which is not installed; "
            "run pip install 'federa[cli]'"
        ) from exc
    clash = sorted(_RESERVED & set(metadata))
    if clash:
        raise FederaError(f"model metadata may not use the reserved keys {clash}")
    bad = sorted(k for k, v in metadata.items() if not isinstance(v, str))
    if bad:
        raise FederaError(f"model metadata values must be strings; {bad} are not")
    header = {**metadata, "format": MODEL_FORMAT, _ORDER_KEY: json.dumps(list(arrays))}
    tensors = dict(arrays.items())
    data = safetensors.numpy.save(tensors, metadata=header)
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def _header(data: bytes, where: Path) -> dict[str, object]:
    if len(data) < 8:
        raise FederaError(f"{where} is too short to be a safetensors file; write it again")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(_MAX_HEADER, len(data) - 8):
        raise FederaError(f"{where} has a damaged safetensors header; write it again")
    try:
        header = json.loads(data[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FederaError(
            f"{where} has a damaged safetensors header ({exc}); write it again"
        ) from None
    if not isinstance(header, dict):
        raise FederaError(f"{where} has a damaged safetensors header; write it again")
    return header


def load_model_file(path: str | os.PathLike[str]) -> tuple[Arrays, dict[str, str]]:
    """Read a model file written by `save_model_file`; nothing in it is executed.

    Args:
        path: The safetensors file.

    Returns:
        The arrays, in the order they were saved, and the metadata (federa's own
        "array_names" key removed).

    Raises:
        FederaError: The file is missing, unreadable, not safetensors or not federa's,
            or safetensors is not installed. The message names the file.
    """
    where = Path(path)
    try:
        import safetensors.numpy
        from safetensors import SafetensorError
    except ImportError as exc:
        raise FederaError(
            "reading model.safetensors needs safetensors, which is not installed; "
            "run pip install 'federa[cli]'"
        ) from exc
    try:
        data = where.read_bytes()
    except FileNotFoundError:
        raise FederaError(f"model file {where} does not exist") from None
    except OSError as exc:
        raise FederaError(f"cannot read model file {where}: {exc.strerror or exc}") from None
    raw = _header(data, where).get("__metadata__") or {}
    if not isinstance(raw, dict) or raw.get("format") != MODEL_FORMAT:
        raise FederaError(
            f"{where} is a safetensors file but not a federa model (no format "
            f"{MODEL_FORMAT!r} in its metadata); write it with federa"
        )
    metadata = {str(k): str(v) for k, v in raw.items()}
    try:
        tensors = safetensors.numpy.load(data)
        order = json.loads(metadata.pop(_ORDER_KEY))
        arrays = Arrays((name, tensors[name]) for name in order)
    except (KeyError, TypeError, ValueError, SafetensorError) as exc:
        raise FederaError(f"{where} is damaged ({exc}); write it again") from None
    if len(arrays) != len(tensors):
        raise FederaError(f"{where} holds arrays its metadata does not list; write it again")
    return arrays, metadata
