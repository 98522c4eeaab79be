"""Pen strokes of the calculator's symbols, for tests that draw expressions.

Each symbol is a few polylines in a cell 0.6 wide and 1 tall (y grows downwards). The
browser test moves the mouse along them on the page's drawing pad; `render_expression`
draws the same strokes with OpenCV; `glyph_training_set` renders many jittered copies,
framed as MNIST frames digits, to train a small model that reads these strokes reliably.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Point = tuple[float, float]
Stroke = list[Point]

CELL_WIDTH = 0.6


def _ellipse(cx: float, cy: float, rx: float, ry: float, num: int = 20) -> Stroke:
    angles = np.linspace(-math.pi / 2, 1.5 * math.pi, num + 1)
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


def _path(points: str) -> Stroke:
    """Parse "x y, x y, ..." into a stroke."""
    pairs = (pair.split() for pair in points.split(","))
    return [(float(x), float(y)) for x, y in pairs]


GLYPHS: dict[str, list[Stroke]] = {
    "0": [_ellipse(0.3, 0.5, 0.27, 0.48)],
    "1": [_path("0.12 0.22, 0.34 0, 0.34 1")],
    "2": [_path("0.04 0.22, 0.14 0.06, 0.3 0, 0.47 0.06, 0.55 0.22, 0.5 0.4, 0.04 1, 0.58 1")],
    "3": [
        _path(
            "0.04 0.1, 0.24 0, 0.45 0.05, 0.53 0.2, 0.46 0.37, 0.24 0.47, 0.46 0.56, "
            "0.56 0.73, 0.5 0.9, 0.3 1, 0.04 0.92"
        )
    ],
    "4": [_path("0.44 1, 0.44 0, 0.02 0.68, 0.6 0.68")],
    "5": [
        _path("0.55 0, 0.1 0, 0.06 0.45, 0.3 0.37, 0.5 0.47, 0.57 0.7, 0.48 0.9, 0.28 1, 0.04 0.93")
    ],
    "6": [
        _path(
            "0.5 0.04, 0.3 0, 0.12 0.15, 0.04 0.45, 0.05 0.75, 0.18 0.97, 0.38 0.99, "
            "0.54 0.83, 0.53 0.62, 0.36 0.5, 0.16 0.54, 0.06 0.7"
        )
    ],
    "7": [_path("0.02 0.02, 0.58 0.02, 0.24 1")],
    "8": [
        _path(
            "0.3 0.47, 0.1 0.35, 0.08 0.15, 0.3 0, 0.52 0.15, 0.5 0.35, 0.3 0.47, 0.06 0.63, "
            "0.05 0.86, 0.3 1, 0.55 0.86, 0.54 0.63, 0.3 0.47"
        )
    ],
    "9": [
        _path(
            "0.53 0.3, 0.4 0.45, 0.2 0.45, 0.06 0.3, 0.1 0.08, 0.3 0, 0.5 0.08, 0.56 0.3, "
            "0.52 0.6, 0.44 1"
        )
    ],
    "+": [_path("0.04 0.5, 0.56 0.5"), _path("0.3 0.24, 0.3 0.76")],
    "-": [_path("0.04 0.5, 0.56 0.5")],
    "x": [_path("0.08 0.28, 0.52 0.72"), _path("0.52 0.28, 0.08 0.72")],
    "/": [_path("0.52 0, 0.08 1")],
    "÷": [_path("0.04 0.5, 0.56 0.5"), _path("0.3 0.26"), _path("0.3 0.74")],
    ".": [_path("0.3 0.97")],
}
"""The strokes of every class the calculator knows; one point is a dot."""


def layout(text: str, *, height: float, origin: Point, gap: float = 0.4) -> list[list[Point]]:
    """Return the strokes of `text` in pixels: digits `height` tall, left edge at origin[0].

    Args:
        text: Characters of `GLYPHS`.
        height: The cell height in pixels.
        origin: Where the top-left corner of the first cell goes.
        gap: Space between cells, in cell heights.
    """
    strokes = []
    left, top = origin
    for char in text:
        for stroke in GLYPHS[char]:
            strokes.append([(left + x * height, top + y * height) for x, y in stroke])
        left += (CELL_WIDTH + gap) * height
    return strokes


def text_width(text: str, *, height: float, gap: float = 0.4) -> float:
    """Return the width in pixels that `layout` uses for `text`."""
    return (len(text) * CELL_WIDTH + (len(text) - 1) * gap) * height


def draw_strokes(canvas: npt.NDArray[np.uint8], strokes: list[list[Point]], *, width: int) -> None:
    """Draw white round-capped strokes of `width` pixels onto a gray canvas, in place."""
    import cv2

    for stroke in strokes:
        points = np.rint(np.asarray(stroke) * 16).astype(np.int32)  # 4 fractional bits
        if len(points) == 1:
            points = np.concatenate([points, points])
        cv2.polylines(canvas, [points], False, 255, width, cv2.LINE_AA, shift=4)


def render_expression(
    text: str, *, height: int = 120, stroke_width: int = 12, margin: int = 40
) -> npt.NDArray[np.uint8]:
    """Return a gray image of `text` written in white strokes on black."""
    width = round(text_width(text, height=height)) + 2 * margin
    canvas = np.zeros((height + 2 * margin, width), dtype=np.uint8)
    draw_strokes(canvas, layout(text, height=height, origin=(margin, margin)), width=stroke_width)
    return canvas


def jittered_strokes(
    char: str, rng: np.random.Generator, *, height: float, origin: Point
) -> list[list[Point]]:
    """Return the strokes of `char` in pixels under a random affine map and a wobble.

    The map rotates by up to 0.15 rad, shears by up to 0.2 and stretches each axis by
    up to 20%, about the centre of the cell; every point then moves by a little noise.
    """
    angle = rng.uniform(-0.15, 0.15)
    shear = rng.uniform(-0.2, 0.2)
    sx, sy = rng.uniform(0.8, 1.2), rng.uniform(0.85, 1.15)
    cos, sin = math.cos(angle), math.sin(angle)
    matrix = np.array([[cos, -sin], [sin, cos]]) @ np.array([[sx, shear], [0.0, sy]])
    centre = np.array([CELL_WIDTH / 2, 0.5])
    out = []
    for stroke in GLYPHS[char]:
        points = (np.asarray(stroke) - centre) @ matrix.T + centre
        points += rng.normal(0.0, 0.015, size=points.shape)
        out.append([(origin[0] + x * height, origin[1] + y * height) for x, y in points])
    return out
