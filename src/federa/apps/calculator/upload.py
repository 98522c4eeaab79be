"""Check and decode the images the calculator page uploads, and encode PNGs to send back.

Uploads are untrusted: the decoder only runs on PNG or JPEG bytes whose header
declares a size within `MAX_PIXELS`, so a small file cannot make it allocate
gigabytes (a "decompression bomb").
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

__all__ = ["CONTENT_TYPES", "MAX_PIXELS", "ImageError", "decode_image", "encode_png"]

MAX_PIXELS = 25_000_000
"""Largest image accepted, in pixels (a 25-megapixel photo)."""

CONTENT_TYPES = ("image/png", "image/jpeg")
"""The content types /api/read accepts."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# JPEG start-of-frame markers (they carry the size): SOF0-SOF15 minus DHT, JPG and DAC.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


class ImageError(ValueError):
    """An upload that is not a usable image: an HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _png_size(data: bytes) -> tuple[int, int]:
    # The IHDR chunk comes first: length, b"IHDR", width, height.
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ImageError(400, "the PNG is damaged (no IHDR header); save it again")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        if length < 2:
            break
        pos += 2 + length
    raise ImageError(400, "the JPEG is damaged (no frame header); save it again")


def _declared_size(data: bytes, content_type: str) -> tuple[int, int]:
    """Return the (width, height) the header declares, checking it is the type claimed."""
    if content_type == "image/png":
        if not data.startswith(_PNG_SIGNATURE):
            raise ImageError(400, "the request says image/png but the bytes are not a PNG")
        return _png_size(data)
    if not data.startswith(_JPEG_SOI):
        raise ImageError(400, "the request says image/jpeg but the bytes are not a JPEG")
    return _jpeg_size(data)


def decode_image(data: bytes, content_type: str) -> npt.NDArray[np.uint8]:
    """Decode a PNG or JPEG upload to an ``(H, W, 3)`` RGB uint8 array.

    Transparent pixels are laid over white, as a drawing on paper would be.

    Args:
        data: The file's bytes.
        content_type: The request's Content-Type; parameters after ``;`` are ignored.

    Raises:
        ImageError: 415 for another content type, 400 for bytes that are not a whole
            image of that type, 413 for an image of more than `MAX_PIXELS` pixels.
    """
    import cv2

    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in CONTENT_TYPES:
        shown = kind or "no Content-Type"
        raise ImageError(
            415, f"send a PNG or JPEG image (Content-Type image/png or image/jpeg), not {shown}"
        )
    width, height = _declared_size(data, kind)
    if width < 1 or height < 1:
        raise ImageError(400, f"the image is {width}x{height} pixels; it has nothing to read")
    if width * height > MAX_PIXELS:
        raise ImageError(
            413,
            f"the image is {width}x{height} pixels; send at most "
            f"{MAX_PIXELS // 1_000_000} megapixels (downscale it first)",
        )
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageError(400, f"the {kind} image could not be decoded; it may be damaged")
    return _to_rgb(np.asarray(decoded))


def _to_rgb(decoded: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    """Convert what OpenCV decoded (gray, BGR or BGRA; 8 or 16 bit) to RGB uint8."""
    image = decoded.astype(np.float32)
    if decoded.dtype == np.uint16:
        image /= 257.0
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    if channels in (2, 4):  # gray+alpha or BGRA: lay it over white
        alpha = image[:, :, -1:] / 255.0
        image = image[:, :, :-1] * alpha + 255.0 * (1.0 - alpha)
    # One channel is gray; three are OpenCV's BGR.
    image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, ::-1]
    return np.ascontiguousarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))


def encode_png(image: npt.NDArray[np.uint8]) -> bytes:
    """Encode an ``(H, W)`` gray or ``(H, W, 3)`` RGB uint8 image as PNG bytes."""
    import cv2

    if image.ndim == 3:
        if image.shape[2] != 3:
            raise ValueError(f"expected an RGB image, got shape {image.shape}")
        image = np.ascontiguousarray(image[:, :, ::-1])  # RGB -> BGR for OpenCV
    elif image.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("OpenCV could not encode the image as PNG")
    return bytes(buffer.tobytes())
