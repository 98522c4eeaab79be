"""Synthetic photos of handwritten expressions, composed from single-symbol images.

Tests and benchmarks need expression images whose every symbol is known: this module
draws a random expression ("12+3.5x4"), picks one held-out handwritten image per
character, and lays them out on a line at a random size and spacing, on paper with
uneven light and noise, as a phone photo or a scan would show them. A decimal point
sits on the baseline and a multiplication dot "·" at mid-height, as people write them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from federa.apps.calculator.segmentation import Box
from federa.errors import FederaError

__all__ = ["Pool", "SyntheticExpression", "compose", "random_expression", "symbol_pool"]

Pool = Mapping[str, npt.NDArray[np.float32]]
"""Images by character: each an (N, H, W) stack, bright ink on black in [0, 1]."""

_DIGIT_HEIGHT = 20.0  # MNIST fits digits in a 20-pixel box: the line height of a 28x28 image
_OPERATORS = ("+", "-", "x", "/", "÷", "·")


@dataclass(frozen=True, slots=True, kw_only=True)
class SyntheticExpression:
    """A composed expression image and the truth about it.

    Attributes:
        image: Gray uint8 pixels (H, W).
        text: The expression, one character per symbol.
        boxes: The ink box of each symbol, left to right.
    """

    image: npt.NDArray[np.uint8]
    text: str
    boxes: tuple[Box, ...]


def _cv2() -> Any:
    import cv2

    return cv2


def _is_one_piece(image: npt.NDArray[np.float32]) -> bool:
    """Return whether the ink of `image` (above a fifth of its peak) is one 8-connected piece."""
    cv2 = _cv2()
    mask = (image > 0.2 * float(image.max(initial=0.0))).astype(np.uint8)
    count, _ = cv2.connectedComponents(mask, connectivity=8)
    return bool(count == 2)


def symbol_pool(
    x: npt.NDArray[np.float32],
    y: npt.ArrayLike,
    class_names: Sequence[str],
    *,
    one_piece: bool = False,
) -> Pool:
    """Group a labelled (N, 1, H, W) image set by character; "." also serves as "·".

    Args:
        x: The images, bright ink on black.
        y: Their labels, indexes into `class_names`.
        class_names: The character of each label.
        one_piece: Keep only symbols written in one stroke-connected piece (all "÷",
            which has three pieces, are kept). A few percent of MNIST's digits have a
            stroke that lost its connection in scanning, and no segmentation can tell
            such a piece from a separate symbol.
    """
    labels = np.asarray(y)
    pool: dict[str, npt.NDArray[np.float32]] = {}
    for label, char in enumerate(class_names):
        members = x[labels == label][:, 0]
        if one_piece and char != "÷":
            members = members[[_is_one_piece(image) for image in members]]
        if len(members):
            pool[char] = members
    if "." in pool:
        pool.setdefault("·", pool["."])
    return pool


def _number(rng: np.random.Generator, allow_decimal: bool) -> str:
    digits = int(rng.integers(1, 4))
    text = str(int(rng.integers(1, 10))) + "".join(
        str(int(d)) for d in rng.integers(0, 10, size=digits - 1)
    )
    if allow_decimal and rng.random() < 0.25:
        text += "." + str(int(rng.integers(0, 10)))
    return text


def random_expression(
    rng: np.random.Generator,
    *,
    operators: Sequence[str] = _OPERATORS,
    max_numbers: int = 4,
    allow_decimal: bool = True,
) -> str:
    """Return a random expression of 2 to `max_numbers` numbers joined by operators.

    Numbers have 1 to 3 digits (no leading zero) and sometimes one decimal place.
    """
    count = int(rng.integers(2, max_numbers + 1))
    parts = [_number(rng, allow_decimal)]
    for _ in range(count - 1):
        parts.append(str(rng.choice(list(operators))))
        parts.append(_number(rng, allow_decimal))
    return "".join(parts)


def _scaled_ink(image: npt.NDArray[np.float32], scale: float) -> npt.NDArray[np.float32]:
    """Return `image` resized by `scale` and cropped to its ink."""
    cv2 = _cv2()
    height, width = image.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    big = np.clip(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    rows = np.flatnonzero((big > 0.1).any(axis=1))
    cols = np.flatnonzero((big > 0.1).any(axis=0))
    if len(rows) == 0:
        raise FederaError("a symbol image holds no ink; remove it from the pool")
    return np.asarray(big[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], dtype=np.float32)


def _layout(
    text: str, pool: Pool, rng: np.random.Generator, line: float
) -> list[tuple[npt.NDArray[np.float32], float, float]]:
    """Return each symbol's ink with its left edge and vertical centre on a line at y=0."""
    placed: list[tuple[npt.NDArray[np.float32], float, float]] = []
    x = 0.0
    for char in text:
        if char not in pool:
            raise FederaError(f"no images of {char!r} to draw; add them to the pool")
        images = pool[char]
        image = images[int(rng.integers(len(images)))]
        ink = _scaled_ink(image, line / _DIGIT_HEIGHT * rng.uniform(0.85, 1.15))
        if char == ".":  # a decimal point sits on the baseline
            centre = line / 2 - ink.shape[0] / 2 - rng.uniform(0.0, 0.08) * line
        else:
            centre = rng.uniform(-0.06, 0.06) * line
        if placed:
            x += rng.uniform(0.15, 0.8) * line
        placed.append((ink, x, centre))
        x += ink.shape[1]
    return placed


def compose(
    text: str,
    pool: Pool,
    rng: np.random.Generator,
    *,
    line_height: tuple[float, float] = (28.0, 64.0),
    noise: float = 0.05,
) -> SyntheticExpression:
    """Draw `text` with one random handwritten image per character.

    The line height (the height of a digit) is drawn from `line_height`, each symbol
    varies by +-15% around it, and gaps between symbols are 0.15 to 0.8 line heights.
    The page is dark ink on light paper or (one time in four) light on dark, lit
    unevenly, with Gaussian noise of up to `noise` and a few salt-and-pepper specks.

    Args:
        text: The expression; every character needs images in `pool`.
        pool: Images by character, as `symbol_pool` returns.
        rng: The source of every random choice.
        line_height: Range of the digit height in pixels.
        noise: Largest standard deviation of the Gaussian pixel noise, in [0, 1].
    """
    line = rng.uniform(*line_height)
    placed = _layout(text, pool, rng, line)
    margin = int(rng.uniform(0.3, 1.0) * line) + 2
    top = min(centre - ink.shape[0] / 2 for ink, _, centre in placed)
    bottom = max(centre + ink.shape[0] / 2 for ink, _, centre in placed)
    width = int(placed[-1][1] + placed[-1][0].shape[1]) + 2 * margin
    height = int(bottom - top) + 2 * margin
    canvas = np.zeros((height, width), dtype=np.float32)
    boxes = []
    for ink, left, centre in placed:
        x0 = margin + round(left)
        y0 = margin + round(centre - ink.shape[0] / 2 - top)
        region = canvas[y0 : y0 + ink.shape[0], x0 : x0 + ink.shape[1]]
        np.maximum(region, ink, out=region)
        boxes.append(Box(x0, y0, ink.shape[1], ink.shape[0]))
    return SyntheticExpression(image=_photograph(canvas, rng, noise), text=text, boxes=tuple(boxes))


def _photograph(
    canvas: npt.NDArray[np.float32], rng: np.random.Generator, noise: float
) -> npt.NDArray[np.uint8]:
    """Put bright-on-black ink on paper: contrast, uneven light, noise, specks."""
    height, width = canvas.shape
    paper = rng.uniform(0.75, 0.95)
    contrast = rng.uniform(0.55, paper - 0.05)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / width + np.sin(angle) * yy / height).astype(np.float32)
    light = paper + rng.uniform(0.0, 0.12) * (ramp - ramp.mean())
    page = light - contrast * canvas
    if rng.random() < 0.25:
        page = 1.0 - page
    page = page + rng.normal(0.0, rng.uniform(0.0, noise), size=page.shape)
    specks = rng.random(page.shape) < rng.uniform(0.0, 0.001)
    page[specks] = rng.integers(0, 2, size=int(specks.sum()))
    pixels: npt.NDArray[np.uint8] = np.clip(np.rint(page * 255), 0, 255).astype(np.uint8)
    return pixels
