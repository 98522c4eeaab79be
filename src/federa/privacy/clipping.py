"""L2 clipping of model updates, the sensitivity bound of every DP mechanism in federa.

An update is what a client changed: its returned arrays minus the global arrays it was
sent. Only floating-point arrays count: integer arrays (BatchNorm's
`num_batches_tracked`) are not part of the update, are never clipped and, where a DP
mechanism releases a model, keep the global value. The norm is the L2 norm over all
floating arrays together, as in McMahan, Ramage, Talwar, Zhang, "Learning
Differentially Private Recurrent Language Models", ICLR 2018 (flat clipping).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from federa.core.arrays import Arrays, NDArray
from federa.errors import ConfigError


def is_update_array(array: NDArray) -> bool:
    """Return whether `array` takes part in an update (floating point)."""
    return bool(array.dtype.kind == "f")


def check_clip_norm(clip_norm: float) -> None:
    """Raise ConfigError unless `clip_norm` is a positive finite number."""
    if not (clip_norm > 0 and math.isfinite(clip_norm)):
        raise ConfigError(f"clip_norm must be a positive number, got {clip_norm}")


def model_update(arrays: Arrays, reference: Arrays) -> Arrays:
    """Return `arrays - reference` in float64 for every floating array.

    Raises:
        ConfigError: The two do not hold the same names, dtypes and shapes.
    """
    if not arrays.same_spec(reference):
        raise ConfigError(
            f"cannot take an update of arrays {arrays.spec()} from {reference.spec()}; "
            "a client must return the arrays it was sent"
        )
    return Arrays(
        (name, a.astype(np.float64) - reference[name].astype(np.float64))
        for name, a in arrays.items()
        if is_update_array(a)
    )


def update_norm(update: Mapping[str, NDArray]) -> float:
    """Return the L2 norm over all floating arrays of `update`, computed in float64."""
    total = 0.0
    for array in update.values():
        if is_update_array(array):
            flat = array.astype(np.float64, copy=False).ravel()
            total += float(np.dot(flat, flat))
    return math.sqrt(total)


def clip_scale(norm: float, clip_norm: float) -> float:
    """Return min(1, clip_norm / norm): the factor that brings `norm` down to `clip_norm`."""
    return 1.0 if norm <= clip_norm else clip_norm / norm


def clip_update(update: Mapping[str, NDArray], clip_norm: float) -> Arrays:
    """Scale the floating arrays of `update` so their joint L2 norm is at most `clip_norm`.

    The direction is kept and a norm is never raised: an update already within the
    bound comes back unchanged. Arrays keep their dtypes; non-floating arrays pass
    through untouched.

    Args:
        update: The update (for example `model_update(new, global)`).
        clip_norm: The bound C (> 0).

    Raises:
        ConfigError: `clip_norm` is not a positive number, or the update holds NaN or Inf.
    """
    check_clip_norm(clip_norm)
    norm = update_norm(update)
    if not math.isfinite(norm):
        raise ConfigError("cannot clip an update that holds NaN or Inf")
    scale = clip_scale(norm, clip_norm)
    if scale == 1.0:
        return Arrays(update)
    return Arrays(
        (name, (a * scale).astype(a.dtype) if is_update_array(a) else a)
        for name, a in update.items()
    )


def clip_arrays(arrays: Arrays, reference: Arrays, clip_norm: float) -> Arrays:
    """Return `reference + clip(arrays - reference)`: a client's arrays with a bounded update.

    Non-floating arrays take their value from `reference`, so nothing beyond the clipped
    update leaves the client. Each array keeps its dtype.
    """
    clipped = clip_update(model_update(arrays, reference), clip_norm)
    out: dict[str, NDArray] = {}
    for name, ref in reference.items():
        if name in clipped:
            out[name] = (ref.astype(np.float64) + clipped[name]).astype(ref.dtype)
        else:
            out[name] = ref
    return Arrays(out)
