"""EMNIST from NIST's gzipped IDX files (the contents of gzip.zip).

Cohen, Afshar, Tapson, van Schaik. "EMNIST: an extension of MNIST to handwritten
letters." IJCNN 2017, arXiv:1702.05373. The files are at
https://www.nist.gov/itl/products-and-services/emnist-dataset.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import numpy as np
import numpy.typing as npt

from federa.data.dataset import Dataset, DatasetSplit
from federa.data.mnist import read_idx
from federa.errors import ConfigError, FederaError

EMNIST_SPLITS = ("balanced", "byclass", "bymerge", "digits", "letters", "mnist")

_DIGITS = tuple(string.digits)
_UPPER = tuple(string.ascii_uppercase)
_BYCLASS = _DIGITS + _UPPER + tuple(string.ascii_lowercase)
# balanced and bymerge merge the 15 lowercase letters that look like their capital
# (c i j k l m o p s u v w x y z) into it, leaving these 11 (emnist-balanced-mapping.txt).
_MERGED = _DIGITS + _UPPER + tuple("abdefghnqrt")
# letters merges each lowercase letter with its capital: one class per letter.
_LETTERS = tuple(f"{upper}/{upper.lower()}" for upper in _UPPER)
_CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "balanced": _MERGED,
    "byclass": _BYCLASS,
    "bymerge": _MERGED,
    "digits": _DIGITS,
    "letters": _LETTERS,
    "mnist": _DIGITS,
}
# The letters files store labels 1..26; every other split starts at 0.
_FIRST_LABEL = {"letters": 1}
_PARTS = ("train", "test")
_GZIP_FOLDER = "gzip"


def _stems(split: str, part: str) -> tuple[str, str]:
    return (f"emnist-{split}-{part}-images-idx3-ubyte", f"emnist-{split}-{part}-labels-idx1-ubyte")


def _expected(split: str) -> str:
    return ", ".join(stem for part in _PARTS for stem in _stems(split, part))


def _find(root: Path, split: str, stem: str) -> Path:
    """Return the first of root/stem.gz, root/stem, root/gzip/stem.gz, root/gzip/stem."""
    for folder in (root, root / _GZIP_FOLDER):
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                return candidate
    raise FederaError(
        f"EMNIST file {stem}(.gz) not found in {root} or {root / _GZIP_FOLDER}; for split "
        f"{split!r} the folder must hold {_expected(split)} (each optionally .gz), "
        "as unpacked from NIST's gzip.zip"
    )


def _check_labels(labels: npt.NDArray[np.generic], path: Path, split: str) -> None:
    first = _FIRST_LABEL.get(split, 0)
    last = first + len(_CLASS_NAMES[split]) - 1
    if labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < first or high > last:
        bad = low if low < first else high
        raise FederaError(
            f"{path} has label {bad}, outside {first}..{last} for EMNIST split {split!r}; "
            "check that the file belongs to that split"
        )


def _load_part(root: Path, split: str, part: str) -> Dataset:
    images_path, labels_path = (_find(root, split, stem) for stem in _stems(split, part))
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise FederaError(
            f"{images_path} holds {images.dtype} data with {images.ndim} dimensions; EMNIST "
            "images are uint8 with 3; check the file names"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise FederaError(
            f"{labels_path} holds {labels.dtype} data with {labels.ndim} dimensions; EMNIST "
            "labels are uint8 with 1; check the file names"
        )
    if len(images) != len(labels):
        raise FederaError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
            "labels; the two files come from different downloads, fetch both again"
        )
    _check_labels(labels, labels_path, split)
    num, height, width = images.shape
    x = np.empty((num, 1, width, height), dtype=np.float32)
    # EMNIST stores each image transposed (column-major); swapping the two image axes
    # makes the characters upright, as in MNIST. The view costs no copy.
    np.divide(images[:, None].transpose(0, 1, 3, 2), np.float32(255.0), out=x)
    y = labels.astype(np.int64) - _FIRST_LABEL.get(split, 0)
    class_names = _CLASS_NAMES[split]
    return Dataset(
        x=x,
        y=y,
        num_classes=len(class_names),
        name=f"emnist-{split}-{part}",
        class_names=class_names,
    )


def load_emnist(data_dir: str | os.PathLike[str], split: str = "balanced") -> DatasetSplit:
    """Load one EMNIST split from a folder of IDX files.

    The folder holds emnist-<split>-train-images-idx3-ubyte,
    emnist-<split>-train-labels-idx1-ubyte and the two matching test files, each
    optionally gzipped, either directly or inside a gzip/ subfolder (the layout of
    NIST's gzip.zip). Images are turned upright (EMNIST stores them transposed) and
    scaled to [0, 1], with shape (N, 1, 28, 28).

    Classes per split: byclass 62 (0-9, A-Z, a-z); bymerge and balanced 47 (0-9, A-Z
    and a b d e f g h n q r t); digits and mnist 10; letters 26. A letters class holds
    both cases of its letter, so its names read "A/a" to "Z/z", and its labels, stored
    as 1..26, are shifted to 0..25.

    Args:
        data_dir: The folder holding the files.
        split: One of `EMNIST_SPLITS`.

    Raises:
        ConfigError: `split` is not one of `EMNIST_SPLITS`.
        FederaError: The folder or a file is missing, or a file is damaged, does not
            match its partner, or has labels outside the split's range. The message
            names the file.
    """
    if split not in EMNIST_SPLITS:
        raise ConfigError(f"unknown EMNIST split {split!r}; pick one of {', '.join(EMNIST_SPLITS)}")
    root = Path(data_dir)
    if not root.is_dir():
        raise FederaError(
            f"EMNIST folder {root} does not exist or is not a folder; pass the folder holding "
            f"{_expected(split)} (each optionally .gz), or the folder holding gzip/ from "
            "NIST's gzip.zip"
        )
    return DatasetSplit(
        train=_load_part(root, split, "train"), test=_load_part(root, split, "test")
    )
