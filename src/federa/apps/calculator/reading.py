"""Read a handwritten expression: segment it, classify each symbol, compute the result.

`read_expression` finds the symbols (`segmentation.segment`), puts each in the
training data's format (`preprocess.to_model_input`), classifies them in one batch,
and turns the classes into text. Two rules use the whole line: a dot is a decimal
point on the baseline and a multiplication dot "·" at mid-height (judged against the
digits' tops and bottoms), and when the model's first choices do not spell a
well-formed expression the likeliest reading that does is taken (see `_decode`). The
text is then computed exactly by the calculator's own parser, never `eval`.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from federa.apps.calculator.parser import (
    CalculatorError,
    evaluate,
    format_value,
    is_well_formed,
)
from federa.apps.calculator.preprocess import to_model_input
from federa.apps.calculator.recognizer import Recognizer
from federa.apps.calculator.segmentation import Box, segment
from federa.errors import FederaError

__all__ = ["Reading", "Symbol", "load_image", "read_expression"]

_DIGITS = frozenset("0123456789")
# A dot whose centre is below this fraction of the digits' height is a decimal point;
# higher up it is a multiplication dot "·".
_BASELINE = 0.7
_MULTIPLY_DOT = "·"
# Decoding: each symbol's few most likely classes are tried, best joint probability
# first, while the joint probability stays within this factor of the model's first
# choice, and for at most _MAX_TRIED readings.
_TOP_K = 3
_MAX_RATIO = 1000.0
_MAX_TRIED = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class Symbol:
    """One symbol of a reading.

    Attributes:
        char: The character it adds to the expression: the class `label`, except that
            a dot at mid-height is the multiplication dot "·" (on the baseline it is a
            decimal point ".").
        label: The class the model chose.
        confidence: The model's probability of `label`, in [0, 1].
        box: Where the symbol is, in pixels of the image read: (x, y, width, height).
    """

    char: str
    label: str
    confidence: float
    box: Box


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """What `read_expression` made of an image.

    Attributes:
        symbols: The symbols found, left to right.
        text: The expression they spell, e.g. "12+3x4".
        value: The exact value of `text`, or None when it cannot be computed.
        error: Why there is no value (no symbols, malformed, division by zero), or None.
    """

    symbols: tuple[Symbol, ...]
    text: str
    value: Fraction | None
    error: str | None

    @property
    def value_text(self) -> str | None:
        """Return the value as a person writes it ("12", "0.25", "1/3 ≈ 0.3333333333")."""
        return None if self.value is None else format_value(self.value)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: text, value (as text), error and the symbols."""
        return {
            "text": self.text,
            "value": self.value_text,
            "error": self.error,
            "symbols": [
                {
                    "char": s.char,
                    "label": s.label,
                    "confidence": round(float(s.confidence), 4),
                    "box": list(s.box),
                }
                for s in self.symbols
            ],
        }


def _chars(labels: list[str], boxes: list[Box]) -> list[str]:
    """Return each symbol's character, telling decimal points from multiplication dots."""
    digit_boxes = [b for label, b in zip(labels, boxes, strict=True) if label in _DIGITS]
    if not digit_boxes:
        return list(labels)
    top = float(np.median([b.y for b in digit_boxes]))
    bottom = float(np.median([b.bottom for b in digit_boxes]))
    chars = []
    for label, box in zip(labels, boxes, strict=True):
        if label == "." and bottom > top and (box.center_y - top) / (bottom - top) < _BASELINE:
            chars.append(_MULTIPLY_DOT)
        else:
            chars.append(label)
    return chars


def _decode(
    probs: npt.NDArray[np.float32], class_names: Sequence[str], boxes: list[Box]
) -> tuple[list[str], list[float]]:
    """Return the most likely labels, and their probabilities, that spell a calculation.

    The model's first choices are kept when they spell a well-formed expression. When
    they do not ("/7+1", say, for "17+1"), readings are tried in decreasing joint
    probability, each symbol taking one of its `_TOP_K` likeliest classes, and the first
    well-formed one is taken, as an OCR system uses a language model. A reading far less
    likely than the model's first choice is never taken: then the first choice stays,
    and its error says what is wrong.
    """
    top = np.argsort(-probs, axis=1)[:, :_TOP_K]
    logs = np.log(np.maximum(np.take_along_axis(probs, top, axis=1), 1e-12))
    costs = logs[:, :1] - logs  # extra -log probability of each alternative

    def labels_of(ranks: tuple[int, ...]) -> list[str]:
        return [class_names[int(top[i, r])] for i, r in enumerate(ranks)]

    first = (0,) * len(probs)
    chosen = first
    heap: list[tuple[float, tuple[int, ...], int]] = [(0.0, first, 0)]
    tried = 0
    while heap and tried < _MAX_TRIED:
        cost, ranks, start = heapq.heappop(heap)
        if cost > math.log(_MAX_RATIO):
            break
        tried += 1
        if is_well_formed("".join(_chars(labels_of(ranks), boxes))):
            chosen = ranks
            break
        # Each reading is generated once: children only change symbols from `start` on.
        for i in range(start, len(ranks)):
            if ranks[i] + 1 < top.shape[1]:
                child = (*ranks[:i], ranks[i] + 1, *ranks[i + 1 :])
                step = float(costs[i, ranks[i] + 1] - costs[i, ranks[i]])
                heapq.heappush(heap, (cost + step, child, i))
    labels = labels_of(chosen)
    picked = [float(probs[i, top[i, r]]) for i, r in enumerate(chosen)]
    return labels, picked


def read_expression(image: npt.ArrayLike, recognizer: Recognizer) -> Reading:
    """Read one line of handwritten arithmetic and compute it.

    The symbols are found with `segment`, each is framed as the training data is
    (`to_model_input`) and classified, and the text is computed exactly by the
    calculator's parser (never `eval`).

    Args:
        image: Gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4) pixels, uint8 or float in
            [0, 1]: dark ink on light paper or the reverse.
        recognizer: The symbol classifier, from `load_recognizer`.

    Returns:
        The reading; its `error` says why there is no value, if there is none.

    Raises:
        FederaError: `image` is not an image array.
    """
    segments = segment(image)
    if not segments:
        return Reading(
            symbols=(),
            text="",
            value=None,
            error="no handwriting found in the image; write darker or take a sharper photo",
        )
    inputs = np.stack([to_model_input(s.ink) for s in segments])
    boxes = [s.box for s in segments]
    labels, confidences = _decode(recognizer.probabilities(inputs), recognizer.class_names, boxes)
    chars = _chars(labels, boxes)
    symbols = tuple(
        Symbol(char=c, label=label, confidence=float(p), box=b)
        for c, label, p, b in zip(chars, labels, confidences, boxes, strict=True)
    )
    text = "".join(chars)
    try:
        return Reading(symbols=symbols, text=text, value=evaluate(text), error=None)
    except CalculatorError as exc:
        return Reading(symbols=symbols, text=text, value=None, error=str(exc))


def load_image(path: str | os.PathLike[str]) -> npt.NDArray[np.uint8]:
    """Read an image file (PNG, JPEG, ... as OpenCV decodes them) as RGB uint8 pixels.

    Transparent pixels are laid over white paper.

    Raises:
        FederaError: The file is missing, unreadable or not an image.
    """
    import cv2

    where = Path(path)
    try:
        data = where.read_bytes()
    except FileNotFoundError:
        raise FederaError(f"image {where} does not exist") from None
    except IsADirectoryError:
        raise FederaError(f"{where} is a folder, not an image file") from None
    except OSError as exc:
        raise FederaError(f"cannot read image {where}: {exc.strerror or exc}") from None
    decoded = None
    if data:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise FederaError(f"{where} is not an image OpenCV can read; pass a PNG or JPEG file")
    pixels = np.asarray(decoded)
    if pixels.dtype == np.uint16:
        pixels = (pixels // 257).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[2] == 4:
        alpha = pixels[:, :, 3:].astype(np.float32) / 255.0
        over_white = pixels[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        pixels = np.clip(np.rint(over_white), 0, 255).astype(np.uint8)
    if pixels.ndim == 3:
        pixels = np.ascontiguousarray(pixels[:, :, 2::-1])  # OpenCV's BGR -> RGB
    rgb: npt.NDArray[np.uint8] = pixels.astype(np.uint8, copy=False)
    return rgb
