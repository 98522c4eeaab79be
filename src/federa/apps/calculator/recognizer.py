"""The symbol classifier: a trained run's model, loaded from its model.safetensors.

A classifier's probabilities carry the class frequencies of its training set: the
calculator set holds about 6,000 images of each digit and 800 of each operator, so a
symbol between "1" and "/" is called "1" eight times in nine. An expression is not
drawn from that set: `Recognizer` re-weights the probabilities from the training
prior to the calculator's own (each digit equally likely, the operators together a
quarter of the symbols, as in expressions of two-digit numbers). This is the prior
correction of Saerens, Latinne and Decaestecker, "Adjusting the Outputs of a
Classifier to New a Priori Probabilities", Neural Computation 14(1), 2002.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from federa.data.calculator import CALCULATOR_CLASSES
from federa.errors import FederaError
from federa.server.model_file import MODEL_FILE, load_model_file
from federa.torch.arrays import arrays_to_module
from federa.torch.models import build_model

__all__ = ["Recognizer", "calculator_prior", "load_recognizer"]

_IN_SHAPE = (1, 28, 28)
_DIGITS = frozenset("0123456789")
_DIGIT_SHARE = 0.75  # of the symbols in an expression, a priori


def calculator_prior(class_names: Sequence[str]) -> npt.NDArray[np.float64]:
    """Return the a-priori class probabilities of a symbol in a written expression.

    Digits share 3/4 equally and operators 1/4 equally (all classes equally when the
    model knows only one kind).
    """
    is_digit = np.array([name in _DIGITS for name in class_names])
    digits, operators = int(is_digit.sum()), int((~is_digit).sum())
    if digits == 0 or operators == 0:
        return np.full(len(class_names), 1.0 / len(class_names))
    return np.where(is_digit, _DIGIT_SHARE / digits, (1 - _DIGIT_SHARE) / operators)


class Recognizer:
    """Classify 28x28 symbol images with a trained model.

    Args:
        module: The classifier; it maps a (N, 1, 28, 28) float batch to (N, classes)
            logits. It is switched to evaluation mode.
        class_names: The character each output stands for, in output order.
        class_counts: Training examples per class; when given, probabilities are
            re-weighted from that prior to `calculator_prior` (see the module notes).
        source: Where the model came from, for messages.

    Raises:
        FederaError: A class name is not one the calculator can compute with, or
            `class_counts` does not give a positive count per class.
    """

    def __init__(
        self,
        module: nn.Module,
        class_names: Sequence[str],
        *,
        class_counts: Sequence[int] | None = None,
        source: str = "",
    ) -> None:
        unknown = [name for name in class_names if name not in CALCULATOR_CLASSES]
        if unknown or not class_names:
            raise FederaError(
                f"{source or 'the model'} has classes {list(class_names)}, which are not "
                f"calculator symbols ({' '.join(CALCULATOR_CLASSES)}); train it with "
                "federa run --dataset calculator"
            )
        self.module = module.eval()
        self.class_names = tuple(class_names)
        self.source = source
        self.weights: npt.NDArray[np.float64] | None = None
        if class_counts is not None:
            counts = np.asarray(class_counts, dtype=np.float64)
            if counts.shape != (len(self.class_names),) or not (counts > 0).all():
                raise FederaError(
                    f"{source or 'the model'}: class_counts must give a positive count for "
                    f"each of the {len(self.class_names)} classes, got {list(class_counts)}"
                )
            self.weights = calculator_prior(self.class_names) / (counts / counts.sum())

    @torch.inference_mode()
    def probabilities(self, images: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Return the class probabilities of a batch of (N, 28, 28) or (N, 1, 28, 28) images.

        With `class_counts`, the probabilities are under the calculator's prior.
        """
        batch = np.asarray(images, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[:, None]
        if batch.ndim != 4 or batch.shape[1:] != _IN_SHAPE:
            raise FederaError(f"expected (N, 1, 28, 28) symbol images, got shape {batch.shape}")
        if len(batch) == 0:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        logits = self.module(torch.from_numpy(np.ascontiguousarray(batch)))
        probs = torch.softmax(logits, dim=1).numpy().astype(np.float64)
        if self.weights is not None:
            probs = probs * self.weights
            probs /= probs.sum(axis=1, keepdims=True)
        out: npt.NDArray[np.float32] = probs.astype(np.float32)
        return out

    def classify(self, images: npt.ArrayLike) -> tuple[list[str], npt.NDArray[np.float32]]:
        """Return the most likely class name of each image and its probability."""
        probs = self.probabilities(images)
        best = probs.argmax(axis=1)
        names = [self.class_names[int(k)] for k in best]
        return names, probs[np.arange(len(best)), best].astype(np.float32)


def _model_path(run: Path) -> Path:
    if run.is_dir():
        path = run / MODEL_FILE
        if not path.is_file():
            raise FederaError(
                f"{run} has no {MODEL_FILE}; train a model into it with federa run "
                f"--dataset calculator --data-dir DATA --out {run}"
            )
        return path
    if not run.exists():
        raise FederaError(f"run directory {run} does not exist; pass the --out of a federa run")
    return run


def _json_field(metadata: dict[str, str], key: str, where: Path) -> object:
    if key not in metadata:
        raise FederaError(
            f"{where} does not record its {key}; write it with a newer federa run "
            "--dataset calculator"
        )
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise FederaError(f"{where} has a damaged {key} ({exc}); write it again") from None


def load_recognizer(run: str | os.PathLike[str]) -> Recognizer:
    """Load the symbol classifier of a `federa run` directory (or its model file).

    Args:
        run: The run directory (holding model.safetensors) or the model file itself.

    Raises:
        FederaError: The directory or file is missing, is not a federa model, or the
            model is not a calculator model (28x28 inputs, calculator class names).
    """
    path = _model_path(Path(run))
    arrays, metadata = load_model_file(path)
    in_shape = _json_field(metadata, "in_shape", path)
    class_names = _json_field(metadata, "class_names", path)
    if in_shape != list(_IN_SHAPE):
        raise FederaError(
            f"{path} takes inputs of shape {in_shape}, but the calculator reads 28x28 "
            "grayscale symbols; train with federa run --dataset calculator"
        )
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise FederaError(f"{path} has damaged class_names; write it again")
    if "model" not in metadata:
        raise FederaError(f"{path} does not record its model architecture; write it again")
    module = build_model(metadata["model"], _IN_SHAPE, len(class_names))
    try:
        arrays_to_module(module, arrays)
    except FederaError as exc:
        raise FederaError(f"{path} does not fit model {metadata.get('model')!r}: {exc}") from None
    counts = _json_field(metadata, "class_counts", path) if "class_counts" in metadata else None
    if counts is not None and not (
        isinstance(counts, list) and all(isinstance(c, int) for c in counts)
    ):
        raise FederaError(f"{path} has damaged class_counts; write it again")
    return Recognizer(module, class_names, class_counts=counts, source=str(path))
