"""Draw a reading onto its image: a box and a label with confidence per symbol, the result."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from federa.apps.calculator.reading import Reading
from federa.apps.calculator.segmentation import to_gray
from federa.errors import FederaError

__all__ = ["annotate", "write_png"]

# Colours that read the same in RGB and BGR order, so callers may use either.
_SURE = (0, 160, 0)  # green
_UNSURE = (200, 0, 200)  # magenta
_TEXT = (20, 20, 20)
_SURE_AT = 0.9  # confidence from which a symbol counts as sure
# OpenCV's Hershey fonts are ASCII only.
_ASCII = {"÷": "div", "·": "dot", "\u00d7": "x"}  # \u00d7: the multiplication sign


def _cv2() -> Any:
    import cv2

    return cv2


def _rgb(image: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Return the image as RGB uint8, colour kept when it has three channels."""
    pixels = np.asarray(image)
    if pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8:
        copied: npt.NDArray[np.uint8] = pixels.copy()
        return copied
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        as_float = pixels.astype(np.float32)
        if pixels.dtype.kind in "ui":
            as_float /= float(np.iinfo(pixels.dtype).max)
        elif float(as_float.max(initial=0.0)) > 1.0:
            as_float /= 255.0
        return np.clip(np.rint(as_float * 255), 0, 255).astype(np.uint8)
    gray = np.clip(np.rint(to_gray(pixels) * 255), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _ascii(text: str) -> str:
    return "".join(_ASCII.get(c, c) if ord(c) < 128 or c in _ASCII else "?" for c in text)


def annotate(image: npt.ArrayLike, reading: Reading) -> npt.NDArray[np.uint8]:
    """Return a copy of `image` with the reading drawn on it.

    Each symbol gets a box (green when the model is at least 90% sure, magenta
    otherwise) and, above it, its character and confidence in percent. A white band
    added below the image shows the expression and its value or error.

    Args:
        image: The image that was read: gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4).
        reading: What `read_expression` returned for it.

    Returns:
        RGB uint8 pixels of shape (H + band, W, 3); the image keeps its channel order,
        so a BGR image gives BGR back.
    """
    cv2 = _cv2()
    canvas = _rgb(image)
    height, width = canvas.shape[:2]
    heights = [s.box.height for s in reading.symbols] or [height / 2]
    scale = float(np.clip(np.median(heights) / 60, 0.35, 2.0))
    thick = max(1, round(2 * scale))
    for symbol in reading.symbols:
        x, y, w, h = symbol.box
        colour = _SURE if symbol.confidence >= _SURE_AT else _UNSURE
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, thick)
        label = f"{_ascii(symbol.char)} {symbol.confidence:.0%}"
        (text_w, text_h), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        tx = int(min(max(0, x), max(0, width - text_w)))
        ty = y - base - 2 if y - text_h - base - 2 >= 0 else min(height - base, y + h + text_h + 2)
        cv2.putText(
            canvas, label, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA
        )
    result = reading.value_text if reading.error is None else reading.error
    footer = _ascii(f"{reading.text} = {result}" if reading.error is None else str(result))
    (unit_w, _), _ = cv2.getTextSize(footer, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)
    font = float(np.clip((width - 12) / max(unit_w, 1), 0.3, 1.0))
    (_, text_h), base = cv2.getTextSize(footer, cv2.FONT_HERSHEY_SIMPLEX, font, 1)
    band = np.full((text_h + base + 12, width, 3), 255, dtype=np.uint8)
    cv2.putText(
        band, footer, (6, text_h + 6), cv2.FONT_HERSHEY_SIMPLEX, font, _TEXT, 1, cv2.LINE_AA
    )
    return np.vstack([canvas, band])


def write_png(path: str | os.PathLike[str], image: npt.NDArray[np.uint8]) -> None:
    """Write RGB (or gray) uint8 pixels to a PNG file.

    Raises:
        FederaError: The file cannot be written (say, its folder does not exist).
    """
    cv2 = _cv2()
    pixels = image[:, :, ::-1] if image.ndim == 3 else image  # RGB -> OpenCV's BGR
    ok, buffer = cv2.imencode(".png", np.ascontiguousarray(pixels))
    if not ok:
        raise FederaError(f"cannot encode the annotated image for {path}")
    where = Path(path)
    try:
        where.write_bytes(buffer.tobytes())
    except OSError as exc:
        raise FederaError(f"cannot write {where}: {exc.strerror or exc}") from None
