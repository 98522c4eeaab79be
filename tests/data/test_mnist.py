import gzip
import re
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from federa.data import load_mnist, read_idx
from federa.errors import FederaError

REAL_MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


def idx_bytes(array: npt.NDArray[np.uint8]) -> bytes:
    """Encode a uint8 array as IDX: magic 0x0000 08 <ndim>, big-endian dims, then data."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: npt.NDArray[np.uint8], *, compress: bool) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def random_images(n: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)


def labels_of(n: int) -> npt.NDArray[np.uint8]:
    return (np.arange(n) % 10).astype(np.uint8)


def write_mnist(
    root: Path, num_train: int = 12, num_test: int = 5, *, compress: bool = True
) -> Path:
    suffix = ".gz" if compress else ""
    write_idx(root / f"{TRAIN_IMAGES}{suffix}", random_images(num_train), compress=compress)
    write_idx(root / f"{TRAIN_LABELS}{suffix}", labels_of(num_train), compress=compress)
    write_idx(root / f"{TEST_IMAGES}{suffix}", random_images(num_test, 1), compress=compress)
    write_idx(root / f"{TEST_LABELS}{suffix}", labels_of(num_test), compress=compress)
    return root


def names(path: Path) -> str:
    return re.escape(str(path))


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_reads_images_and_labels(tmp_path: Path, compress: bool) -> None:
    images = random_images(7)
    labels = labels_of(7)
    got_images = read_idx(write_idx(tmp_path / "images", images, compress=compress))
    got_labels = read_idx(write_idx(tmp_path / "labels", labels, compress=compress))
    assert got_images.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_read_idx_detects_gzip_by_content_not_suffix(tmp_path: Path) -> None:
    labels = labels_of(9)
    gzipped_without_suffix = write_idx(tmp_path / "labels", labels, compress=True)
    raw_with_gz_suffix = write_idx(tmp_path / "labels.gz", labels, compress=False)
    np.testing.assert_array_equal(read_idx(gzipped_without_suffix), labels)
    np.testing.assert_array_equal(read_idx(raw_with_gz_suffix), labels)


def test_read_idx_decodes_big_endian_element_types(tmp_path: Path) -> None:
    values = np.array([[1, -2], [300_000, -400_000]], dtype=">i4")
    path = tmp_path / "ints"
    path.write_bytes(bytes([0, 0, 0x0C, 2]) + struct.pack(">2I", 2, 2) + values.tobytes())
    got = read_idx(path)
    assert got.dtype == np.dtype(np.int32)
    np.testing.assert_array_equal(got, values)


def test_read_idx_accepts_an_empty_array(tmp_path: Path) -> None:
    got = read_idx(write_idx(tmp_path / "none", np.zeros((0, 28, 28), np.uint8), compress=True))
    assert got.shape == (0, 28, 28)


def test_read_idx_rejects_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "not-idx"
    path.write_bytes(b"\x89PNG" + bytes(64))
    with pytest.raises(FederaError, match=f"{names(path)} is not an IDX file.*0x89504e47"):
        read_idx(path)


def test_read_idx_rejects_unknown_element_type(tmp_path: Path) -> None:
    path = tmp_path / "odd-type"
    path.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 4) + bytes(4))
    with pytest.raises(FederaError, match=f"{names(path)} is not an IDX file"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_rejects_truncated_payload(tmp_path: Path, compress: bool) -> None:
    data = idx_bytes(random_images(3))[:-100]
    path = tmp_path / "short"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(FederaError, match=f"{names(path)} is truncated: .*2352 bytes.*2252"):
        read_idx(path)


def test_read_idx_rejects_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(labels_of(4)) + b"\x00")
    with pytest.raises(FederaError, match=f"{names(path)} has trailing bytes"):
        read_idx(path)


@pytest.mark.parametrize("content", [b"", b"\x00\x00", b"\x00\x00\x08\x03\x00\x00\x00\x02"])
def test_read_idx_rejects_truncated_header(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "stub"
    path.write_bytes(content)
    with pytest.raises(FederaError, match=names(path)):
        read_idx(path)


def test_read_idx_rejects_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    compressed = gzip.compress(idx_bytes(random_images(4)))
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(FederaError, match=f"{names(path)} is a truncated gzip file"):
        read_idx(path)


def test_read_idx_rejects_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "bad-crc.gz"
    compressed = bytearray(gzip.compress(idx_bytes(labels_of(50))))
    compressed[-8] ^= 0xFF  # the CRC32 of the content
    path.write_bytes(bytes(compressed))
    with pytest.raises(FederaError, match=f"{names(path)} is not a valid gzip file"):
        read_idx(path)


def test_read_idx_names_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.gz"
    with pytest.raises(FederaError, match=f"cannot read {names(path)}"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_scales_pixels_and_keeps_labels(tmp_path: Path, compress: bool) -> None:
    split = load_mnist(write_mnist(tmp_path, compress=compress))
    assert split.train.x.shape == (12, 1, 28, 28)
    assert split.test.x.shape == (5, 1, 28, 28)
    assert split.train.x.dtype == np.float32
    assert split.train.y.dtype == np.int64
    assert split.in_shape == (1, 28, 28)
    assert split.num_classes == 10
    np.testing.assert_allclose(split.train.x[:, 0] * 255, random_images(12), atol=1e-4)
    np.testing.assert_array_equal(split.test.y, labels_of(5))


def test_load_mnist_prefers_gzip_when_both_exist(tmp_path: Path) -> None:
    write_mnist(tmp_path, num_train=12, compress=True)
    write_mnist(tmp_path, num_train=3, compress=False)
    assert len(load_mnist(str(tmp_path)).train) == 12


def test_load_mnist_rejects_image_and_label_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    labels = write_idx(tmp_path / f"{TRAIN_LABELS}.gz", labels_of(11), compress=True)
    images = tmp_path / f"{TRAIN_IMAGES}.gz"
    expected = f"{names(images)} has 12 images but {names(labels)} has 11 labels"
    with pytest.raises(FederaError, match=expected):
        load_mnist(tmp_path)


def test_load_mnist_rejects_labels_file_in_place_of_images(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    images = write_idx(tmp_path / f"{TEST_IMAGES}.gz", labels_of(5), compress=True)
    with pytest.raises(FederaError, match=f"{names(images)} holds uint8 data with 1 dim"):
        load_mnist(tmp_path)


def test_load_mnist_rejects_labels_outside_zero_to_nine(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    labels = write_idx(tmp_path / f"{TEST_LABELS}.gz", np.full(5, 10, np.uint8), compress=True)
    with pytest.raises(FederaError, match=f"{names(labels)} has label 10"):
        load_mnist(tmp_path)


def test_load_mnist_names_a_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FederaError, match=f"MNIST folder {names(missing)} does not exist"):
        load_mnist(missing)


def test_load_mnist_names_a_missing_file_and_the_files_expected(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / f"{TEST_LABELS}.gz").unlink()
    expected = f"{TEST_LABELS}\\(\\.gz\\) not found in {names(tmp_path)}.*{TRAIN_IMAGES}"
    with pytest.raises(FederaError, match=expected):
        load_mnist(tmp_path)


@pytest.mark.skipif(
    not REAL_MNIST.is_dir(), reason="../shared/data/mnist not present (real MNIST files)"
)
def test_load_mnist_reads_the_real_files() -> None:
    split = load_mnist(REAL_MNIST)
    assert split.train.x.shape == (60_000, 1, 28, 28)
    assert split.test.x.shape == (10_000, 1, 28, 28)
    assert (split.train.x.min(), split.train.x.max()) == (0.0, 1.0)
    # Class counts as listed in ../shared/data/mnist/SOURCE.md.
    train_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    test_counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(split.train.y).tolist() == train_counts
    assert np.bincount(split.test.y).tolist() == test_counts
    assert (split.train.y[0], split.test.y[0]) == (5, 7)
