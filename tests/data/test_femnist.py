import gzip
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from federa.data.dataset import DatasetSplit
from federa.data.femnist import load_femnist
from federa.errors import FederaError

REAL_FEMNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "femnist"


def leaf_images(n: int, seed: int) -> npt.NDArray[np.float64]:
    """Return n LEAF-style images: white background (1.0), a few dark ink pixels, k/255."""
    rng = np.random.default_rng(seed)
    images = np.ones((n, 784))
    ink = rng.random((n, 784)) < 0.1
    images[ink] = rng.integers(0, 128, size=int(ink.sum())) / 255
    return images


def leaf_object(users: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Build a LEAF object; users maps a user id to (num_samples, seed)."""
    user_data = {}
    for user, (num, seed) in users.items():
        labels = [(seed * 7 + k) % 62 for k in range(num)]
        user_data[user] = {"x": leaf_images(num, seed).tolist(), "y": labels}
    return {
        "users": list(users),
        "num_samples": [num for num, _ in users.values()],
        "user_data": user_data,
    }


def write_leaf(path: Path, obj: Any, *, compress: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(obj).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_femnist(root: Path) -> Path:
    """Write two train files and one test file; f3 has test data only."""
    write_leaf(root / "train" / "all_data_0_train_9.json.gz", leaf_object({"f2": (4, 2)}))
    write_leaf(
        root / "train" / "all_data_1_train_9.json", leaf_object({"f1": (3, 1)}), compress=False
    )
    write_leaf(
        root / "test" / "all_data_0_test_9.json.gz", leaf_object({"f3": (2, 3), "f1": (1, 4)})
    )
    return root


def names(path: Path) -> str:
    return re.escape(str(path))


def test_load_femnist_gives_a_writer_the_same_group_in_train_and_test(tmp_path: Path) -> None:
    split = load_femnist(write_femnist(tmp_path))
    assert split.train.group_names == split.test.group_names == ("f1", "f2", "f3")
    assert split.train.groups is not None
    assert split.test.groups is not None
    assert split.train.groups.dtype == np.int64
    # Examples are ordered by group, each writer's in file order.
    assert split.train.groups.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert split.test.groups.tolist() == [0, 2, 2]
    assert split.train.y.tolist() == [7, 8, 9, 14, 15, 16, 17]
    assert split.test.y.tolist() == [28, 21, 22]
    assert split.train.y.dtype == np.int64


def test_load_femnist_returns_mnist_polarity_by_default(tmp_path: Path) -> None:
    split = load_femnist(write_femnist(tmp_path))
    assert split.train.x.shape == (7, 1, 28, 28)
    assert split.test.x.shape == (3, 1, 28, 28)
    assert split.train.x.dtype == np.float32
    expected = 1 - np.concatenate([leaf_images(3, 1), leaf_images(4, 2)]).reshape(7, 1, 28, 28)
    np.testing.assert_allclose(split.train.x, expected, atol=1e-6)
    assert np.median(split.train.x) == 0.0


def test_load_femnist_keeps_leaf_polarity_when_asked(tmp_path: Path) -> None:
    split = load_femnist(write_femnist(tmp_path), invert=False)
    expected = np.concatenate([leaf_images(1, 4), leaf_images(2, 3)]).reshape(3, 1, 28, 28)
    np.testing.assert_allclose(split.test.x, expected, atol=1e-6)
    assert np.median(split.test.x) == 1.0


def test_load_femnist_names_the_62_classes(tmp_path: Path) -> None:
    split = load_femnist(write_femnist(tmp_path))
    assert split.num_classes == 62
    assert "".join(split.train.class_names) == (
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    )
    assert split.train.name == "femnist-train"


def test_load_femnist_detects_gzip_by_content_not_suffix(tmp_path: Path) -> None:
    write_femnist(tmp_path)
    obj = leaf_object({"f9": (2, 9)})
    write_leaf(tmp_path / "test" / "gzipped.json", obj, compress=True)
    write_leaf(tmp_path / "test" / "plain.json.gz", leaf_object({"f8": (1, 8)}), compress=False)
    split = load_femnist(tmp_path)
    assert split.test.group_names[-2:] == ("f8", "f9")
    assert len(split.test) == 6


def test_load_femnist_ignores_other_folders_and_files(tmp_path: Path) -> None:
    write_femnist(tmp_path)
    write_leaf(
        tmp_path / "test_unpaired" / "all_data_5_test_9.json.gz", leaf_object({"f5": (3, 5)})
    )
    (tmp_path / "train" / "README.md").write_text("not data")
    (tmp_path / "train" / "nested").mkdir()
    write_leaf(tmp_path / "train" / "nested" / "x.json", leaf_object({"f6": (3, 6)}))
    split = load_femnist(tmp_path)
    assert split.train.group_names == ("f1", "f2", "f3")
    assert (len(split.train), len(split.test)) == (7, 3)


def test_load_femnist_accepts_a_user_with_no_samples(tmp_path: Path) -> None:
    write_femnist(tmp_path)
    empty = {"users": ["f0"], "num_samples": [0], "user_data": {"f0": {"x": [], "y": []}}}
    write_leaf(tmp_path / "test" / "empty.json", empty)
    split = load_femnist(tmp_path)
    assert split.test.group_names[0] == "f0"
    assert len(split.test) == 3


def test_load_femnist_names_a_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(
        FederaError, match=f"FEMNIST folder {names(missing)} does not exist.*train/"
    ):
        load_femnist(missing)


def test_load_femnist_names_a_missing_part_and_the_layout(tmp_path: Path) -> None:
    write_leaf(tmp_path / "train" / "a.json.gz", leaf_object({"f1": (2, 1)}))
    expected = f"FEMNIST folder {names(tmp_path / 'test')} does not exist.*train/ and test/"
    with pytest.raises(FederaError, match=expected):
        load_femnist(tmp_path)


def test_load_femnist_names_a_folder_without_json_files(tmp_path: Path) -> None:
    write_femnist(tmp_path)
    for path in (tmp_path / "train").iterdir():
        path.unlink()
    (tmp_path / "train" / "notes.txt").write_text("")
    expected = f"{names(tmp_path / 'train')} holds no \\*.json or \\*.json.gz files"
    with pytest.raises(FederaError, match=expected):
        load_femnist(tmp_path)


def test_load_femnist_rejects_invalid_json(tmp_path: Path) -> None:
    write_femnist(tmp_path)
    path = tmp_path / "test" / "broken.json"
    path.write_text('{"users": ["f1", ')
    with pytest.raises(FederaError, match=f"{names(path)} is not valid JSON .*line 1 column"):
        load_femnist(tmp_path)


def test_load_femnist_rejects_a_truncated_gzip_file(tmp_path: Path) -> None:
    write_femnist(tmp_path)
    path = tmp_path / "train" / "all_data_0_train_9.json.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FederaError, match=f"{names(path)} is a truncated gzip file"):
        load_femnist(tmp_path)


def test_load_femnist_rejects_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    write_femnist(tmp_path)
    path = tmp_path / "test" / "latin1.json"
    path.write_bytes(b'{"users": ["\xe9"]}')
    with pytest.raises(FederaError, match=f"{names(path)} is not UTF-8 JSON"):
        load_femnist(tmp_path)


def broken(**changes: Any) -> dict[str, Any]:
    obj = leaf_object({"f7": (2, 7), "f8": (3, 8)})
    obj.update(changes)
    return obj


def with_user(**fields: Any) -> dict[str, Any]:
    obj = leaf_object({"f7": (2, 7)})
    obj["user_data"]["f7"].update(fields)
    return obj


ROW = [0.5] * 784


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ([1, 2], "holds a JSON list, not a LEAF object"),
        (broken(users=None), "LEAF key 'users' is a NoneType, expected a list"),
        ({"users": [], "num_samples": []}, "LEAF key 'user_data' is missing, expected a dict"),
        (broken(num_samples=[2]), "lists 2 users, 1 num_samples and 2 user_data entries"),
        (broken(users=["f7", "f9"]), "lists 2 users, 2 num_samples and 2 user_data"),
        (broken(users=["f7", "f7"]), "users must be distinct strings"),
        (broken(users=["f7", 8]), "users must be distinct strings"),
        (broken(num_samples=[2, 4]), "user 'f8' has 3 images and 3 labels but num_samples says 4"),
        (with_user(x=[ROW, ROW[:-1]]), "user 'f7' has x or y that is not a list of numbers"),
        (with_user(x=[ROW[:-1], ROW[:-1]]), "user 'f7' has x of shape \\(2, 783\\); each image"),
        (with_user(x=[ROW]), "user 'f7' has 1 images and 2 labels but num_samples says 2"),
        (with_user(y=[1]), "user 'f7' has 2 images and 1 labels"),
        (with_user(y=[1, 62]), "user 'f7' has label 62, outside 0..61"),
        (with_user(y=[-1, 3]), "user 'f7' has label -1, outside 0..61"),
        (with_user(y=[1.0, 3.0]), "user 'f7' has y that is not a flat list of integer labels"),
        (with_user(x=[ROW, [*ROW[:-1], 1.5]]), "user 'f7' has pixel values outside \\[0, 1\\]"),
        (with_user(x=[ROW, [*ROW[:-1], float("nan")]]), "user 'f7' has pixel values outside"),
        (with_user(x=[ROW, ["a"] * 784]), "user 'f7' has x or y that is not a list of numbers"),
        (broken(user_data={"f7": [], "f8": {}}), "user 'f7' has no x and y lists"),
    ],
)
def test_load_femnist_rejects_files_that_break_the_leaf_schema(
    tmp_path: Path, obj: Any, expected: str
) -> None:
    write_femnist(tmp_path)
    path = write_leaf(tmp_path / "train" / "bad.json.gz", obj)
    with pytest.raises(FederaError, match=f"{names(path)}:? {expected}"):
        load_femnist(tmp_path)


def test_load_femnist_rejects_a_user_in_two_files(tmp_path: Path) -> None:
    write_femnist(tmp_path)
    first = tmp_path / "train" / "all_data_1_train_9.json"
    second = write_leaf(tmp_path / "train" / "copy.json", leaf_object({"f1": (3, 1)}))
    with pytest.raises(
        FederaError, match=f"user 'f1' appears in both {names(first)} and {names(second)}"
    ):
        load_femnist(tmp_path)


def test_load_femnist_rejects_a_part_without_examples(tmp_path: Path) -> None:
    write_femnist(tmp_path)
    for path in (tmp_path / "test").iterdir():
        path.unlink()
    write_leaf(tmp_path / "test" / "none.json", {"users": [], "num_samples": [], "user_data": {}})
    with pytest.raises(FederaError, match=f"{names(tmp_path / 'test')} holds no examples"):
        load_femnist(tmp_path)


# Paired writers and sample counts from ../shared/data/femnist/SOURCE.md, and the first
# twelve train labels of one writer per folder as shown in its samples.png.
REAL_FOLDERS = {
    "slz-ai__leaf-torch": (105, 14_708, 1_685, "f3313_11", "ttmscgxckrya"),
    "wenzhu23333__Federated-Learning": (105, 14_640, 1_677, "f3152_47", "MMXYIACZQESP"),
    "arakotom__flic": (110, 14_697, 1_695, "f1695_12", "qqcklxhzgpvn"),
}


@pytest.fixture(scope="module", params=list(REAL_FOLDERS))
def real_femnist(request: pytest.FixtureRequest) -> tuple[str, DatasetSplit]:
    if not REAL_FEMNIST.is_dir():
        pytest.skip("../shared/data/femnist not present (real FEMNIST files)")
    folder: str = request.param
    return folder, load_femnist(REAL_FEMNIST / folder)


def test_load_femnist_reads_the_real_paired_writers(real_femnist: tuple[str, DatasetSplit]) -> None:
    folder, split = real_femnist
    num_writers, num_train, num_test, _, _ = REAL_FOLDERS[folder]
    assert (len(split.train), len(split.test)) == (num_train, num_test)
    assert split.train.groups is not None
    assert split.test.groups is not None
    # test_unpaired/ is ignored, so every writer has train and test examples.
    assert len(split.train.group_names) == num_writers
    assert np.unique(split.train.groups).tolist() == list(range(num_writers))
    assert np.unique(split.test.groups).tolist() == list(range(num_writers))
    assert np.bincount(split.train.y, minlength=62).min() > 0


def test_load_femnist_reads_real_images_in_mnist_polarity(
    real_femnist: tuple[str, DatasetSplit],
) -> None:
    _, split = real_femnist
    for part in (split.train, split.test):
        assert part.x.shape[1:] == (1, 28, 28)
        assert (part.x.min(), part.x.max()) == (0.0, 1.0)
        assert np.median(part.x) == 0.0  # background
        assert part.x.mean() < 0.1


def test_load_femnist_keeps_real_labels_in_order(real_femnist: tuple[str, DatasetSplit]) -> None:
    folder, split = real_femnist
    *_, writer, labels = REAL_FOLDERS[folder]
    assert split.train.groups is not None
    group = split.train.group_names.index(writer)
    first = np.flatnonzero(split.train.groups == group)[:12]
    assert "".join(split.train.class_names[k] for k in split.train.y[first]) == labels
