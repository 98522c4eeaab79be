"""Turn one segmented symbol into the classifier's input: the calculator data set's format.

The calculator model trains on 28x28 images, white ink on black in [0, 1], every symbol
framed as MNIST frames its digits and with the same contrast
(`federa.data.framing.calculator_format`: ink fitted in a 20x20 box, centre of mass on
the centre, median ink pixel at 1). A crop from a photo gets the same treatment, after
two corrections a photo needs: its contrast is stretched so the strokes' cores
are 1, as in MNIST, and a stroke much thinner than MNIST's (a fine pen on a large
photo) is thickened to MNIST's width before it is shrunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from federa.data.framing import FRAME_BOX, calculator_format

__all__ = ["stroke_width", "to_model_input"]

FloatImage = npt.NDArray[np.float32]

# MNIST's strokes, measured as 2 * area / perimeter of the pixels above 0.5 on the
# 10,000 test digits: 5th percentile 1.5 px, median 2.25 px.
_THIN = 1.5
_MNIST_STROKE = 2.25
_DOT_ASPECT = 1.6  # a blob this close to round is a dot, which has no stroke to thicken


def _cv2() -> Any:
    import cv2

    return cv2


def stroke_width(ink: FloatImage) -> float:
    """Return the mean stroke width of `ink` in pixels: 2 x area / perimeter of its strokes."""
    cv2 = _cv2()
    mask = (ink > 0.5 * float(ink.max(initial=0.0))).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    return 2.0 * float(mask.sum()) / perimeter if perimeter > 0 else 0.0


def _normalized(ink: FloatImage) -> FloatImage:
    """Scale `ink` so that its strokes' cores (the 90th percentile of stroke pixels) are 1."""
    peak = float(ink.max(initial=0.0))
    strokes = ink[ink > 0.25 * peak]
    core = float(np.percentile(strokes, 90)) if strokes.size else peak
    scaled: FloatImage = np.clip(ink / max(core, 1e-6), 0.0, 1.0).astype(np.float32)
    return scaled


def _thickened(ink: FloatImage) -> FloatImage:
    """Dilate `ink` when its strokes would end up thinner than MNIST's once framed."""
    cv2 = _cv2()
    rows = np.flatnonzero(ink.max(axis=1) > 0.1)
    cols = np.flatnonzero(ink.max(axis=0) > 0.1)
    if len(rows) == 0:
        return ink
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    if max(height, width) <= _DOT_ASPECT * min(height, width) and stroke_width(ink) * 2.5 > min(
        height, width
    ):
        return ink  # a dot: solid, nothing to thicken
    scale = FRAME_BOX / max(height, width)
    framed_width = stroke_width(ink) * scale
    if framed_width >= _THIN or framed_width <= 0:
        return ink
    grow = round((_MNIST_STROKE - framed_width) / scale)
    if grow < 1:
        return ink
    pad = grow
    padded = np.pad(ink, pad)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (grow + 1, grow + 1))
    return np.asarray(cv2.dilate(padded, kernel), dtype=np.float32)


def to_model_input(ink: FloatImage) -> FloatImage:
    """Return one symbol's ink as a 28x28 model input, in the training data's format.

    Args:
        ink: The symbol's ink, bright on black (as `Segment.ink`), any size.

    Returns:
        A float32 (28, 28) image in [0, 1].

    Raises:
        FederaError: `ink` holds no ink.
    """
    return calculator_format(_thickened(_normalized(np.asarray(ink, dtype=np.float32))))
