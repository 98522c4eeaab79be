"""The handwriting calculator: read an expression written by hand and compute it."""

from federa.apps.calculator.annotate import annotate, write_png
from federa.apps.calculator.parser import CalculatorError, evaluate, format_value
from federa.apps.calculator.reading import Reading, Symbol, load_image, read_expression
from federa.apps.calculator.recognizer import Recognizer, load_recognizer
from federa.apps.calculator.segmentation import Box, Segment, segment

__all__ = [
    "Box",
    "CalculatorError",
    "Reading",
    "Recognizer",
    "Segment",
    "Symbol",
    "annotate",
    "evaluate",
    "format_value",
    "load_image",
    "load_recognizer",
    "read_expression",
    "segment",
    "write_png",
]
