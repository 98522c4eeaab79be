"""MNIST from its original IDX files, gzipped or not.

LeCun, Bottou, Bengio, Haffner. "Gradient-Based Learning Applied to Document
Recognition." Proceedings of the IEEE, 1998. The IDX format is described at
http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import numpy.typing as npt

from federa.data.dataset import Dataset, DatasetSplit
from federa.errors import FederaError

_GZIP_MAGIC = b"\x1f\x8b"
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_NUM_CLASSES = 10
# IDX type codes (the third magic byte); multi-byte values are big-endian.
_IDX_DTYPES: dict[int, str] = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_EXPECTED = ", ".join(name for pair in _FILES.values() for name in pair)


def _read_bytes(path: Path) -> bytes:
    """Return the content of `path`, gunzipped when it starts with the gzip magic bytes."""
    try:
        with path.open("rb") as f:
            data = f.read()
        if data[:2] == _GZIP_MAGIC:
            return gzip.decompress(data)
    except gzip.BadGzipFile as exc:
        raise FederaError(f"{path} is not a valid gzip file ({exc}); download it again") from exc
    except EOFError as exc:
        raise FederaError(f"{path} is a truncated gzip file ({exc}); download it again") from exc
    except zlib.error as exc:
        raise FederaError(f"{path} holds corrupt gzip data ({exc}); download it again") from exc
    except OSError as exc:
        raise FederaError(f"cannot read {path}: {exc.strerror or exc}; check the path") from exc
    return data


def read_idx(path: str | os.PathLike[str]) -> npt.NDArray[np.generic]:
    """Read one IDX file (raw, or gzip detected by its magic bytes) into an array.

    Args:
        path: The file, such as ".../train-images-idx3-ubyte.gz".

    Returns:
        A read-only array with the dimensions and element type the header declares;
        MNIST images are uint8 of shape (N, 28, 28), labels uint8 of shape (N,).

    Raises:
        FederaError: The file is missing, unreadable, not IDX, or its payload size does
            not match its header. The message names the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise FederaError(
            f"{path} is {len(data)} bytes, too short for an IDX header; download it again"
        )
    magic = int.from_bytes(data[:4], "big")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\x00\x00" or type_code not in _IDX_DTYPES or ndim == 0:
        raise FederaError(
            f"{path} is not an IDX file (magic 0x{magic:08x}; MNIST images have "
            f"0x{_IMAGES_MAGIC:08x}, labels 0x{_LABELS_MAGIC:08x}); point at the original files"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise FederaError(
            f"{path} is truncated inside its IDX header ({len(data)} of {header_size} bytes); "
            "download it again"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header_size
    if actual != expected:
        problem = "is truncated" if actual < expected else "has trailing bytes"
        raise FederaError(
            f"{path} {problem}: its header declares shape {shape} ({expected} bytes of data) "
            f"but {actual} bytes follow; download it again"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
        array.flags.writeable = False
    return array


def _find(root: Path, stem: str) -> Path:
    """Return `root/stem.gz` if present, else `root/stem`."""
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise FederaError(
        f"MNIST file {stem}(.gz) not found in {root}; the folder must hold {_EXPECTED} "
        "(each optionally .gz)"
    )


def _load_part(root: Path, part: str) -> Dataset:
    images_path, labels_path = (_find(root, stem) for stem in _FILES[part])
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise FederaError(
            f"{images_path} holds {images.dtype} data with {images.ndim} dimensions; MNIST "
            f"images are uint8 with 3 (magic 0x{_IMAGES_MAGIC:08x}); check the file names"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise FederaError(
            f"{labels_path} holds {labels.dtype} data with {labels.ndim} dimensions; MNIST "
            f"labels are uint8 with 1 (magic 0x{_LABELS_MAGIC:08x}); check the file names"
        )
    if len(images) != len(labels):
        raise FederaError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} "
            "labels; the two files come from different downloads, fetch both again"
        )
    if labels.size and int(labels.max()) >= _NUM_CLASSES:
        raise FederaError(
            f"{labels_path} has label {int(labels.max())}, outside 0..{_NUM_CLASSES - 1}; "
            "point at MNIST label files"
        )
    num, height, width = images.shape
    x = np.empty((num, 1, height, width), dtype=np.float32)
    np.divide(images.reshape(x.shape), np.float32(255.0), out=x)
    y = labels.astype(np.int64)
    return Dataset(x=x, y=y, num_classes=_NUM_CLASSES, name=f"mnist-{part}")


def load_mnist(data_dir: str | os.PathLike[str]) -> DatasetSplit:
    """Load MNIST's 60,000 training and 10,000 test images from a folder of IDX files.

    The folder holds train-images-idx3-ubyte, train-labels-idx1-ubyte,
    t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each optionally gzipped (the
    .gz file wins when both exist). Pixels are scaled to [0, 1]; images have shape
    (N, 1, 28, 28).

    Args:
        data_dir: The folder holding the four files.

    Raises:
        FederaError: The folder or a file is missing, or a file is damaged or does not
            match its partner. The message names the file.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FederaError(
            f"MNIST folder {root} does not exist or is not a folder; pass the folder holding "
            f"{_EXPECTED} (each optionally .gz)"
        )
    return DatasetSplit(train=_load_part(root, "train"), test=_load_part(root, "test"))
