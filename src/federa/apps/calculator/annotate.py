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
_ASCII = {"÷": ":", "·": "*", "\u00d7": "x", "≈": "~"}  # \u00d7: the multiplication sign
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
_MIN_HEIGHT = 160  # smaller images are enlarged so that labels stay legible


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


def _font_for(text: str, room: float, largest: float) -> float:
    """Return the largest font scale (at most `largest`) at which `text` fits in `room`."""
    cv2 = _cv2()
    (unit_w, _), _ = cv2.getTextSize(text, _FONT, 1.0, 1)
    return float(np.clip(room / max(unit_w, 1), 0.3, largest))


def _label_band(reading: Reading, width: int, zoom: float) -> npt.NDArray[np.uint8]:
    """Return a white band with each symbol's character over its confidence, above its box."""
    cv2 = _cv2()
    centres = [s.box.center_x * zoom for s in reading.symbols]
    gaps = np.diff(centres) if len(centres) > 1 else np.array([width / 2])
    room = max(8.0, float(gaps.min()) - 4)
    char_font = _font_for("8", room, 1.2)
    conf_font = _font_for("100%", room, 0.6)
    (_, char_h), _ = cv2.getTextSize("8", _FONT, char_font, 1)
    (_, conf_h), base = cv2.getTextSize("100%", _FONT, conf_font, 1)
    band = np.full((char_h + conf_h + base + 14, width, 3), 255, dtype=np.uint8)
    for symbol, centre in zip(reading.symbols, centres, strict=True):
        colour = _SURE if symbol.confidence >= _SURE_AT else _UNSURE
        for text, font, y in (
            (_ascii(symbol.char), char_font, char_h + 4),
            (f"{symbol.confidence:.0%}", conf_font, char_h + conf_h + 10),
        ):
            (text_w, _), _ = cv2.getTextSize(text, _FONT, font, 1)
            x = int(np.clip(centre - text_w / 2, 0, max(0, width - text_w)))
            cv2.putText(band, text, (x, y), _FONT, font, colour, 1, cv2.LINE_AA)
    return band


def annotate(image: npt.ArrayLike, reading: Reading) -> npt.NDArray[np.uint8]:
    """Return a copy of `image` with the reading drawn on it.

    Each symbol gets a box (green when the model is at least 90% sure, magenta
    otherwise); a white band above the image shows each symbol's character over its
    confidence in percent, and one below shows the expression and its value or error.
    An image less than 160 pixels high is enlarged so that the labels stay legible.

    Args:
        image: The image that was read: gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4).
        reading: What `read_expression` returned for it.

    Returns:
        RGB uint8 pixels, (top band + H * zoom + bottom band, W * zoom, 3) with zoom 1
        for images at least 160 pixels high; a BGR image gives BGR back.
    """
    cv2 = _cv2()
    canvas = _rgb(image)
    zoom = float(min(4, max(1, -(-_MIN_HEIGHT // canvas.shape[0]))))
    if zoom > 1:
        canvas = cv2.resize(canvas, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_LINEAR)
    width = canvas.shape[1]
    thick = max(1, round(canvas.shape[0] / 150))
    for symbol in reading.symbols:
        x, y, w, h = (round(v * zoom) for v in symbol.box)
        colour = _SURE if symbol.confidence >= _SURE_AT else _UNSURE
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, thick)
    result = reading.value_text if reading.error is None else reading.error
    footer = _ascii(f"{reading.text} = {result}" if reading.error is None else str(result))
    font = _font_for(footer, width - 12, 1.0)
    (_, text_h), base = cv2.getTextSize(footer, _FONT, font, 1)
    bottom = np.full((text_h + base + 12, width, 3), 255, dtype=np.uint8)
    cv2.putText(bottom, footer, (6, text_h + 6), _FONT, font, _TEXT, 1, cv2.LINE_AA)
    parts = [canvas, bottom]
    if reading.symbols:
        parts.insert(0, _label_band(reading, width, zoom))
    return np.vstack(parts)


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
