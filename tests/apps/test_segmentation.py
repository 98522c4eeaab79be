from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from federa.apps.calculator.segmentation import Segment, segment
from federa.apps.calculator.synth import (
    Pool,
    SyntheticExpression,
    compose,
    random_expression,
    symbol_pool,
)
from federa.data import DatasetSplit
from federa.errors import FederaError
from tests.apps.conftest import needs_real_data
from tests.apps.symbols import font_pool


def assert_segmented_exactly(expression: SyntheticExpression, found: list[Segment]) -> None:
    """Assert one segment per drawn symbol, in order, each centred in its symbol's box."""
    assert len(found) == len(expression.boxes), (expression.text, [s.box for s in found])
    for segment_, truth, char in zip(found, expression.boxes, expression.text, strict=True):
        inside_x = truth.x <= segment_.box.center_x <= truth.right
        inside_y = truth.y <= segment_.box.center_y <= truth.bottom
        assert inside_x and inside_y, (expression.text, char, segment_.box, truth)


@pytest.fixture(scope="module")
def drawn() -> Pool:
    return font_pool(np.random.default_rng(0))


def test_segment_finds_every_drawn_symbol_left_to_right(drawn: Pool) -> None:
    rng = np.random.default_rng(1)
    for _ in range(25):
        expression = compose(random_expression(rng), drawn, rng)
        assert_segmented_exactly(expression, segment(expression.image))


@needs_real_data
def test_segment_finds_every_held_out_handwritten_symbol_left_to_right(
    real_symbols: DatasetSplit,
) -> None:
    split = real_symbols
    # Held-out test images, at the size they were written; digits whose strokes fell
    # apart in scanning are left out (one_piece), since no segmentation can join them.
    pool = symbol_pool(split.test.x, split.test.y, split.test.class_names, one_piece=True)
    rng = np.random.default_rng(2)
    texts = []
    for _ in range(30):
        expression = compose(random_expression(rng), pool, rng)
        assert_segmented_exactly(expression, segment(expression.image))
        texts.append(expression.text)
    # The expressions exercised every operator, the dot both ways, and decimals.
    assert set("+-x/÷·.") <= set("".join(texts))


def _page(height: int = 120, width: int = 400) -> npt.NDArray[np.uint8]:
    return np.full((height, width), 235, dtype=np.uint8)


def test_the_strokes_of_division_and_equals_signs_are_one_symbol_each() -> None:
    page = _page()
    cv2.line(page, (20, 30), (20, 90), 20, 6)  # "1"
    cv2.line(page, (60, 60), (120, 60), 20, 6)  # the bar of "÷" ...
    cv2.circle(page, (90, 38), 5, 20, -1)  # ... its dots, apart from the bar
    cv2.circle(page, (90, 82), 5, 20, -1)
    cv2.line(page, (150, 30), (150, 90), 20, 6)  # "1"
    cv2.line(page, (190, 50), (250, 50), 20, 6)  # "=": two bars
    cv2.line(page, (190, 70), (250, 70), 20, 6)
    cv2.line(page, (290, 30), (290, 90), 20, 6)  # "1"
    found = segment(page)
    assert [s.num_parts for s in found] == [1, 3, 1, 2, 1]
    division = found[1].box  # from the bar's left end to its right, the top dot to the bottom
    assert (division.x, division.y, division.right, division.bottom) == pytest.approx(
        (57, 33, 124, 88), abs=2
    )


def test_a_symbol_broken_by_the_threshold_stays_one_symbol() -> None:
    page = _page()
    cv2.line(page, (40, 30), (40, 90), 20, 6)
    cv2.line(page, (41, 56), (41, 62), 170, 6)  # a faint stretch of pen in the middle
    cv2.line(page, (120, 30), (120, 90), 20, 6)
    found = segment(page)
    assert len(found) == 2
    assert found[0].box.height >= 60


def test_specks_of_dirt_are_dropped_but_a_decimal_point_is_kept() -> None:
    page = _page()
    cv2.line(page, (30, 30), (30, 90), 20, 6)
    cv2.circle(page, (60, 86), 5, 20, -1)  # decimal point
    cv2.line(page, (90, 30), (90, 90), 20, 6)
    rng = np.random.default_rng(3)
    for x, y in zip(rng.integers(130, 390, 40), rng.integers(5, 115, 40), strict=True):
        page[y : y + 2, x : x + 2] = 20  # specks of 4 pixels
    found = segment(page)
    assert [s.box.center_x for s in found] == pytest.approx([30, 60, 90], abs=2)


def test_both_polarities_and_every_pixel_type_give_the_same_boxes(drawn: Pool) -> None:
    expression = compose("12+7", drawn, np.random.default_rng(4), noise=0.0)
    gray = expression.image
    rgba = np.zeros((*gray.shape, 4), dtype=np.uint8)
    rgba[:, :, :3] = 0
    rgba[:, :, 3] = np.where(gray < 128, 255, 0)  # black ink on a transparent page
    variants = {
        "gray": gray,
        "inverted": 255 - gray,
        "rgb": np.repeat(gray[:, :, None], 3, axis=2),
        "rgba": rgba,
        "float": gray.astype(np.float32) / 255,
        "uint16": gray.astype(np.uint16) * 257,
    }
    boxes = {name: [s.box for s in segment(image)] for name, image in variants.items()}
    assert len(boxes["gray"]) == 4
    for name, found in boxes.items():
        assert len(found) == 4, name
        for box, reference in zip(found, boxes["gray"], strict=True):
            assert abs(box.center_x - reference.center_x) <= 2, name


def test_a_large_photo_is_segmented_with_boxes_in_its_own_pixels(drawn: Pool) -> None:
    expression = compose("3x4", drawn, np.random.default_rng(5), noise=0.0)
    factor = 2500 / expression.image.shape[1]
    big = cv2.resize(expression.image, None, fx=factor, fy=factor)
    found = segment(big)
    assert len(found) == 3
    for segment_, truth in zip(found, expression.boxes, strict=True):
        assert segment_.box.center_x == pytest.approx(truth.center_x * factor, rel=0.05)
        assert segment_.box.width == pytest.approx(truth.width * factor, rel=0.2)


def test_a_blank_page_has_no_symbols() -> None:
    assert segment(_page()) == []
    noisy = np.random.default_rng(6).normal(200, 3, size=(80, 200)).clip(0, 255)
    assert segment(noisy.astype(np.uint8)) == []


@pytest.mark.parametrize(
    "image", [np.zeros(5), np.zeros((4, 4, 5)), np.zeros((0, 10)), np.array([["a"]])]
)
def test_an_array_that_is_not_an_image_is_refused(image: npt.NDArray[np.generic]) -> None:
    with pytest.raises(FederaError, match="expected"):
        segment(image)


def test_segments_hold_only_their_own_ink(drawn: Pool) -> None:
    expression = compose("88", drawn, np.random.default_rng(7), noise=0.0)
    for found in segment(expression.image):
        assert found.ink.dtype == np.float32
        assert found.ink.min() >= 0.0 and found.ink.max() == pytest.approx(1.0, abs=0.05)
        # The crop's border columns hold no ink of the neighbour.
        assert found.ink.shape[1] <= found.box.width + 2


def test_a_bar_broken_off_the_top_of_a_five_joins_its_digit() -> None:
    page = _page()
    cv2.line(page, (20, 30), (20, 90), 20, 6)  # "1"
    cv2.line(page, (70, 42), (70, 62), 20, 6)  # the "5": its upright ...
    cv2.ellipse(page, (84, 75), (16, 15), 0, -150, 150, 20, 6)  # ... and its belly
    cv2.line(page, (94, 31), (132, 29), 20, 6)  # its top bar, apart, off to the right
    cv2.line(page, (170, 30), (170, 90), 20, 6)  # "1"
    found = segment(page)
    assert [s.num_parts for s in found] == [1, 2, 1]
    assert found[1].box.y <= 28 and found[1].box.right >= 132


def test_a_short_upright_sliver_beside_a_digit_joins_it() -> None:
    page = _page()
    cv2.line(page, (40, 30), (40, 90), 20, 6)  # "1" ...
    cv2.line(page, (54, 52), (54, 64), 20, 3)  # ... and a sliver its stroke left behind
    cv2.line(page, (120, 30), (120, 90), 20, 6)  # "1"
    found = segment(page)
    assert [s.num_parts for s in found] == [2, 1]


def test_a_tip_broken_off_above_a_digit_joins_it() -> None:
    page = _page()
    cv2.line(page, (40, 40), (40, 90), 20, 6)  # "1" ...
    cv2.line(page, (50, 28), (56, 34), 20, 5)  # ... its flag, up among the digits' tops
    cv2.line(page, (120, 30), (120, 90), 20, 6)  # "1"
    found = segment(page)
    assert [s.num_parts for s in found] == [2, 1]


def test_small_symbols_beside_digits_stay_symbols() -> None:
    page = _page(width=520)
    cv2.line(page, (20, 30), (20, 90), 20, 6)  # "1"
    cv2.line(page, (48, 60), (78, 60), 20, 6)  # "-" at mid-height, close
    cv2.line(page, (100, 30), (100, 90), 20, 6)  # "1"
    cv2.circle(page, (118, 87), 4, 20, -1)  # "." on the baseline, close
    cv2.line(page, (140, 30), (140, 90), 20, 6)  # "1"
    cv2.circle(page, (160, 60), 4, 20, -1)  # "·" at mid-height
    cv2.line(page, (180, 30), (180, 90), 20, 6)  # "1"
    cv2.line(page, (200, 60), (224, 60), 20, 5)  # a small "+"
    cv2.line(page, (212, 48), (212, 72), 20, 5)
    cv2.line(page, (245, 30), (245, 90), 20, 6)  # "1"
    cv2.line(page, (262, 30), (262, 90), 20, 6)  # "1", close: "11" is two symbols
    found = segment(page)
    assert [round(s.box.center_x) for s in found] == pytest.approx(
        [20, 63, 100, 118, 140, 160, 180, 212, 245, 262], abs=3
    )
    assert all(s.num_parts == 1 for s in found)


@needs_real_data
def test_held_out_digits_broken_in_pieces_are_mostly_one_symbol(
    real_symbols: DatasetSplit,
) -> None:
    split = real_symbols
    whole = symbol_pool(split.test.x, split.test.y, split.test.class_names, one_piece=True)
    digits = split.test.x[split.test.y < 10][:, 0]
    broken = [d for d in digits if not _one_piece(d)]
    assert len(broken) >= 100  # about 3% of MNIST's test digits
    rng = np.random.default_rng(8)
    one_symbol = 0
    for digit in broken[:150]:
        expression = compose("4+D-7", {**whole, "D": digit[None]}, rng)
        found = segment(expression.image)
        assert len(found) >= 5, expression.text  # never merged with its neighbours
        one_symbol += len(found) == 5
    # Without joining fragments about 85% of them were one symbol; now about 95%.
    assert one_symbol >= 0.9 * 150


def _one_piece(image: npt.NDArray[np.float32]) -> bool:
    mask = (image > 0.2 * image.max()).astype(np.uint8)
    return bool(cv2.connectedComponents(mask, connectivity=8)[0] == 2)
