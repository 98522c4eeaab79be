"""FEMNIST in LEAF's format: EMNIST characters grouped by the writer who drew them.

Caldas, Duddu, Wu, Li, Konečný, McMahan, Smith, Talwalkar. "LEAF: A Benchmark for
Federated Settings." arXiv:1812.01097, 2018. The images are EMNIST's (Cohen et al.,
2017), from NIST Special Database 19.
"""

from __future__ import annotations

import json
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from federa.data.dataset import Dataset, DatasetSplit

# mnist.py's reader that gunzips by magic bytes, with its one-line error messages.
from federa.data.mnist import _read_bytes
from federa.errors import FederaError

_CLASS_NAMES = tuple(string.digits + string.ascii_uppercase + string.ascii_lowercase)
_NUM_CLASSES = len(_CLASS_NAMES)
_SIDE = 28
_NUM_PIXELS = _SIDE * _SIDE
_PARTS = ("train", "test")
_PATTERNS = ("*.json", "*.json.gz")
_LAYOUT = (
    "train/ and test/ folders of LEAF json files (*.json or *.json.gz), as written by "
    "LEAF's preprocess.sh into data/femnist/data/"
)


class _FloatCache(dict[str, float]):
    """Parse each distinct number text once.

    LEAF pixels take only 256 values (k/255), so looking up a number's text is about
    three times faster than parsing millions of floats, and the parsed lists share
    256 float objects instead of holding one per pixel.
    """

    def __missing__(self, text: str) -> float:
        value = self[text] = float(text)
        return value


@dataclass(frozen=True, slots=True)
class _UserData:
    """One writer's examples, as read from one LEAF file."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    path: Path


def _json_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FederaError(
            f"FEMNIST folder {folder} does not exist or is not a folder; the data folder "
            f"must hold {_LAYOUT}"
        )
    files = sorted({p for pattern in _PATTERNS for p in folder.glob(pattern) if p.is_file()})
    if not files:
        raise FederaError(
            f"FEMNIST folder {folder} holds no *.json or *.json.gz files; the data folder "
            f"must hold {_LAYOUT}"
        )
    return files


def _parse(path: Path) -> dict[str, Any]:
    """Return the top-level object of a LEAF file, checking its three keys."""
    data = _read_bytes(path)
    try:
        # One cache per file bounds its size by what the file itself holds.
        obj = json.loads(data, parse_float=_FloatCache().__getitem__)
    except json.JSONDecodeError as exc:
        raise FederaError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "download or generate it again"
        ) from exc
    except UnicodeDecodeError as exc:
        raise FederaError(
            f"{path} is not UTF-8 JSON ({exc.reason}); download or generate it again"
        ) from exc
    if not isinstance(obj, dict):
        raise FederaError(
            f"{path} holds a JSON {type(obj).__name__}, not a LEAF object with users, "
            "num_samples and user_data; point at LEAF files"
        )
    for key, kind in (("users", list), ("num_samples", list), ("user_data", dict)):
        if not isinstance(obj.get(key), kind):
            found = "is missing" if key not in obj else f"is a {type(obj[key]).__name__}"
            raise FederaError(
                f"{path}: LEAF key {key!r} {found}, expected a {kind.__name__}; point at LEAF files"
            )
    return obj


def _decode_user(path: Path, user: str, record: Any, num_samples: Any) -> _UserData:
    """Turn one user's {"x": [...], "y": [...]} into arrays, checking every field."""
    where = f"{path}: user {user!r}"
    if not isinstance(record, dict) or "x" not in record or "y" not in record:
        raise FederaError(f"{where} has no x and y lists; point at LEAF files")
    try:
        x = np.asarray(record["x"], dtype=np.float32)
        y = np.asarray(record["y"])
    except (ValueError, TypeError) as exc:
        raise FederaError(
            f"{where} has x or y that is not a list of numbers of equal length ({exc}); "
            "download or generate the file again"
        ) from exc
    if x.ndim != 2 or x.shape[1] != _NUM_PIXELS:
        if not (x.ndim == 1 and x.size == 0):  # an empty list is a user with no samples
            raise FederaError(
                f"{where} has x of shape {x.shape}; each image must be a list of "
                f"{_NUM_PIXELS} pixels (28x28); point at FEMNIST files"
            )
        x = x.reshape(0, _NUM_PIXELS)
    if y.size == 0:
        y = y.astype(np.int64)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise FederaError(
            f"{where} has y that is not a flat list of integer labels; labels must be 0..61"
        )
    if not (isinstance(num_samples, int) and len(x) == len(y) == num_samples):
        raise FederaError(
            f"{where} has {len(x)} images and {len(y)} labels but num_samples says "
            f"{num_samples!r}; they must agree, so download or generate the file again"
        )
    if y.size and (int(y.min()) < 0 or int(y.max()) >= _NUM_CLASSES):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise FederaError(
            f"{where} has label {bad}, outside 0..{_NUM_CLASSES - 1}; point at FEMNIST files"
        )
    if not np.all((x >= 0.0) & (x <= 1.0)):  # also catches NaN
        raise FederaError(f"{where} has pixel values outside [0, 1]; point at FEMNIST files")
    return _UserData(x=x, y=y.astype(np.int64), path=path)


def _read_file(path: Path) -> dict[str, _UserData]:
    obj = _parse(path)
    users, num_samples, user_data = obj["users"], obj["num_samples"], obj["user_data"]
    if not all(isinstance(user, str) for user in users) or len(set(users)) != len(users):
        raise FederaError(f"{path}: users must be distinct strings; point at LEAF files")
    if len(num_samples) != len(users) or set(user_data) != set(users):
        raise FederaError(
            f"{path} lists {len(users)} users, {len(num_samples)} num_samples and "
            f"{len(user_data)} user_data entries, which do not match one to one; "
            "download or generate the file again"
        )
    return {
        user: _decode_user(path, user, user_data[user], count)
        for user, count in zip(users, num_samples, strict=True)
    }


def _read_part(folder: Path) -> dict[str, _UserData]:
    """Return every user's data across the LEAF files of one folder."""
    merged: dict[str, _UserData] = {}
    for path in _json_files(folder):
        for user, data in _read_file(path).items():
            if user in merged:
                raise FederaError(
                    f"user {user!r} appears in both {merged[user].path} and {path}; each LEAF "
                    "user lives in one file, so remove the duplicate file"
                )
            merged[user] = data
    if not any(len(data.y) for data in merged.values()):
        raise FederaError(f"FEMNIST folder {folder} holds no examples; the files list no samples")
    return merged


def _assemble(
    users: dict[str, _UserData], group_names: tuple[str, ...], part: str, *, invert: bool
) -> Dataset:
    """Stack users' examples in group order into one dataset."""
    group_of = {name: k for k, name in enumerate(group_names)}
    order = sorted(users, key=group_of.__getitem__)
    counts = [len(users[user].y) for user in order]
    x = np.empty((sum(counts), 1, _SIDE, _SIDE), dtype=np.float32)
    flat = x.reshape(len(x), _NUM_PIXELS)
    start = 0
    for user, count in zip(order, counts, strict=True):
        if invert:
            np.subtract(np.float32(1.0), users[user].x, out=flat[start : start + count])
        else:
            flat[start : start + count] = users[user].x
        start += count
    y = np.concatenate([users[user].y for user in order])
    groups = np.repeat(np.array([group_of[user] for user in order], dtype=np.int64), counts)
    return Dataset(
        x=x,
        y=y,
        num_classes=_NUM_CLASSES,
        name=f"femnist-{part}",
        groups=groups,
        group_names=group_names,
        class_names=_CLASS_NAMES,
    )


def load_femnist(data_dir: str | os.PathLike[str], *, invert: bool = True) -> DatasetSplit:
    """Load FEMNIST from LEAF's train/ and test/ folders, one group per writer.

    Each folder holds LEAF json files (gzipped or not, told apart by their first
    bytes), whose schema is {"users": [...], "num_samples": [...], "user_data":
    {user: {"x": [[784 pixels]], "y": [labels]}}}. Other folders, such as
    test_unpaired/, are ignored. Every LEAF user becomes a group: `group_names` is the
    sorted union of the users of both folders, so a writer has the same group id in
    train and test (a writer may appear in only one of them), and examples are
    ordered by group. Images have shape (N, 1, 28, 28); the 62 classes are 0-9, A-Z
    and a-z.

    Args:
        data_dir: The folder holding train/ and test/.
        invert: Return MNIST polarity (dark background, bright ink) by taking 1 - x.
            LEAF stores a white background (1.0) and dark ink; False keeps that.

    Raises:
        FederaError: A folder is missing or holds no json files, or a file is damaged
            or does not follow the LEAF schema. The message names the path and the
            problem.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FederaError(
            f"FEMNIST folder {root} does not exist or is not a folder; pass the folder "
            f"holding {_LAYOUT}"
        )
    train, test = (_read_part(root / part) for part in _PARTS)
    group_names = tuple(sorted(train.keys() | test.keys()))
    return DatasetSplit(
        train=_assemble(train, group_names, "train", invert=invert),
        test=_assemble(test, group_names, "test", invert=invert),
    )
