"""Checkpoints: save and restore a run after every round, atomically and without pickle.

A checkpoint directory holds `round-NNNNNN/` folders (arrays.npz, history.json,
strategy.json, strategy.npz, and meta.json, written last with the sha256 of the others)
and `LATEST`, naming the newest. A folder is written as `.round-NNNNNN.tmp-<pid>/`,
fsynced, renamed into place, and only then named in LATEST, so a crash at any moment
leaves the previous or the new checkpoint readable. One writer per directory is assumed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from federa.core.arrays import Arrays
from federa.errors import ConfigError, FederaError
from federa.server.history import History

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_ROUND_RE = re.compile(r"round-(\d{6,})")
_STALE_RE = re.compile(r"\.(round-\d+|LATEST)\.(tmp|old)-\d+")
_LATEST = "LATEST"
_META = "meta.json"
_FILES = ("arrays.npz", "history.json", "strategy.json", "strategy.npz")
# strategy.json replaces each array leaf of the state by a one-key marker dict whose
# value names entries of strategy.npz; user dicts may not use these keys.
_NDARRAY, _NPSCALAR, _ARRAYS = "__ndarray__", "__npscalar__", "__arrays__"
_MARKERS = frozenset({_NDARRAY, _NPSCALAR, _ARRAYS})


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """Everything needed to continue a run after its last completed round.

    Attributes:
        round_num: The last completed round (0 = only the initial evaluation).
        arrays: The global arrays after that round.
        strategy_state: `Strategy.state_dict()`: JSON values, numpy arrays, numpy scalars
            and `Arrays`, nested in dicts with str keys and lists (not tuples).
        history: Records up to and including `round_num` (`History.arrays` is not saved).
        seed: The run seed.
        run_id: Identifies the run; the caller refuses to resume a different one.
        config: Free-form JSON-able run description written by the caller.
    """

    round_num: int
    arrays: Arrays
    strategy_state: dict[str, Any]
    history: History
    seed: int
    run_id: str
    config: dict[str, Any]


class _CorruptError(Exception):
    """A round folder is missing, incomplete or damaged: try an older one."""


def save_checkpoint(directory: str | Path, checkpoint: Checkpoint, *, keep: int = 2) -> Path:
    """Write `checkpoint` atomically as the newest one in `directory`.

    Round folders newer than `checkpoint.round_num` (left by a superseded attempt) and
    all but the `keep` newest up to it are deleted afterwards, as are stale temporary folders.

    Returns:
        The round folder written.
    """
    if keep < 1:
        raise ConfigError(f"keep must be >= 1, got {keep}")
    if checkpoint.round_num < 0:
        raise ConfigError(f"round_num must be >= 0, got {checkpoint.round_num}")
    files = _encode(checkpoint)  # before touching the disk: a bad state writes nothing
    root = Path(directory)
    name = f"round-{checkpoint.round_num:06d}"
    pid = os.getpid()
    tmp, final = root / f".{name}.tmp-{pid}", root / name
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # a crashed process may have had our pid
        tmp.mkdir()
        for fname, data in files.items():  # meta.json is last in `files`
            _write_file(tmp / fname, data)
        _fsync_dir(tmp)
        if final.exists():  # re-saving a round: prune deletes the old copy
            _move_aside(root, name)
        os.replace(tmp, final)
        _fsync_dir(root)
        latest_tmp = root / f".{_LATEST}.tmp-{pid}"
        _write_file(latest_tmp, f"{name}\n".encode())
        os.replace(latest_tmp, root / _LATEST)
        _fsync_dir(root)
        _prune(root, checkpoint.round_num, keep)
    except OSError as exc:
        raise FederaError(
            f"cannot write checkpoint to {root}: {exc.strerror or exc}; "
            "check that it is a writable directory with free space"
        ) from None
    return final


def load_checkpoint(directory: str | Path) -> Checkpoint | None:
    """Read the newest valid checkpoint in `directory`.

    Reads the folder LATEST names; if LATEST is missing or its folder is missing or
    corrupt, falls back to the newest complete, intact round folder.

    Returns:
        The checkpoint, or None when `directory` does not exist or holds none.

    Raises:
        FederaError: The directory is unreadable, every round folder is corrupt, or a
            checkpoint was written by a newer federa.
    """
    root = Path(directory)
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FederaError(
            f"cannot read checkpoint directory {root}: {exc.strerror or exc}; "
            "check the path and its permissions"
        ) from None
    rounds = sorted(((int(m[1]), n) for n in names if (m := _ROUND_RE.fullmatch(n))), reverse=True)
    latest = _read_latest(root) if _LATEST in names else None
    candidates = ([latest] if latest else []) + [n for _, n in rounds if n != latest]
    problems: list[str] = []
    for name in candidates:
        try:
            checkpoint = _read_folder(root / name)
        except _CorruptError as exc:
            logger.warning("checkpoint %s is unusable (%s); trying an older one", root / name, exc)
            problems.append(f"{name}: {exc}")
            continue
        return checkpoint
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more unusable)" if len(problems) > 1 else ""
    raise FederaError(
        f"checkpoint in {root} is corrupt: {problems[0]}{more}; "
        "move the directory aside and start a new run, or restore it from a backup"
    )


def _encode(checkpoint: Checkpoint) -> dict[str, bytes]:
    """Serialize a checkpoint to file contents, meta.json last."""
    array_names = list(checkpoint.arrays)
    blobs: dict[str, np.ndarray[Any, Any]] = {}
    state = _encode_value(checkpoint.strategy_state, "", blobs)
    files = {
        "arrays.npz": _npz({f"a{i}": checkpoint.arrays[n] for i, n in enumerate(array_names)}),
        "history.json": checkpoint.history.to_json().encode(),
        # NaN and Inf may be legitimate state (a best loss of inf); Python's json reads them back.
        "strategy.json": json.dumps(state, indent=1).encode(),
        "strategy.npz": _npz(blobs),
    }
    meta = {
        "format_version": FORMAT_VERSION,
        "round_num": checkpoint.round_num,
        "seed": checkpoint.seed,
        "run_id": checkpoint.run_id,
        "config": checkpoint.config,
        "array_names": array_names,
        "sha256": {f: hashlib.sha256(data).hexdigest() for f, data in files.items()},
    }
    try:
        files[_META] = json.dumps(meta, indent=2, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise FederaError(f"checkpoint seed, run_id or config is not JSON-able: {exc}") from None
    return files


def _encode_value(value: Any, path: str, blobs: dict[str, np.ndarray[Any, Any]]) -> Any:
    where = path or "the top level"

    def put(arr: np.ndarray[Any, Any]) -> str:
        if arr.dtype.hasobject:
            raise FederaError(f"strategy state at {where} has an object array; use a numeric dtype")
        key = f"v{len(blobs)}"
        blobs[key] = arr
        return key

    if isinstance(value, Arrays):
        return {_ARRAYS: [[name, put(arr)] for name, arr in value.items()]}
    if isinstance(value, np.ndarray):
        return {_NDARRAY: put(value)}
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass
        return {_NPSCALAR: put(np.asarray(value))}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise FederaError(f"strategy state at {where} has a non-string key; use str keys")
        if reserved := _MARKERS & value.keys():
            raise FederaError(f"strategy state at {where} uses reserved key {min(reserved)!r}")
        return {k: _encode_value(v, f"{path}/{k}" if path else k, blobs) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode_value(v, f"{path}[{i}]", blobs) for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise FederaError(
        f"strategy state at {where} is a {type(value).__name__}; checkpoints hold JSON "
        "values (dict, list, str, int, float, bool, None), numpy arrays and Arrays"
    )


def _decode_value(value: Any, blobs: dict[str, np.ndarray[Any, Any]]) -> Any:
    if isinstance(value, dict):
        if _NDARRAY in value:
            return blobs[value[_NDARRAY]]
        if _NPSCALAR in value:
            return blobs[value[_NPSCALAR]][()]
        if _ARRAYS in value:
            return Arrays([(str(name), blobs[key]) for name, key in value[_ARRAYS]])
        return {k: _decode_value(v, blobs) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_value(v, blobs) for v in value]
    return value


def _read_folder(folder: Path) -> Checkpoint:
    """Read and verify one round folder."""
    try:
        meta = json.loads((folder / _META).read_bytes())
    except FileNotFoundError:
        raise _CorruptError("missing or incomplete (no meta.json)") from None
    except (OSError, ValueError) as exc:
        raise _CorruptError(f"unreadable meta.json ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), dict):
        raise _CorruptError("meta.json is not a checkpoint description")
    version = meta.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise FederaError(
            f"checkpoint {folder} has format_version {version}, newer than this federa reads "
            f"({FORMAT_VERSION}); upgrade federa to resume it"
        )
    if version != FORMAT_VERSION:
        raise _CorruptError(f"meta.json has format_version {version!r}")
    data: dict[str, bytes] = {}
    for fname in _FILES:
        try:
            data[fname] = (folder / fname).read_bytes()
        except OSError as exc:
            raise _CorruptError(f"cannot read {fname} ({exc.strerror or exc})") from None
        if hashlib.sha256(data[fname]).hexdigest() != meta["sha256"].get(fname):
            raise _CorruptError(f"{fname} does not match its sha256 in meta.json")
    try:
        names = [str(n) for n in _typed(meta["array_names"], list)]
        stored = _load_npz(data["arrays.npz"])
        if len(stored) != len(names):
            raise ValueError("arrays.npz and meta.json disagree on the number of arrays")
        blobs = _load_npz(data["strategy.npz"])
        checkpoint = Checkpoint(
            round_num=_typed(meta["round_num"], int),
            arrays=Arrays([(n, stored[f"a{i}"]) for i, n in enumerate(names)]),
            strategy_state=_decode_value(json.loads(data["strategy.json"]), blobs),
            history=History.from_json(data["history.json"].decode()),
            seed=_typed(meta["seed"], int),
            run_id=_typed(meta["run_id"], str),
            config=_typed(meta["config"], dict),
        )
    except (KeyError, TypeError, ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _CorruptError(f"malformed contents ({exc!r})") from None
    except FederaError as exc:
        raise _CorruptError(str(exc)) from None
    if f"round-{checkpoint.round_num:06d}" != folder.name:
        raise _CorruptError(f"meta.json says round {checkpoint.round_num}")
    return checkpoint


def _typed(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise TypeError(f"expected {kind.__name__}, got {value!r}")
    return value


def _npz(arrays: dict[str, np.ndarray[Any, Any]]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    return buf.getvalue()


def _load_npz(data: bytes) -> dict[str, np.ndarray[Any, Any]]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def _read_latest(root: Path) -> str | None:
    """Return the folder LATEST names, or None when it is unreadable or malformed."""
    try:
        name = (root / _LATEST).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning("cannot read %s (%s); using the newest round folder", root / _LATEST, exc)
        return None
    if not _ROUND_RE.fullmatch(name):  # also keeps a hand-edited LATEST inside `root`
        logger.warning("%s names %r, not a round folder; ignoring it", root / _LATEST, name)
        return None
    return name


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    """Make renames and new entries in `path` durable (POSIX only)."""
    if os.name == "posix":
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _move_aside(root: Path, name: str) -> None:
    """Rename a round folder to a stale name, so it is never seen half-deleted."""
    aside = root / f".{name}.old-{os.getpid()}"
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(root / name, aside)


def _prune(root: Path, current: int, keep: int) -> None:
    """Delete superseded and surplus round folders, then stale temporary entries."""
    rounds = sorted((int(m[1]), n) for n in os.listdir(root) if (m := _ROUND_RE.fullmatch(n)))
    older = [n for r, n in rounds if r < current]
    doomed = older[: max(0, len(older) - (keep - 1))] + [n for r, n in rounds if r > current]
    for name in doomed:
        _move_aside(root, name)
    for path in [root / n for n in os.listdir(root) if _STALE_RE.fullmatch(n)]:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
