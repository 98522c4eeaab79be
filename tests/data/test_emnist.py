import gzip
import re
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from federa.data.emnist import EMNIST_SPLITS, load_emnist
from federa.errors import ConfigError, FederaError

NUM_CLASSES = {
    "balanced": 47,
    "byclass": 62,
    "bymerge": 47,
    "digits": 10,
    "letters": 26,
    "mnist": 10,
}


def idx_bytes(array: npt.NDArray[np.uint8]) -> bytes:
    """Encode a uint8 array as IDX: magic 0x0000 08 <ndim>, big-endian dims, then data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: npt.NDArray[np.uint8], *, compress: bool = True) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def upright_images(n: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def stored_labels(split: str, n: int) -> npt.NDArray[np.uint8]:
    first = 1 if split == "letters" else 0
    return (first + np.arange(n) % NUM_CLASSES[split]).astype(np.uint8)


def stem(split: str, part: str, kind: str) -> str:
    return f"emnist-{split}-{part}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"


def write_emnist(
    root: Path,
    split: str = "balanced",
    num_train: int = 12,
    num_test: int = 5,
    *,
    compress: bool = True,
) -> Path:
    """Write one split as NIST does: each image stored transposed."""
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compress else ""
    for part, num, seed in (("train", num_train, 0), ("test", num_test, 1)):
        stored = upright_images(num, seed).transpose(0, 2, 1).copy()
        write_idx(root / f"{stem(split, part, 'images')}{suffix}", stored, compress=compress)
        labels = stored_labels(split, num)
        write_idx(root / f"{stem(split, part, 'labels')}{suffix}", labels, compress=compress)
    return root


def names(path: Path) -> str:
    return re.escape(str(path))


@pytest.mark.parametrize("compress", [False, True])
def test_load_emnist_turns_the_transposed_images_upright(tmp_path: Path, compress: bool) -> None:
    split = load_emnist(write_emnist(tmp_path, compress=compress))
    assert split.train.x.shape == (12, 1, 28, 28)
    assert split.test.x.shape == (5, 1, 28, 28)
    assert split.train.x.dtype == np.float32
    np.testing.assert_allclose(split.train.x[:, 0] * 255, upright_images(12), atol=1e-4)
    np.testing.assert_allclose(split.test.x[:, 0] * 255, upright_images(5, 1), atol=1e-4)


def test_load_emnist_swaps_height_and_width_of_non_square_images(tmp_path: Path) -> None:
    stored = np.zeros((2, 4, 6), np.uint8)  # stored as (N, width, height)
    stored[:, 0, :] = 255  # the first stored row is the first upright column
    for part in ("train", "test"):
        write_idx(tmp_path / f"{stem('digits', part, 'images')}.gz", stored)
        write_idx(tmp_path / f"{stem('digits', part, 'labels')}.gz", np.zeros(2, np.uint8))
    x = load_emnist(tmp_path, "digits").test.x
    assert x.shape == (2, 1, 6, 4)
    assert x[:, 0, :, 0].min() == 1.0
    assert x[:, 0, :, 1:].max() == 0.0


@pytest.mark.parametrize("name", EMNIST_SPLITS)
def test_load_emnist_gives_each_split_its_classes(tmp_path: Path, name: str) -> None:
    num_classes = NUM_CLASSES[name]
    split = load_emnist(write_emnist(tmp_path, name, num_train=num_classes + 3), split=name)
    assert split.num_classes == num_classes
    assert len(split.train.class_names) == num_classes
    assert split.train.class_names == split.test.class_names
    assert split.train.name == f"emnist-{name}-train"
    assert split.train.y.dtype == np.int64
    # Labels start at 0 whatever the stored range (letters stores 1..26).
    np.testing.assert_array_equal(split.train.y, np.arange(num_classes + 3) % num_classes)


def test_load_emnist_names_the_classes_of_each_split(tmp_path: Path) -> None:
    for name in EMNIST_SPLITS:
        write_emnist(tmp_path, name)
    byclass = load_emnist(tmp_path, "byclass").train.class_names
    assert "".join(byclass) == ("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    for merged in ("balanced", "bymerge"):
        names_ = load_emnist(tmp_path, merged).train.class_names
        assert "".join(names_) == "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt"
    letters = load_emnist(tmp_path, "letters").train.class_names
    assert (letters[0], letters[25]) == ("A/a", "Z/z")
    assert load_emnist(tmp_path, "digits").train.class_names == tuple("0123456789")
    assert load_emnist(tmp_path, "mnist").train.class_names == tuple("0123456789")


def test_load_emnist_reads_the_gzip_subfolder_of_nists_zip(tmp_path: Path) -> None:
    write_emnist(tmp_path / "gzip", "letters", num_train=7)
    split = load_emnist(tmp_path, split="letters")
    assert len(split.train) == 7
    np.testing.assert_array_equal(split.train.y, np.arange(7))


def test_load_emnist_prefers_the_top_folder_over_the_gzip_subfolder(tmp_path: Path) -> None:
    write_emnist(tmp_path / "gzip", num_train=3)
    write_emnist(tmp_path, num_train=12)
    assert len(load_emnist(tmp_path).train) == 12


def test_load_emnist_rejects_an_unknown_split(tmp_path: Path) -> None:
    write_emnist(tmp_path)
    allowed = "balanced, byclass, bymerge, digits, letters, mnist"
    with pytest.raises(ConfigError, match=f"unknown EMNIST split 'digit'; pick one of {allowed}"):
        load_emnist(tmp_path, split="digit")


@pytest.mark.parametrize(
    ("name", "label", "expected"),
    [("balanced", 47, "47, outside 0..46"), ("digits", 10, "10, outside 0..9"),
     ("letters", 0, "0, outside 1..26"), ("letters", 27, "27, outside 1..26")],
)  # fmt: skip
def test_load_emnist_rejects_labels_outside_the_split(
    tmp_path: Path, name: str, label: int, expected: str
) -> None:
    write_emnist(tmp_path, name)
    labels = stored_labels(name, 5)
    labels[3] = label
    path = write_idx(tmp_path / f"{stem(name, 'test', 'labels')}.gz", labels)
    with pytest.raises(FederaError, match=f"{names(path)} has label {expected} .*'{name}'"):
        load_emnist(tmp_path, name)


def test_load_emnist_rejects_image_and_label_count_mismatch(tmp_path: Path) -> None:
    write_emnist(tmp_path)
    labels = write_idx(
        tmp_path / f"{stem('balanced', 'train', 'labels')}.gz", np.zeros(11, np.uint8)
    )
    images = tmp_path / f"{stem('balanced', 'train', 'images')}.gz"
    with pytest.raises(FederaError, match=f"{names(images)} has 12 images but {names(labels)}"):
        load_emnist(tmp_path)


def test_load_emnist_rejects_labels_file_in_place_of_images(tmp_path: Path) -> None:
    write_emnist(tmp_path)
    images = write_idx(tmp_path / f"{stem('balanced', 'test', 'images')}.gz", np.zeros(5, np.uint8))
    with pytest.raises(FederaError, match=f"{names(images)} holds uint8 data with 1 dim"):
        load_emnist(tmp_path)


def test_load_emnist_names_a_damaged_file(tmp_path: Path) -> None:
    write_emnist(tmp_path)
    path = tmp_path / f"{stem('balanced', 'train', 'images')}.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(FederaError, match=f"{names(path)} is a truncated gzip file"):
        load_emnist(tmp_path)


def test_load_emnist_names_a_missing_file_and_the_files_expected(tmp_path: Path) -> None:
    write_emnist(tmp_path, "digits")
    missing = stem("letters", "train", "images")
    expected = (
        f"EMNIST file {missing}\\(\\.gz\\) not found in {names(tmp_path)} or "
        f"{names(tmp_path / 'gzip')}; for split 'letters' .*emnist-letters-test-labels-idx1-ubyte"
    )
    with pytest.raises(FederaError, match=expected):
        load_emnist(tmp_path, "letters")


def test_load_emnist_names_a_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FederaError, match=f"EMNIST folder {names(missing)} does not exist"):
        load_emnist(missing)
