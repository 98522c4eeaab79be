"""Handwritten arithmetic-operator symbols (+ - x / ÷ .) in MNIST form.

The "MDAS Symbol Dataset" v1 by Jason MacLeod (MIT license), from the repository
jdmacleod/handwritten-calculator: 28x28 grayscale PNGs, white strokes on black like
MNIST, laid out as `symbols_partitioned/{train,val,test}/<class>/<name>.png`.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import numpy.typing as npt

from federa.data.dataset import Dataset, DatasetSplit
from federa.errors import ConfigError, FederaError

__all__ = ["SYMBOL_CHARS", "load_symbols"]

SYMBOL_CHARS: dict[str, str] = {
    "addition_plus": "+",
    "subtraction_minus": "-",
    "multiplication_cross": "x",
    "division_slash": "/",
    "division_obelus": "÷",
    "multiplication_dot": ".",
}
"""The character each class folder of the operator set stands for."""

_SIZE = 28
_TEST_SPLIT = "test"
_LAYOUT = "[<one wrapping folder>/]{train,val,test}/<class>/<name>.png"
# Folders that archivers add beside the real content and that never hold data.
_IGNORED = frozenset({"__MACOSX"})

# One image: where it is (for messages) and a function that returns its bytes.
_Image = tuple[str, Callable[[], bytes]]
# Split name -> class folder name -> its images, sorted by name.
_Found = dict[str, dict[str, list[_Image]]]


def _is_png(name: str) -> bool:
    return name.lower().endswith(".png")


def _visible(name: str) -> bool:
    return not name.startswith(".") and name not in _IGNORED


def _zip_reader(zf: zipfile.ZipFile, archive: Path, member: str) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            return zf.read(member)
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise FederaError(
                f"{archive}: member {member} is corrupt ({exc}); download the archive again"
            ) from exc
        except (NotImplementedError, RuntimeError) as exc:
            # zipfile raises these for unsupported compression and for encrypted members.
            raise FederaError(
                f"{archive}: cannot read member {member} ({exc}); repack it as a plain zip"
            ) from exc

    return read


def _scan_zip(zf: zipfile.ZipFile, archive: Path, splits: Sequence[str]) -> _Found:
    """Group the PNG members of `zf` by split and class."""
    members = [(name, PurePosixPath(name).parts) for name in sorted(zf.namelist())]
    members = [(name, parts) for name, parts in members if parts and _visible(parts[0])]
    tops = {parts[0] for name, parts in members if len(parts) > 1 or name.endswith("/")}
    depth = 0
    if len(tops) == 1 and not tops & set(splits):
        depth = 1  # One wrapping folder, such as symbols_partitioned/.
    found: _Found = {split: {} for split in splits}
    for name, parts in members:
        if len(parts) < depth + 2 or parts[depth] not in found:
            continue
        if len(parts) == depth + 2 and not name.endswith("/"):
            continue  # A loose file in a split folder, not a class folder.
        images = found[parts[depth]].setdefault(parts[depth + 1], [])
        if len(parts) == depth + 3 and not name.endswith("/") and _is_png(name):
            images.append((f"{archive}: member {name}", _zip_reader(zf, archive, name)))
    return found


def _scan_folder(root: Path, splits: Sequence[str]) -> _Found:
    """Group the PNG files under `root` by split and class."""
    if not any((root / split).is_dir() for split in splits):
        subdirs = [d for d in root.iterdir() if d.is_dir() and _visible(d.name)]
        if len(subdirs) == 1:
            root = subdirs[0]  # One wrapping folder, such as symbols_partitioned/.
    found: _Found = {split: {} for split in splits}
    for split in splits:
        if not (root / split).is_dir():
            continue
        for class_dir in sorted((root / split).iterdir()):
            if class_dir.is_dir() and _visible(class_dir.name):
                files = sorted(f for f in class_dir.iterdir() if f.is_file() and _is_png(f.name))
                found[split][class_dir.name] = [(str(f), f.read_bytes) for f in files]
    return found


def _check_layout(source: Path, found: _Found) -> tuple[str, ...]:
    """Return the class names, sorted, after checking that every split holds them all."""
    for split, by_class in found.items():
        if not by_class:
            raise FederaError(
                f"{source} has no {split!r} split with class folders; lay it out as {_LAYOUT}"
            )
        for label, images in by_class.items():
            if not images:
                raise FederaError(
                    f"{source}: class folder {split}/{label} holds no .png images; "
                    "add its images or remove the folder"
                )
    first, *others = found
    classes = sorted(found[first])
    for split in others:
        if sorted(found[split]) != classes:
            raise FederaError(
                f"{source}: split {split!r} has classes {sorted(found[split])} but {first!r} "
                f"has {classes}; every split needs the same class folders"
            )
    return tuple(classes)


def _decode_all(images: Sequence[_Image]) -> npt.NDArray[np.uint8]:
    """Decode PNGs to grayscale, resized to 28x28, as uint8 of shape (N, 1, 28, 28)."""
    try:
        # Imported here so that federa.data works without OpenCV installed.
        import cv2
    except ImportError as exc:
        raise FederaError(
            "reading the operator symbols needs OpenCV, which is not installed; "
            "run pip install 'federa[data]'"
        ) from exc
    pixels = np.empty((len(images), 1, _SIZE, _SIZE), dtype=np.uint8)
    for i, (where, read) in enumerate(images):
        try:
            data = read()
        except OSError as exc:
            raise FederaError(f"cannot read {where}: {exc.strerror or exc}") from exc
        image = None
        if data:  # cv2.imdecode raises on an empty buffer rather than returning None.
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        if image is None or image.ndim != 2 or image.size == 0:
            raise FederaError(f"{where} is not a readable image; replace or delete it")
        if image.shape != (_SIZE, _SIZE):
            image = cv2.resize(image, (_SIZE, _SIZE), interpolation=cv2.INTER_AREA)
        pixels[i, 0] = image
    return pixels


def _to_dataset(
    found: _Found, splits: Sequence[str], classes: tuple[str, ...], name: str
) -> Dataset:
    """Stack the images of `splits`, ordered by split, class, then name."""
    images: list[_Image] = []
    labels: list[int] = []
    for split in splits:
        for label, class_name in enumerate(classes):
            images.extend(found[split][class_name])
            labels.extend([label] * len(found[split][class_name]))
    pixels = _decode_all(images)
    x = np.empty(pixels.shape, dtype=np.float32)
    np.divide(pixels, np.float32(255.0), out=x)
    y = np.array(labels, dtype=np.int64)
    return Dataset(x=x, y=y, num_classes=len(classes), name=name, class_names=classes)


def _build(source: Path, found: _Found, splits: tuple[str, ...]) -> DatasetSplit:
    classes = _check_layout(source, found)
    return DatasetSplit(
        train=_to_dataset(found, splits, classes, "symbols-train"),
        test=_to_dataset(found, (_TEST_SPLIT,), classes, "symbols-test"),
    )


def _check_splits(splits_for_train: Sequence[str]) -> tuple[str, ...]:
    if isinstance(splits_for_train, str):
        raise ConfigError(
            f"splits_for_train must be a sequence of split names, not the string "
            f"{splits_for_train!r}; pass a tuple such as ('train',) or ('train', 'val')"
        )
    splits = tuple(splits_for_train)
    if not splits:
        raise ConfigError("splits_for_train is empty; pass ('train',) or ('train', 'val')")
    if _TEST_SPLIT in splits:
        raise ConfigError(
            "splits_for_train must not include 'test', the held-out test set; "
            "pass ('train',) or ('train', 'val')"
        )
    if len(set(splits)) != len(splits):
        raise ConfigError(f"splits_for_train names a split twice: {splits}; name each once")
    return splits


def load_symbols(
    path: str | os.PathLike[str], splits_for_train: Sequence[str] = ("train",)
) -> DatasetSplit:
    """Load the handwritten operator symbols from their zip or an unpacked copy of it.

    The layout is `{train,val,test}/<class>/<name>.png`, optionally inside one wrapping
    folder (the original archive has `symbols_partitioned/`). A zip is read in memory,
    never extracted. Classes are the class folder names sorted alphabetically (label k
    is `class_names[k]`; `SYMBOL_CHARS` maps each name to its character). Images are
    decoded as grayscale, resized to 28x28 with area interpolation when another size,
    and scaled to [0, 1] with shape (N, 1, 28, 28). Examples are ordered by split (in
    the order of `splits_for_train`), then class, then file name.

    Args:
        path: The zip file, or a folder holding the splits (or holding one folder that
            holds them).
        splits_for_train: Splits merged into the training set; pass ("train", "val") to
            train on the validation images too. The "test" split is always the test set.

    Raises:
        ConfigError: `splits_for_train` is a string, is empty, repeats a split or names
            "test".
        FederaError: The path is missing, the zip is corrupt, a split or class folder is
            missing or empty, an image does not decode, or OpenCV is not installed. The
            message names the file.
    """
    splits = _check_splits(splits_for_train)
    wanted = (*splits, _TEST_SPLIT)
    source = Path(path)
    try:
        if source.is_dir():
            return _build(source, _scan_folder(source, wanted), splits)
        if not source.is_file():
            raise FederaError(
                f"operator symbols {source} does not exist; pass mdas_symbols_v1.zip or a "
                f"folder laid out as {_LAYOUT}"
            )
        with zipfile.ZipFile(source) as zf:
            return _build(source, _scan_zip(zf, source, wanted), splits)
    except zipfile.BadZipFile as exc:
        raise FederaError(
            f"{source} is not a valid zip file ({exc}); download mdas_symbols_v1.zip again "
            "or pass an unpacked folder"
        ) from exc
    except OSError as exc:
        raise FederaError(f"cannot read {source}: {exc.strerror or exc}; check the path") from exc
