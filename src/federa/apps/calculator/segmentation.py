"""Find the handwritten symbols of one line of arithmetic in a photo or a scan, with OpenCV.

The steps: grayscale; ink made bright whichever way the page is (dark ink on paper or
chalk on a board); the paper's uneven lighting subtracted (a median over windows much
larger than a stroke); a 3x3 median against salt-and-pepper noise; Otsu's threshold,
with hysteresis so that a faint stretch of a stroke stays joined; 8-connected
components (the same boxes as external contours, plus per-pixel labels so that a crop
never takes a neighbour's ink). Specks far smaller than the median symbol are dropped.
Parts of one symbol are merged: parts stacked in one column (the dot, bar and dot of
"÷", the two bars of "=", a stroke broken by the threshold), a part inside another's
box, and neighbours whose ink nearly touches (a stroke the pen lifted off). The symbols
come back left to right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from federa.errors import FederaError

__all__ = ["Box", "Segment", "ink_image", "segment", "to_gray"]

FloatImage = npt.NDArray[np.float32]

MAX_SIDE = 2000
"""Larger images are shrunk to this longer side before segmentation (boxes are not)."""
# A part with less than this fraction of the median symbol's area is a speck of dirt,
# unless it sits in another part's column (a dot of "÷").
_SPECK_AREA = 0.03
# Parts whose x-ranges overlap by at least this fraction of the narrower one, and whose
# vertical gap is at most _COLUMN_GAP digit heights, are one symbol.
_COLUMN_OVERLAP = 0.5
_COLUMN_GAP = 0.75
# A part whose box lies this much inside another's box belongs to it.
_CONTAINED = 0.8
# Neighbours whose ink comes this close (in digit heights) are one symbol.
_TOUCH = 0.1
# A part lower than this many digit heights is a small part: a dot, a minus, or a
# broken-off piece of a symbol.
_SMALL = 0.5
# A small part taller than this many times its width is a sliver, not a symbol: the
# small symbols are dots, bars and crosses ("-", "·", ".", a small "+" or "x").
_SLIVER = 2.0
# A small symbol has its centre this low on the line, at least (0 = the digits' tops,
# 1 = their bottoms): "." on the baseline, the others at mid-height.
_SYMBOL_LEVEL = 0.25
# A small part that cannot be a symbol of its own joins a neighbour whose ink is at most
# this many digit heights away.
_FRAGMENT_REACH = 0.5
_WEAK = 0.4  # hysteresis: the low threshold, as a fraction of the high one
_MIN_CONTRAST = 0.06  # ink this close to the paper's shade is no ink at all


class Box(NamedTuple):
    """An axis-aligned box in pixels: left, top, width and height."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        """Return the first column to the right of the box."""
        return self.x + self.width

    @property
    def bottom(self) -> int:
        """Return the first row below the box."""
        return self.y + self.height

    @property
    def center_x(self) -> float:
        """Return the horizontal centre."""
        return self.x + self.width / 2

    @property
    def center_y(self) -> float:
        """Return the vertical centre."""
        return self.y + self.height / 2


@dataclass(frozen=True, slots=True, kw_only=True)
class Segment:
    """One symbol found in an image.

    Attributes:
        box: Where it is, in pixels of the image given to `segment`.
        ink: Its ink inside `box` (at the resolution segmentation worked at), bright on
            black in [0, 1]; pixels of other symbols are 0.
        num_parts: How many connected components were merged into it (3 for a "÷").
    """

    box: Box
    ink: FloatImage
    num_parts: int


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:
        raise FederaError(
            "reading handwriting needs OpenCV, which is not installed; "
            "run pip install 'federa[data]'"
        ) from exc
    return cv2


def to_gray(image: npt.ArrayLike) -> FloatImage:
    """Return a 2-D float32 image in [0, 1] from gray, RGB or RGBA pixels of any dtype."""
    pixels = np.asarray(image)
    if pixels.dtype == np.bool_:
        pixels = pixels.astype(np.float32)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise FederaError(
            f"expected a gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4) image, got shape "
            f"{pixels.shape}"
        )
    if pixels.dtype.kind not in "uif" or min(pixels.shape[:2]) < 1:
        raise FederaError(f"expected an image of numbers, got {pixels.dtype} {pixels.shape}")
    values = pixels.astype(np.float32)
    if pixels.dtype.kind in "ui":
        values /= float(np.iinfo(pixels.dtype).max)
    elif float(np.nanmax(values, initial=0.0)) > 1.0:
        values /= 255.0  # floats on the 0-255 scale
    values = np.nan_to_num(np.clip(values, 0.0, 1.0))
    if values.ndim == 3:
        if values.shape[2] == 4:  # lay transparent pixels over white paper
            alpha = values[:, :, 3:]
            values = values[:, :, :3] * alpha + (1.0 - alpha)
        values = values @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.ascontiguousarray(values, dtype=np.float32)


def _odd(n: float) -> int:
    return max(3, int(n) // 2 * 2 + 1)


def ink_image(image: npt.ArrayLike) -> FloatImage:
    """Return the ink of `image`: bright strokes on a black background, in [0, 1].

    The page's polarity is taken from its median (the paper is most of the picture),
    the paper's shade is estimated by a median over windows the size of the image's
    shorter side (ink covers well under half of such a window) and subtracted, and the
    rest is scaled so that the strokes' cores reach 1.

    Args:
        image: Gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4) pixels; uint8, uint16,
            bool or float in [0, 1] (or 0-255).

    Raises:
        FederaError: The array is not an image.
    """
    cv2 = _cv2()
    gray = to_gray(image)
    ink = 1.0 - gray if float(np.median(gray)) > 0.5 else gray
    height, width = ink.shape
    window = max(16, min(height, width))
    factor = max(1.0, window / 12)  # the median runs on a copy about 12 pixels per window
    small_w, small_h = max(1, round(width / factor)), max(1, round(height / factor))
    small = cv2.resize(ink, (small_w, small_h), interpolation=cv2.INTER_AREA)
    small8 = np.clip(np.rint(small * 255), 0, 255).astype(np.uint8)
    paper = cv2.medianBlur(small8, _odd(min(13, 2 * max(small_w, small_h) - 1)))
    paper = cv2.resize(
        paper.astype(np.float32) / 255, (width, height), interpolation=cv2.INTER_LINEAR
    )
    flat = np.clip(ink - paper.reshape(height, width), 0.0, 1.0)
    flat8 = np.clip(np.rint(flat * 255), 0, 255).astype(np.uint8)
    peak = float(cv2.medianBlur(flat8, 3).max()) / 255  # salt noise does not count
    if peak < _MIN_CONTRAST:
        return np.zeros_like(flat)
    scaled: FloatImage = np.clip(flat / peak, 0.0, 1.0).astype(np.float32)
    return scaled


def _binarize(ink: FloatImage) -> npt.NDArray[np.uint8]:
    """Threshold the ink with hysteresis: Otsu's level finds strokes, a lower one joins them.

    Otsu's threshold (kept within [0.2, 0.6] of the stroke peak) marks certain ink; every
    pixel above 40% of it that is connected to certain ink is ink too, so a faint stretch
    of pen does not split a symbol in two while faint noise away from strokes stays out.
    """
    cv2 = _cv2()
    ink8 = cv2.medianBlur(np.clip(np.rint(ink * 255), 0, 255).astype(np.uint8), 3)
    if not ink8.any():
        return np.zeros(ink.shape, dtype=np.uint8)
    otsu, _ = cv2.threshold(ink8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    high = min(max(otsu, 0.2 * 255), 0.6 * 255)
    weak = (ink8 > _WEAK * high).astype(np.uint8)
    count, labels = cv2.connectedComponents(weak, connectivity=8)
    is_ink = np.bincount(labels[ink8 > high], minlength=count) > 0
    is_ink[0] = False
    binary: npt.NDArray[np.uint8] = is_ink[labels].astype(np.uint8)
    return binary


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _belong_together(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64], height: float) -> bool:
    """Return whether parts with boxes a and b, (x, y, w, h), are one symbol."""
    ax, ay, aw, ah = (int(v) for v in a)
    bx, by, bw, bh = (int(v) for v in b)
    x_overlap = _overlap(ax, ax + aw, bx, bx + bw)
    y_overlap = _overlap(ay, ay + ah, by, by + bh)
    smaller = min(aw * ah, bw * bh)
    if x_overlap * y_overlap >= _CONTAINED * smaller:
        return True
    gap = max(ay, by) - min(ay + ah, by + bh)
    return x_overlap >= _COLUMN_OVERLAP * min(aw, bw) and gap <= _COLUMN_GAP * height


def _groups(stats: npt.NDArray[np.int64], keep: list[int], height: float) -> list[list[int]]:
    """Merge the kept components into symbols (union-find until nothing changes)."""
    parent = {k: k for k in keep}

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    boxes = {k: stats[k, :4].copy() for k in keep}
    changed = True
    while changed:
        changed = False
        roots = sorted({root(k) for k in keep})
        for i, a in enumerate(roots):
            for b in roots[i + 1 :]:
                ra, rb = root(a), root(b)
                if ra == rb or not _belong_together(boxes[ra], boxes[rb], height):
                    continue
                x0 = min(boxes[ra][0], boxes[rb][0])
                y0 = min(boxes[ra][1], boxes[rb][1])
                x1 = max(boxes[ra][0] + boxes[ra][2], boxes[rb][0] + boxes[rb][2])
                y1 = max(boxes[ra][1] + boxes[ra][3], boxes[rb][1] + boxes[rb][3])
                parent[rb] = ra
                boxes[ra] = np.array([x0, y0, x1 - x0, y1 - y0], dtype=np.int64)
                changed = True
    members: dict[int, list[int]] = {}
    for k in keep:
        members.setdefault(root(k), []).append(k)
    return list(members.values())


def _extent(stats: npt.NDArray[np.int64], group: list[int]) -> tuple[int, int, int, int]:
    """Return the (x0, y0, x1, y1) box around the components of `group`."""
    return (
        int(min(stats[k, 0] for k in group)),
        int(min(stats[k, 1] for k in group)),
        int(max(stats[k, 0] + stats[k, 2] for k in group)),
        int(max(stats[k, 1] + stats[k, 3] for k in group)),
    )


def _pixel_gap(
    labels: npt.NDArray[np.int32],
    stats: npt.NDArray[np.int64],
    a: list[int],
    b: list[int],
) -> float:
    """Return the shortest distance between a pixel of group `a` and one of group `b`."""
    cv2 = _cv2()
    ax0, ay0, ax1, ay1 = _extent(stats, a)
    bx0, by0, bx1, by1 = _extent(stats, b)
    x0, y0 = min(ax0, bx0), min(ay0, by0)
    region = labels[y0 : max(ay1, by1), x0 : max(ax1, bx1)]
    outside_a = (~np.isin(region, a)).astype(np.uint8)
    distance = cv2.distanceTransform(outside_a, cv2.DIST_L2, 3)
    return float(distance[np.isin(region, b)].min())


def _join_close(
    groups: list[list[int]],
    stats: npt.NDArray[np.int64],
    labels: npt.NDArray[np.int32],
    height: float,
) -> list[list[int]]:
    """Merge neighbours (left to right) whose ink comes within a pen's width of each other.

    A stroke the pen lifted off, or that faded below the threshold, leaves a piece
    right next to its symbol; separate symbols are written further apart.
    """
    ordered = sorted(groups, key=lambda g: _extent(stats, g)[0])
    joined: list[list[int]] = []
    limit = _TOUCH * height
    for group in ordered:
        if joined:
            last = joined[-1]
            if _extent(stats, group)[0] - _extent(stats, last)[2] <= limit and (
                _pixel_gap(labels, stats, last, group) <= limit
            ):
                joined[-1] = last + group
                continue
        joined.append(group)
    return joined


def _line_band(
    stats: npt.NDArray[np.int64], groups: list[list[int]], height: float
) -> tuple[float, float] | None:
    """Return the rows of the digits' tops and bottoms (medians), or None without digits."""
    extents = [_extent(stats, g) for g in groups]
    tall = [(y0, y1) for _, y0, _, y1 in extents if y1 - y0 >= 0.75 * height]
    if not tall:
        return None
    return float(np.median([t for t, _ in tall])), float(np.median([b for _, b in tall]))


def _stands_alone(box: tuple[int, int, int, int], band: tuple[float, float], height: float) -> bool:
    """Return whether a part with box (x0, y0, x1, y1) can be a symbol by itself.

    The calculator's symbols are about as tall as a digit ("+", "x", "÷" two-thirds
    of one) except the dots ("." on the baseline, "·" at mid-height) and the minus
    (mid-height); a small "+" or "x" is as wide as it is high. A small part up among
    the digits' tops (the detached bar of a "5", the tip of a "4" or a "1"), or a short
    upright sliver, is a piece of a neighbour that the threshold or the scan broke off.
    """
    x0, y0, x1, y1 = box
    width, tall = x1 - x0, y1 - y0
    if tall >= _SMALL * height:
        return True
    top, bottom = band
    level = ((y0 + y1) / 2 - top) / max(bottom - top, 1.0)
    return level >= _SYMBOL_LEVEL and tall <= _SLIVER * width


def _join_fragments(
    groups: list[list[int]],
    stats: npt.NDArray[np.int64],
    labels: npt.NDArray[np.int32],
    height: float,
) -> list[list[int]]:
    """Merge each small part that cannot be a symbol by itself into its nearest neighbour.

    The neighbours are the groups before and after it, left to right; the nearer one
    (by the shortest distance between their ink) takes it, when that is within
    `_FRAGMENT_REACH` digit heights.
    """
    band = _line_band(stats, groups, height)
    if band is None:
        return groups
    ordered = sorted(groups, key=lambda g: _extent(stats, g)[0])
    i = 0
    while i < len(ordered):
        group = ordered[i]
        if len(ordered) < 2 or _stands_alone(_extent(stats, group), band, height):
            i += 1
            continue
        near = [j for j in (i - 1, i + 1) if 0 <= j < len(ordered)]
        gaps = {j: _pixel_gap(labels, stats, ordered[j], group) for j in near}
        best = min(gaps, key=gaps.__getitem__)
        if gaps[best] > _FRAGMENT_REACH * height:
            i += 1
            continue
        ordered[best] = ordered[best] + group
        del ordered[i]
        i = max(0, min(i, best) - 1)  # the grown group may now take a fragment
    return ordered


def _kept_parts(stats: npt.NDArray[np.int64]) -> tuple[list[int], float]:
    """Return the components that are not specks, and the height of a digit."""
    parts = stats[1:]
    areas = parts[:, 4].astype(np.float64)
    big = areas >= 0.1 * areas.max()
    # The line's height is that of its tall symbols (digits), not of bars and dots.
    heights = parts[big, 3]
    median_height = float(np.median(heights[heights >= 0.5 * heights.max()]))
    speck = areas < _SPECK_AREA * float(np.median(areas[big]))
    x0, y0 = parts[:, 0], parts[:, 1]
    x1, y1 = x0 + parts[:, 2], y0 + parts[:, 3]
    solid = np.flatnonzero(~speck)
    keep = [int(k) + 1 for k in solid]
    for k in np.flatnonzero(speck):
        # A small part in the column of a larger one (a dot of "÷") is kept.
        overlap = np.minimum(x1[k], x1[solid]) - np.maximum(x0[k], x0[solid])
        gap = np.maximum(y0[k], y0[solid]) - np.minimum(y1[k], y1[solid])
        in_column = (overlap >= _COLUMN_OVERLAP * parts[k, 2]) & (
            gap <= _COLUMN_GAP * median_height
        )
        if in_column.any():
            keep.append(int(k) + 1)
    return sorted(keep), median_height


def segment(image: npt.ArrayLike) -> list[Segment]:
    """Find the symbols of a handwritten expression, left to right.

    Args:
        image: Gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4) pixels of one line of
            handwriting; uint8, uint16, bool or float in [0, 1].

    Returns:
        One `Segment` per symbol, ordered by the horizontal centre of its box; empty
        when the image holds no ink.

    Raises:
        FederaError: The array is not an image.
    """
    cv2 = _cv2()
    gray = to_gray(image)
    height, width = gray.shape
    scale = min(1.0, MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    ink = ink_image(gray)
    binary = _binarize(ink)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return []
    stats = stats.astype(np.int64)
    keep, median_height = _kept_parts(stats)
    dilate = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    segments = []
    groups = _join_close(_groups(stats, keep, median_height), stats, labels, median_height)
    groups = _join_fragments(groups, stats, labels, median_height)
    for group in groups:
        x0, y0, x1, y1 = _extent(stats, group)
        # One pixel of margin takes in the anti-aliased fringe the threshold cut off.
        px0, py0 = max(0, x0 - 1), max(0, y0 - 1)
        px1, py1 = min(ink.shape[1], x1 + 1), min(ink.shape[0], y1 + 1)
        mask = np.isin(labels[py0:py1, px0:px1], group).astype(np.uint8)
        mask = cv2.dilate(mask, dilate)
        crop = (ink[py0:py1, px0:px1] * mask).astype(np.float32)
        box = Box(
            x=int(np.floor(x0 / scale)),
            y=int(np.floor(y0 / scale)),
            width=max(1, round((x1 - x0) / scale)),
            height=max(1, round((y1 - y0) / scale)),
        )
        segments.append(Segment(box=box, ink=crop, num_parts=len(group)))
    segments.sort(key=lambda s: (s.box.center_x, s.box.y))
    return segments
