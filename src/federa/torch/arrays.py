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
            expected = torch.empty((), dtype=tensor.dtype).numpy().dtype
            if value.dtype != expected:
                raise ClientError(
                    f"array {name!r} has dtype {value.dtype} but the model expects {expected}"
                )
            if tensor.device.type == "cpu":
                # Write through numpy: no temporary tensor, and read-only sources (arrays
                # decoded from bytes) need no defensive copy.
                tensor.detach().numpy()[...] = value
            else:
                tensor.copy_(torch.from_numpy(np.array(value)))
