"""Conversions between a `torch.nn.Module` and `Arrays` (parameters and buffers, by name)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from federa.core.arrays import Arrays
from federa.errors import ClientError


def module_to_arrays(module: nn.Module) -> Arrays:
    """Return a copy of every parameter and buffer of `module`, keyed by state-dict name."""
    return Arrays(
        {
            name: tensor.detach().to("cpu", copy=True).numpy()
            for name, tensor in module.state_dict(keep_vars=True).items()
        }
    )


def arrays_to_module(module: nn.Module, arrays: Arrays) -> None:
    """Copy `arrays` into `module` in place.

    Raises:
        ClientError: if the names, shapes or dtypes do not match the module's state dict.
    """
    state = module.state_dict(keep_vars=True)
    missing = [k for k in state if k not in arrays]
    unexpected = [k for k in arrays if k not in state]
    if missing or unexpected:
        raise ClientError(
            f"arrays do not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            value = arrays[name]
            if tuple(value.shape) != tuple(tensor.shape):
                raise ClientError(
                    f"array {name!r} has shape {tuple(value.shape)} but the model expects "
                    f"{tuple(tensor.shape)}"
                )
            source = torch.from_numpy(np.ascontiguousarray(value))
            if source.dtype != tensor.dtype:
                raise ClientError(
                    f"array {name!r} has dtype {source.dtype} but the model expects {tensor.dtype}"
                )
            tensor.copy_(source)
