"""Calculator symbols drawn with OpenCV's fonts and lines, for tests that run without data.

Each image is 28x28, white ink on black in [0, 1], sized as the real data sizes them: a
digit fills a 20-pixel box (as in MNIST), a "+" about 15 pixels, a "-" a 12x3 bar, a dot
about 5 pixels (as in the handwritten operator set).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from federa.apps.calculator.synth import Pool

SIZE = 28
_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)


def _digit(char: str, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    canvas = np.zeros((80, 80), dtype=np.uint8)
    font = _FONTS[int(rng.integers(len(_FONTS)))]
    thickness = int(rng.integers(4, 8))
    cv2.putText(canvas, char, (15, 65), font, 2.0, 255, thickness, cv2.LINE_AA)
    # A random shear, as handwriting slants.
    shear = rng.uniform(-0.25, 0.25)
    matrix = np.array([[1.0, shear, -shear * 40], [0.0, 1.0, 0.0]], dtype=np.float32)
    canvas = np.asarray(cv2.warpAffine(canvas, matrix, (80, 80)), dtype=np.uint8)
    rows = np.flatnonzero(canvas.max(axis=1) > 25)
    cols = np.flatnonzero(canvas.max(axis=0) > 25)
    ink = canvas[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32) / 255
    height, width = ink.shape
    scale = 20 / max(height, width)
    small = cv2.resize(
        ink,
        (max(1, round(width * scale)), max(1, round(height * scale))),
        interpolation=cv2.INTER_AREA,
    )
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    top, left = (SIZE - small.shape[0]) // 2, (SIZE - small.shape[1]) // 2
    out[top : top + small.shape[0], left : left + small.shape[1]] = small
    return out


def _operator(char: str, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    big = np.zeros((SIZE * 4, SIZE * 4), dtype=np.uint8)
    c = SIZE * 2
    half = int(rng.uniform(0.22, 0.3) * SIZE * 4)
    width = int(rng.integers(6, 10))
    wobble = int(rng.integers(-4, 5))
    if char in "+-÷":
        cv2.line(big, (c - half, c + wobble), (c + half, c - wobble), 255, width, cv2.LINE_AA)
    if char == "+":
        cv2.line(big, (c + wobble, c - half), (c - wobble, c + half), 255, width, cv2.LINE_AA)
    if char in "x/":
        cv2.line(big, (c - half * 3 // 4, c + half), (c + half * 3 // 4, c - half), 255, width)
    if char == "x":
        cv2.line(big, (c - half * 3 // 4, c - half), (c + half * 3 // 4, c + half), 255, width)
    if char == "÷":
        for dy in (-half * 2 // 3, half * 2 // 3):
            cv2.circle(big, (c + wobble, c + dy), width, 255, -1, cv2.LINE_AA)
    if char == ".":
        cv2.circle(big, (c, c), int(rng.integers(8, 12)), 255, -1, cv2.LINE_AA)
    small = cv2.resize(big, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    image: npt.NDArray[np.float32] = np.asarray(small, dtype=np.float32) / np.float32(255)
    return image


def font_pool(rng: np.random.Generator, per_class: int = 8) -> Pool:
    """Return `per_class` drawn images of each calculator symbol, "·" sharing the dots."""
    pool: dict[str, npt.NDArray[np.float32]] = {}
    for char in "0123456789":
        pool[char] = np.stack([_digit(char, rng) for _ in range(per_class)])
    for char in "+-x/÷.":
        pool[char] = np.stack([_operator(char, rng) for _ in range(per_class)])
    pool["·"] = pool["."]
    return pool
