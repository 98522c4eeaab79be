import re
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from federa.data.symbols import SYMBOL_CHARS, load_symbols
from federa.errors import ConfigError, FederaError

REPO = Path(__file__).resolve().parents[2]
REAL_SYMBOLS = REPO.parent / "shared" / "data" / "math_symbols" / "mdas_symbols_v1.zip"
WRAPPER = "symbols_partitioned"
# Three of the six real classes, named in non-alphabetical order on purpose.
CLASSES = ("subtraction_minus", "addition_plus", "division_slash")
SORTED = tuple(sorted(CLASSES))
COUNTS = {"train": 4, "val": 2, "test": 3}


def symbol_image(seed: int, size: int = 28) -> npt.NDArray[np.uint8]:
    """A random stroke-like image: mostly black with a few bright pixels."""
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size), np.uint8)
    rows, cols = rng.integers(0, size, 40), rng.integers(0, size, 40)
    image[rows, cols] = rng.integers(1, 256, 40, dtype=np.uint8)
    return image


def png(image: npt.NDArray[np.uint8]) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def symbol_files(
    classes: tuple[str, ...] = CLASSES, counts: dict[str, int] | None = None
) -> dict[str, bytes]:
    """PNG bytes by relative path split/class/name.png, each image distinct."""
    files = {}
    seed = 0
    for split, count in (counts or COUNTS).items():
        for name in classes:
            for k in range(count):
                seed += 1
                # Reverse-sorted names check that loading orders by file name.
                files[f"{split}/{name}/{name}-{9 - k}.png"] = png(symbol_image(seed))
    return files


def write_zip(
    path: Path,
    files: dict[str, bytes],
    wrapper: str = WRAPPER,
    compression: int = zipfile.ZIP_DEFLATED,
) -> Path:
    prefix = f"{wrapper}/" if wrapper else ""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for rel, data in files.items():
            zf.writestr(prefix + rel, data)
    return path


def write_folder(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def expected_pixels(files: dict[str, bytes], split: str) -> npt.NDArray[np.float32]:
    """Decode the split's images in load order: class name, then file name."""
    names = sorted(rel for rel in files if rel.startswith(f"{split}/"))
    images = [cv2.imdecode(np.frombuffer(files[n], np.uint8), 0) for n in names]
    return (np.stack(images)[:, None] / np.float32(255.0)).astype(np.float32)


def names(path: Path | str) -> str:
    return re.escape(str(path))


@pytest.mark.parametrize("source", ["zip", "bare-zip", "folder", "wrapped-folder"])
def test_load_symbols_reads_every_layout_alike(tmp_path: Path, source: str) -> None:
    files = symbol_files()
    path = {
        "zip": lambda: write_zip(tmp_path / "s.zip", files),
        "bare-zip": lambda: write_zip(tmp_path / "s.zip", files, wrapper=""),
        "folder": lambda: write_folder(tmp_path / WRAPPER, files),
        "wrapped-folder": lambda: write_folder(tmp_path / "top" / WRAPPER, files).parent,
    }[source]()
    split = load_symbols(path)
    assert split.train.x.shape == (3 * 4, 1, 28, 28)
    assert split.test.x.shape == (3 * 3, 1, 28, 28)
    assert split.train.x.dtype == np.float32
    assert split.train.y.dtype == np.int64
    assert split.num_classes == 3
    assert split.train.class_names == split.test.class_names == SORTED
    np.testing.assert_array_equal(split.train.y, np.repeat([0, 1, 2], 4))
    np.testing.assert_array_equal(split.test.y, np.repeat([0, 1, 2], 3))
    np.testing.assert_array_equal(split.train.x, expected_pixels(files, "train"))
    np.testing.assert_array_equal(split.test.x, expected_pixels(files, "test"))
    assert (split.train.name, split.test.name) == ("symbols-train", "symbols-test")


def test_load_symbols_merges_the_requested_splits_into_train_in_order(tmp_path: Path) -> None:
    files = symbol_files()
    split = load_symbols(write_zip(tmp_path / "s.zip", files), splits_for_train=("train", "val"))
    assert len(split.train) == 3 * (4 + 2)
    np.testing.assert_array_equal(split.train.x[:12], expected_pixels(files, "train"))
    np.testing.assert_array_equal(split.train.x[12:], expected_pixels(files, "val"))
    np.testing.assert_array_equal(split.train.y[12:], np.repeat([0, 1, 2], 2))
    assert len(split.test) == 3 * 3


def test_load_symbols_resizes_other_sizes_with_area_interpolation(tmp_path: Path) -> None:
    big = symbol_image(1, size=56)
    files = symbol_files(counts={"train": 1, "test": 1})
    files["train/addition_plus/addition_plus-9.png"] = png(big)
    split = load_symbols(write_zip(tmp_path / "s.zip", files))
    expected = cv2.resize(big, (28, 28), interpolation=cv2.INTER_AREA) / np.float32(255.0)
    np.testing.assert_array_equal(split.train.x[0, 0], expected.astype(np.float32))


def test_load_symbols_reads_colour_pngs_as_grayscale(tmp_path: Path) -> None:
    files = symbol_files(counts={"train": 1, "test": 1})
    files["train/addition_plus/addition_plus-9.png"] = png(np.full((28, 28, 3), 255, np.uint8))
    split = load_symbols(write_zip(tmp_path / "s.zip", files))
    np.testing.assert_array_equal(split.train.x[0], np.ones((1, 28, 28), np.float32))


def test_load_symbols_skips_files_that_are_not_class_images(tmp_path: Path) -> None:
    files = symbol_files()
    clean = load_symbols(write_zip(tmp_path / "clean.zip", files))
    extra = {
        **files,
        "README.md": b"notes",
        "train/notes.txt": b"a loose file in a split folder",
        "train/addition_plus/Thumbs.db": b"\x00",
        ".hidden/x.png": b"",
    }
    with zipfile.ZipFile(write_zip(tmp_path / "extra.zip", extra), "a") as zf:
        zf.writestr(f"__MACOSX/{WRAPPER}/train/._a.png", b"resource fork")
    split = load_symbols(tmp_path / "extra.zip")
    np.testing.assert_array_equal(split.train.x, clean.train.x)
    np.testing.assert_array_equal(split.train.y, clean.train.y)


def test_symbol_chars_name_the_six_operators() -> None:
    assert sorted(SYMBOL_CHARS.values()) == sorted("+-x/÷.")
    assert set(SYMBOL_CHARS) >= set(CLASSES)


def test_load_symbols_names_a_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.zip"
    with pytest.raises(FederaError, match=f"operator symbols {names(missing)} does not exist"):
        load_symbols(missing)


def test_load_symbols_rejects_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "symbols.zip"
    path.write_bytes(b"PK\x03\x04 this is not really a zip" * 10)
    with pytest.raises(FederaError, match=f"{names(path)} is not a valid zip file"):
        load_symbols(path)


def test_load_symbols_rejects_a_zip_cut_short(tmp_path: Path) -> None:
    path = write_zip(tmp_path / "symbols.zip", symbol_files())
    path.write_bytes(path.read_bytes()[:-200])  # loses the central directory's end
    with pytest.raises(FederaError, match=f"{names(path)} is not a valid zip file"):
        load_symbols(path)


def test_load_symbols_names_a_corrupt_member(tmp_path: Path) -> None:
    files = symbol_files()
    member = "train/division_slash/division_slash-7.png"
    path = write_zip(tmp_path / "symbols.zip", files, compression=zipfile.ZIP_STORED)
    content = bytearray(path.read_bytes())
    at = content.index(files[member]) + len(files[member]) // 2
    content[at] ^= 0xFF  # the stored CRC-32 no longer matches
    path.write_bytes(bytes(content))
    with pytest.raises(FederaError, match=f"{names(path)}: member {WRAPPER}/{member} is corrupt"):
        load_symbols(path)


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n truncated", b"not an image"])
def test_load_symbols_names_an_image_that_does_not_decode(tmp_path: Path, content: bytes) -> None:
    files = symbol_files()
    member = "test/subtraction_minus/subtraction_minus-8.png"
    files[member] = content
    path = write_zip(tmp_path / "s.zip", files)
    with pytest.raises(FederaError, match=f"member {WRAPPER}/{member} is not a readable image"):
        load_symbols(path)
    folder = write_folder(tmp_path / "folder", files)
    with pytest.raises(FederaError, match=f"{names(folder / member)} is not a readable image"):
        load_symbols(folder)


def test_load_symbols_rejects_an_empty_class_folder(tmp_path: Path) -> None:
    files = symbol_files()
    folder = write_folder(tmp_path / "folder", files)
    (folder / "val" / "division_obelus").mkdir()
    (folder / "train" / "division_obelus").mkdir()
    with pytest.raises(FederaError, match=r"class folder train/division_obelus holds no \.png"):
        load_symbols(folder)
    path = write_zip(tmp_path / "s.zip", files)
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(f"{WRAPPER}/test/multiplication_dot/", b"")  # a directory entry
    with pytest.raises(FederaError, match=r"class folder test/multiplication_dot holds no \.png"):
        load_symbols(path)


def test_load_symbols_rejects_a_layout_without_images(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FederaError, match=f"{names(empty)} has no 'train' split"):
        load_symbols(empty)
    path = write_zip(tmp_path / "s.zip", {"readme.txt": b"nothing here"})
    with pytest.raises(FederaError, match=f"{names(path)} has no 'train' split"):
        load_symbols(path)


def test_load_symbols_rejects_a_missing_split(tmp_path: Path) -> None:
    files = {rel: data for rel, data in symbol_files().items() if not rel.startswith("test/")}
    path = write_zip(tmp_path / "s.zip", files)
    with pytest.raises(FederaError, match=r"has no 'test' split.*\{train,val,test\}"):
        load_symbols(path)
    with pytest.raises(FederaError, match="has no 'extra' split"):
        load_symbols(write_zip(tmp_path / "t.zip", symbol_files()), ("train", "extra"))


def test_load_symbols_rejects_splits_with_different_classes(tmp_path: Path) -> None:
    files = {
        rel: data for rel, data in symbol_files().items() if not rel.startswith("test/division")
    }
    with pytest.raises(FederaError, match=r"split 'test' has classes .* every split needs"):
        load_symbols(write_zip(tmp_path / "s.zip", files))


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ("train", "not the string 'train'"),
        ((), "splits_for_train is empty"),
        (("train", "test"), "must not include 'test'"),
        (("train", "train"), "names a split twice"),
    ],
)
def test_load_symbols_rejects_bad_splits_for_train(
    tmp_path: Path, splits: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_symbols(tmp_path, splits)


def test_load_symbols_says_how_to_install_opencv_when_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_zip(tmp_path / "s.zip", symbol_files())
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(FederaError, match=r"pip install 'federa\[data\]'"):
        load_symbols(path)


@pytest.mark.skipif(
    not REAL_SYMBOLS.is_file(),
    reason="../shared/data/math_symbols not present (real operator symbols)",
)
def test_load_symbols_reads_the_real_archive() -> None:
    start = time.perf_counter()
    split = load_symbols(REAL_SYMBOLS)
    seconds = time.perf_counter() - start
    assert split.train.x.shape == (4803, 1, 28, 28)
    assert split.test.x.shape == (603, 1, 28, 28)
    assert split.train.class_names == (
        "addition_plus",
        "division_obelus",
        "division_slash",
        "multiplication_cross",
        "multiplication_dot",
        "subtraction_minus",
    )
    # Counts per class as listed in ../shared/data/math_symbols/SOURCE.md.
    assert np.bincount(split.train.y).tolist() == [801, 800, 800, 801, 801, 800]
    assert np.bincount(split.test.y).tolist() == [101, 100, 100, 101, 101, 100]
    assert (split.train.x.min(), split.train.x.max()) == (0.0, 1.0)
    # White strokes on black like MNIST: the mean pixel is about 12 of 255.
    assert 0.02 < float(split.train.x.mean()) < 0.08
    assert seconds < 10, f"loading the real archive took {seconds:.1f} s"


@pytest.mark.skipif(
    not REAL_SYMBOLS.is_file(),
    reason="../shared/data/math_symbols not present (real operator symbols)",
)
def test_load_symbols_adds_the_real_validation_split_on_request() -> None:
    split = load_symbols(REAL_SYMBOLS, splits_for_train=("train", "val"))
    assert len(split.train) == 4803 + 600
    assert len(split.test) == 603
