"""CIFAR-10 from its binary version (cifar-10-binary.tar.gz, extracted).

Krizhevsky. "Learning Multiple Layers of Features from Tiny Images." Technical
report, University of Toronto, 2009. The files and their format are described at
https://www.cs.toronto.edu/~kriz/cifar.html. Only the binary version is read: the
"python version" is pickled, and federa never unpickles a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from federa.data.dataset import Dataset, DatasetSplit
from federa.errors import FederaError

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_NUM_CLASSES = len(CIFAR10_CLASSES)
_SHAPE = (3, 32, 32)
# One record: a label byte, then 1024 red, 1024 green and 1024 blue bytes, each
# plane a row-major 32x32 image.
_RECORD_SIZE = 1 + 3 * 32 * 32
_FOLDER = "cifar-10-batches-bin"
_FILES = {
    "train": tuple(f"data_batch_{k}.bin" for k in range(1, 6)),
    "test": ("test_batch.bin",),
}
_META = "batches.meta.txt"
_EXPECTED = (
    f"{_FOLDER}/ (or the files themselves): data_batch_1.bin to data_batch_5.bin and "
    "test_batch.bin, from cifar-10-binary.tar.gz extracted with tar xzf"
)


def _locate(root: Path) -> Path:
    """Return the folder holding the batch files: root/cifar-10-batches-bin or root."""
    for folder in (root / _FOLDER, root):
        if (folder / _FILES["train"][0]).is_file():
            return folder
    hint = ""
    if (root / "cifar-10-batches-py").is_dir() or (root / "data_batch_1").is_file():
        hint = (
            "; this looks like the python (pickle) version, which federa does not read "
            "because unpickling a file can run code, so download the binary version"
        )
    raise FederaError(
        f"CIFAR-10 binary files not found in {root} or {root / _FOLDER}; pass the folder "
        f"holding {_EXPECTED}{hint}"
    )


def _read_records(path: Path) -> npt.NDArray[np.uint8]:
    """Return the records of one batch file as a uint8 array of shape (N, 3073)."""
    if not path.is_file():
        raise FederaError(
            f"CIFAR-10 file {path.name} not found in {path.parent}; the folder must hold "
            f"{_EXPECTED}"
        )
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise FederaError(f"cannot read {path}: {exc.strerror or exc}; check the path") from exc
    if data.size == 0 or data.size % _RECORD_SIZE:
        raise FederaError(
            f"{path} is {data.size} bytes, not a positive multiple of the {_RECORD_SIZE}-byte "
            "record: truncated or not CIFAR-10 binary; extract cifar-10-binary.tar.gz again"
        )
    records = data.reshape(-1, _RECORD_SIZE)
    high = int(records[:, 0].max())
    if high >= _NUM_CLASSES:
        raise FederaError(
            f"{path} has label {high}, outside 0..{_NUM_CLASSES - 1}; it is not a CIFAR-10 "
            "binary file (CIFAR-100 records are 3074 bytes with two labels)"
        )
    return records


def _load_part(folder: Path, part: str, class_names: tuple[str, ...]) -> Dataset:
    records = np.concatenate([_read_records(folder / name) for name in _FILES[part]])
    x = np.empty((len(records), *_SHAPE), dtype=np.float32)
    np.divide(records[:, 1:].reshape(x.shape), np.float32(255.0), out=x)
    y = records[:, 0].astype(np.int64)
    return Dataset(
        x=x,
        y=y,
        num_classes=_NUM_CLASSES,
        name=f"cifar10-{part}",
        class_names=class_names,
    )


def _read_class_names(folder: Path) -> tuple[str, ...]:
    """Return the names in batches.meta.txt (one per line), or the standard ones."""
    path = folder / _META
    if not path.is_file():
        return CIFAR10_CLASSES
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FederaError(
            f"{path} is not UTF-8 text ({exc.reason}); extract it again or delete it to use "
            "the standard class names"
        ) from exc
    except OSError as exc:
        raise FederaError(f"cannot read {path}: {exc.strerror or exc}; check the path") from exc
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != _NUM_CLASSES:
        raise FederaError(
            f"{path} lists {len(names)} class names, not {_NUM_CLASSES} (one per line); "
            "extract it again or delete it to use the standard class names"
        )
    return names


def load_cifar10(data_dir: str | os.PathLike[str]) -> DatasetSplit:
    """Load CIFAR-10's 50,000 training and 10,000 test images from the binary files.

    `data_dir` is either the folder holding cifar-10-batches-bin/ (where
    cifar-10-binary.tar.gz was extracted) or cifar-10-batches-bin itself. Pixels are
    scaled to [0, 1]; images have shape (N, 3, 32, 32) with channels in RGB order.
    Class names come from batches.meta.txt when present, else are the standard ten.

    Args:
        data_dir: The folder holding the files or their folder.

    Raises:
        FederaError: The folder or a file is missing, or a file is truncated, is not
            CIFAR-10 binary or has a label outside 0..9. The message names the file.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FederaError(
            f"CIFAR-10 folder {root} does not exist or is not a folder; pass the folder "
            f"holding {_EXPECTED}"
        )
    folder = _locate(root)
    class_names = _read_class_names(folder)
    return DatasetSplit(
        train=_load_part(folder, "train", class_names),
        test=_load_part(folder, "test", class_names),
    )
