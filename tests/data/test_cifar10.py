import re
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from federa.data.cifar10 import CIFAR10_CLASSES, load_cifar10
from federa.errors import FederaError

TRAIN_FILES = [f"data_batch_{k}.bin" for k in range(1, 6)]
RECORD = 3073


def random_images(n: int, seed: int) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def labels_of(n: int, offset: int = 0) -> npt.NDArray[np.uint8]:
    return ((np.arange(n) + offset) % 10).astype(np.uint8)


def record_bytes(labels: npt.NDArray[np.uint8], images: npt.NDArray[np.uint8]) -> bytes:
    """Encode records: a label byte, then the R, G and B planes, each row-major 32x32."""
    records = np.empty((len(labels), RECORD), np.uint8)
    records[:, 0] = labels
    records[:, 1:] = images.reshape(len(images), -1)
    return records.tobytes()


def write_cifar(root: Path, per_batch: int = 2, num_test: int = 3) -> Path:
    """Write the six batch files into root/cifar-10-batches-bin and return that folder."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for k, name in enumerate(TRAIN_FILES):
        data = record_bytes(labels_of(per_batch, k), random_images(per_batch, k))
        (folder / name).write_bytes(data)
    (folder / "test_batch.bin").write_bytes(
        record_bytes(labels_of(num_test), random_images(num_test, 9))
    )
    return folder


def names(path: Path) -> str:
    return re.escape(str(path))


def test_load_cifar10_reads_the_batches_in_order(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    split = load_cifar10(tmp_path)
    assert split.train.x.shape == (10, 3, 32, 32)
    assert split.test.x.shape == (3, 3, 32, 32)
    assert split.in_shape == (3, 32, 32)
    assert split.train.x.dtype == np.float32
    assert split.train.y.dtype == np.int64
    train_images = np.concatenate([random_images(2, k) for k in range(5)])
    train_labels = np.concatenate([labels_of(2, k) for k in range(5)])
    np.testing.assert_allclose(split.train.x * 255, train_images, atol=1e-4)
    np.testing.assert_array_equal(split.train.y, train_labels)
    np.testing.assert_allclose(split.test.x * 255, random_images(3, 9), atol=1e-4)
    np.testing.assert_array_equal(split.test.y, labels_of(3))


def test_load_cifar10_splits_a_record_into_red_green_blue_planes(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    payload = np.zeros(3072, np.uint8)
    payload[:1024] = 255  # red plane
    payload[2048:] = 51  # blue plane
    payload[1024 + 1] = 102  # green, row 0, column 1
    (folder / "test_batch.bin").write_bytes(bytes([7]) + payload.tobytes())
    test = load_cifar10(folder).test
    assert test.y.tolist() == [7]
    red, green, blue = test.x[0]
    assert red.min() == 1.0
    np.testing.assert_allclose(blue, 0.2)
    assert green[0, 1] == pytest.approx(0.4)
    assert np.count_nonzero(green) == 1


def test_load_cifar10_accepts_the_batches_folder_or_its_parent(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    from_parent = load_cifar10(str(tmp_path))
    from_folder = load_cifar10(folder)
    np.testing.assert_array_equal(from_parent.train.x, from_folder.train.x)


def test_load_cifar10_uses_the_standard_class_names_without_meta(tmp_path: Path) -> None:
    split = load_cifar10(write_cifar(tmp_path))
    assert split.train.class_names == CIFAR10_CLASSES
    assert split.train.class_names[0] == "airplane"
    assert split.test.class_names[9] == "truck"
    assert split.num_classes == 10


def test_load_cifar10_reads_class_names_from_batches_meta(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    custom = [f"class-{k}" for k in range(10)]
    (folder / "batches.meta.txt").write_text("\n".join(custom) + "\n\n\n")
    assert load_cifar10(tmp_path).train.class_names == tuple(custom)


def test_load_cifar10_rejects_a_meta_file_with_the_wrong_number_of_names(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    meta = folder / "batches.meta.txt"
    meta.write_text("cat\ndog\n")
    with pytest.raises(FederaError, match=f"{names(meta)} lists 2 class names, not 10"):
        load_cifar10(tmp_path)


def test_load_cifar10_rejects_a_truncated_batch(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    path = folder / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-10])
    expected = f"{names(path)} is 6136 bytes.*truncated or not CIFAR-10 binary"
    with pytest.raises(FederaError, match=expected):
        load_cifar10(tmp_path)


def test_load_cifar10_rejects_an_empty_batch(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    path = folder / "test_batch.bin"
    path.write_bytes(b"")
    with pytest.raises(FederaError, match=f"{names(path)} is 0 bytes"):
        load_cifar10(tmp_path)


def test_load_cifar10_rejects_a_label_above_nine(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    path = folder / "data_batch_5.bin"
    labels = labels_of(2)
    labels[1] = 10
    path.write_bytes(record_bytes(labels, random_images(2, 0)))
    with pytest.raises(FederaError, match=f"{names(path)} has label 10, outside 0..9"):
        load_cifar10(tmp_path)


def test_load_cifar10_names_a_missing_batch(tmp_path: Path) -> None:
    folder = write_cifar(tmp_path)
    (folder / "data_batch_4.bin").unlink()
    expected = f"data_batch_4.bin not found in {names(folder)}; .*test_batch.bin"
    with pytest.raises(FederaError, match=expected):
        load_cifar10(tmp_path)


def test_load_cifar10_names_a_folder_without_batches(tmp_path: Path) -> None:
    expected = f"CIFAR-10 binary files not found in {names(tmp_path)} or .*cifar-10-batches-bin"
    with pytest.raises(FederaError, match=expected):
        load_cifar10(tmp_path)


def test_load_cifar10_explains_that_the_pickled_version_is_not_read(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(FederaError, match=r"python \(pickle\) version.*binary version"):
        load_cifar10(tmp_path)


def test_load_cifar10_names_a_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FederaError, match=f"CIFAR-10 folder {names(missing)} does not exist"):
        load_cifar10(missing)
