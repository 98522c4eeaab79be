"""MNIST's framing of a handwritten symbol: fit in a 20x20 box, centre by mass in 28x28.

LeCun, Bottou, Bengio, Haffner, "Gradient-Based Learning Applied to Document
Recognition", Proc. IEEE 1998, and http://yann.lecun.com/exdb/mnist/: "size normalized
to fit in a 20x20 pixel box while preserving their aspect ratio ... centered in a 28x28
image by computing the center of mass of the pixels". Framing every symbol this way
makes a classifier blind to how large the symbol was written, so the same model reads a
scanned page and a small photo.

`stretch_ink` then gives every symbol the same contrast: images from different sources
differ in how much of their ink is saturated (about half of an MNIST digit's ink pixels
are above 0.9, a fifth of a thin pen stroke's after resizing), and a classifier trained
on two sources learns that difference as if it told the classes apart.
`calculator_format` is both steps, the handwriting calculator's input format.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from federa.errors import FederaError

__all__ = [
    "FRAME_BOX",
    "FRAME_SIZE",
    "calculator_format",
    "frame_like_mnist",
    "frame_many",
    "stretch_ink",
]

FRAME_SIZE = 28
"""Side of the framed image, in pixels."""
FRAME_BOX = 20
"""Side of the box the symbol's ink is fitted into, in pixels."""
# Pixels fainter than this fraction of the brightest one do not count towards the
# symbol's extent (anti-aliasing fringes and faint smudges).
_INK_FRACTION = 0.1


def _cv2() -> Any:
    try:
        # Imported here so that federa.data works without OpenCV installed.
        import cv2
    except ImportError as exc:
        raise FederaError(
            "framing symbols needs OpenCV, which is not installed; run pip install 'federa[data]'"
        ) from exc
    return cv2


def frame_like_mnist(image: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Return one symbol framed as MNIST frames its digits.

    The ink (pixels above a tenth of the brightest) is cropped, resized so that its
    longer side is 20 pixels with the aspect ratio kept (area interpolation when
    shrinking, bilinear when enlarging), and pasted into a black 28x28 image so that its
    centre of mass falls on pixel (14, 14), as in MNIST. The shift is a whole number of
    pixels, so no further blur is added.

    Args:
        image: A 2-D grayscale image of one symbol, ink bright on a black (zero)
            background, any size; values are kept as they are (MNIST's are in [0, 1]).

    Returns:
        A float32 array of shape (28, 28).

    Raises:
        FederaError: `image` is not 2-D, or holds no ink (nothing above zero).
    """
    cv2 = _cv2()
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim != 2:
        raise FederaError(f"a symbol to frame must be a 2-D image, got shape {pixels.shape}")
    peak = float(pixels.max(initial=0.0))
    if not peak > 0:
        raise FederaError("a symbol to frame holds no ink (every pixel is 0 or less)")
    rows = np.flatnonzero((pixels > _INK_FRACTION * peak).any(axis=1))
    cols = np.flatnonzero((pixels > _INK_FRACTION * peak).any(axis=0))
    crop = np.clip(pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], 0.0, None)
    height, width = crop.shape
    scale = FRAME_BOX / max(height, width)
    new_h = min(FRAME_BOX, max(1, round(height * scale)))
    new_w = min(FRAME_BOX, max(1, round(width * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(crop, (new_w, new_h), interpolation=interpolation).reshape(new_h, new_w)
    small = np.clip(small, 0.0, peak)
    total = float(small.sum())
    if total > 0:
        com_y = float(small.sum(axis=1) @ np.arange(new_h)) / total
        com_x = float(small.sum(axis=0) @ np.arange(new_w)) / total
    else:  # pragma: no cover - a positive crop cannot resize to all zeros
        com_y, com_x = (new_h - 1) / 2, (new_w - 1) / 2
    centre = FRAME_SIZE / 2
    top = min(max(round(centre - com_y), 0), FRAME_SIZE - new_h)
    left = min(max(round(centre - com_x), 0), FRAME_SIZE - new_w)
    framed = np.zeros((FRAME_SIZE, FRAME_SIZE), dtype=np.float32)
    framed[top : top + new_h, left : left + new_w] = small
    return framed


def stretch_ink(images: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Scale each image so that its median ink pixel is 1, clipping above; keep the shape.

    Ink pixels are those above a tenth of the image's brightest; an image without ink
    is returned unchanged. Works on one (H, W) image or a batch of any leading shape.
    """
    pixels = np.asarray(images, dtype=np.float32)
    if pixels.ndim < 2:
        raise FederaError(f"expected images of shape (..., H, W), got shape {pixels.shape}")
    flat = pixels.reshape(-1, pixels.shape[-2] * pixels.shape[-1])
    peaks = flat.max(axis=1, keepdims=True)
    ink = np.where((flat > _INK_FRACTION * peaks) & (peaks > 0), flat, np.nan)
    with np.errstate(all="ignore"):
        has_ink = ~np.isnan(ink).all(axis=1)
        medians = np.ones(len(flat), dtype=np.float32)
        medians[has_ink] = np.nanmedian(ink[has_ink], axis=1)
    stretched: npt.NDArray[np.float32] = np.clip(flat / medians[:, None], 0.0, 1.0).astype(
        np.float32
    )
    return stretched.reshape(pixels.shape)


def calculator_format(image: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Return one symbol in the handwriting calculator's input format.

    That is `frame_like_mnist` followed by `stretch_ink`: 28x28, ink fitted in a 20x20
    box and centred by mass, median ink pixel at 1.
    """
    formatted: npt.NDArray[np.float32] = stretch_ink(frame_like_mnist(image))
    return formatted


def frame_many(images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Put every image of a (N, 1, H, W) batch in `calculator_format`.

    Returns:
        A float32 array of shape (N, 1, 28, 28).
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise FederaError(f"expected a (N, 1, H, W) batch of images, got shape {images.shape}")
    out = np.empty((len(images), 1, FRAME_SIZE, FRAME_SIZE), dtype=np.float32)
    for i, image in enumerate(images):
        out[i, 0] = calculator_format(image[0])
    return out
