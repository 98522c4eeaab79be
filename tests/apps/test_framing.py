"""The calculator's input format: MNIST framing and equal contrast, in training and reading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from federa.apps.calculator.preprocess import stroke_width, to_model_input
from federa.cli.config import RunConfig
from federa.cli.experiment import load_dataset
from federa.cli.rundir import model_metadata
from federa.data import load_calculator
from federa.data.framing import calculator_format, frame_like_mnist, stretch_ink
from federa.errors import FederaError
from tests.data.test_calculator import write_data

cv2 = pytest.importorskip("cv2")


def ink_box(image: np.ndarray) -> tuple[int, int]:
    rows = np.flatnonzero(image.max(axis=1) > 0.1 * image.max())
    cols = np.flatnonzero(image.max(axis=0) > 0.1 * image.max())
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    total = image.sum()
    return (
        float(image.sum(axis=1) @ np.arange(image.shape[0]) / total),
        float(image.sum(axis=0) @ np.arange(image.shape[1]) / total),
    )


@pytest.mark.parametrize(
    ("shape", "ink"),
    [((100, 60), (slice(10, 90), slice(40, 50))), ((9, 9), (slice(3, 6), slice(3, 6)))],
)
def test_frame_like_mnist_fits_the_ink_in_20_pixels_centred_by_mass(
    shape: tuple[int, int], ink: tuple[slice, slice]
) -> None:
    image = np.zeros(shape, dtype=np.float32)
    image[ink] = 1.0
    framed = frame_like_mnist(image)
    assert framed.shape == (28, 28) and framed.dtype == np.float32
    assert max(ink_box(framed)) == 20
    assert centre_of_mass(framed) == pytest.approx((14.0, 14.0), abs=0.5)


def test_frame_like_mnist_refuses_a_blank_or_flat_array() -> None:
    with pytest.raises(FederaError, match="holds no ink"):
        frame_like_mnist(np.zeros((10, 10)))
    with pytest.raises(FederaError, match="2-D"):
        frame_like_mnist(np.ones((2, 3, 4)))


def test_stretch_ink_puts_the_median_ink_pixel_at_one() -> None:
    images = np.zeros((3, 28, 28), dtype=np.float32)
    images[0, 5:10, 5:10] = 0.4
    images[0, 10:12, 5:10] = 0.2
    images[1, 0, 0] = 1.0
    stretched = stretch_ink(images)
    assert stretched.shape == images.shape
    assert stretched[0, 5, 5] == pytest.approx(1.0)
    assert stretched[0, 10, 5] == pytest.approx(0.5)
    np.testing.assert_array_equal(stretched[1], images[1])
    np.testing.assert_array_equal(stretched[2], images[2])  # no ink: unchanged


def test_a_crop_from_a_photo_gets_the_training_format() -> None:
    # A thin "7" written large: framing shrinks it, so its stroke is thickened first.
    crop = np.zeros((200, 140), dtype=np.float32)
    cv2.line(crop, (10, 10), (130, 10), 0.8, 3)
    cv2.line(crop, (130, 10), (50, 190), 0.8, 3)
    model_input = to_model_input(crop)
    assert model_input.shape == (28, 28)
    assert max(ink_box(model_input)) == 20
    assert float(np.median(model_input[model_input > 0.1])) == pytest.approx(1.0)
    # MNIST's strokes are 1.5 to 3.5 pixels wide; framed as it is, this one is a hairline.
    assert stroke_width(model_input) >= 1.5
    assert stroke_width(calculator_format(crop)) < 1.0


def test_load_calculator_frames_the_operators_for_the_calculator(tmp_path: Path) -> None:
    mnist_dir, symbols_path = write_data(tmp_path)
    plain = load_calculator(mnist_dir, symbols_path)
    framed = load_calculator(mnist_dir, symbols_path, mnist_framing=True)
    operators = framed.train.y >= 10
    for image in framed.train.x[operators][:, 0]:
        assert max(ink_box(image)) == 20
    np.testing.assert_allclose(framed.train.x[~operators], stretch_ink(plain.train.x[~operators]))
    np.testing.assert_array_equal(framed.train.y, plain.train.y)


def test_federa_run_trains_the_calculator_on_the_framed_set(tmp_path: Path) -> None:
    mnist_dir, symbols_path = write_data(tmp_path)
    (tmp_path / "math_symbols").mkdir()
    symbols_path.rename(tmp_path / "math_symbols" / "symbols.zip")
    cfg = RunConfig(dataset="calculator", data_dir=str(tmp_path))
    split = load_dataset(cfg)
    direct = load_calculator(
        mnist_dir, tmp_path / "math_symbols" / "symbols.zip", mnist_framing=True
    )
    np.testing.assert_array_equal(split.train.x, direct.train.x)
    metadata = model_metadata(cfg)
    assert metadata["framing"].startswith("mnist")
    assert metadata["in_shape"] == "[1, 28, 28]"
    digits = model_metadata(RunConfig(), None)
    assert "class_names" not in digits and "framing" not in digits
