"""On-the-fly augmentation of handwritten-symbol batches for local training.

A symbol read from a photo of a whole expression reaches the model after a resize
round trip: it was written at some size, cropped, and scaled back into the 28x28
training format (`federa.data.framing.calculator_format`). That changes its stroke
width and texture, and a model that tells MNIST digits from the other symbols by
texture rather than shape then mistakes a scaled "1" for "/". `augment_images` draws
each training image through such a round trip and a small random affine map (Simard
et al. 2003, "Best Practices for Convolutional Neural Networks Applied to Visual
Document Analysis": elastic and affine distortions of MNIST), so the local model sees
the variations the reading pipeline produces. Every draw comes from the generator it
is given, so a client's training stays a function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

__all__ = ["Augmentation", "augment_generator", "augment_images"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Augmentation:
    """Ranges of the random distortions; each image draws its own.

    Attributes:
        rotation_deg: Largest rotation either way, in degrees.
        scale: (low, high) of the isotropic scale factor.
        shift_px: Largest translation along each axis, in pixels of a 28x28 image.
        round_trip: Probability that an image is resized and resized back.
        round_trip_sizes: Intermediate sizes (pixels) of the round trip, drawn uniformly:
            below 28 blurs and thickens the strokes, above 28 resamples them.
        contrast: (low, high) of a gain applied before clipping to [0, 1]: above 1
            saturates soft edges (a re-threshold that thickens strokes), below 1 thins them.
    """

    rotation_deg: float = 0.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift_px: float = 2.0
    round_trip: float = 0.5
    round_trip_sizes: tuple[int, ...] = (12, 16, 20, 42, 56, 70)
    contrast: tuple[float, float] = (0.9, 1.8)


DEFAULT_AUGMENTATION = Augmentation()
_SEED_OFFSET = 0x5EED_A06


def augment_generator(seed: int) -> torch.Generator:
    """Return the generator of a training run's distortions: its own stream from `seed`.

    Separate from the minibatch stream, so switching augmentation on leaves the order
    of the minibatches as it was.
    """
    return torch.Generator().manual_seed(seed + _SEED_OFFSET)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _affine(x: torch.Tensor, aug: Augmentation, gen: torch.Generator) -> torch.Tensor:
    """Rotate, scale and shift every image of `x` by its own random amounts."""
    n, _, h, w = x.shape
    angle = _uniform(n, -aug.rotation_deg, aug.rotation_deg, gen) * (math.pi / 180.0)
    scale = _uniform(n, *aug.scale, gen)
    shift = _uniform(2 * n, -aug.shift_px, aug.shift_px, gen).reshape(n, 2)
    # affine_grid maps output to input coordinates in [-1, 1]: invert the scale there.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, -shift[:, 0] * 2.0 / w], dim=1),
            torch.stack([sin, cos, -shift[:, 1] * 2.0 / h], dim=1),
        ],
        dim=1,
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _round_trip(x: torch.Tensor, aug: Augmentation, gen: torch.Generator) -> torch.Tensor:
    """Resize a random share of `x` to a random size and back to its own size."""
    n, _, h, w = x.shape
    chosen = torch.rand(n, generator=gen) < aug.round_trip
    sizes = torch.randint(len(aug.round_trip_sizes), (n,), generator=gen)
    out = x.clone()
    for k, size in enumerate(aug.round_trip_sizes):
        rows = torch.nonzero(chosen & (sizes == k)).flatten()
        if len(rows) == 0:
            continue
        resized = F.interpolate(x[rows], size=(size, size), mode="bilinear", antialias=True)
        out[rows] = F.interpolate(resized, size=(h, w), mode="bilinear", antialias=True)
    return out


def augment_images(
    x: torch.Tensor, gen: torch.Generator, aug: Augmentation = DEFAULT_AUGMENTATION
) -> torch.Tensor:
    """Return randomly distorted copies of a batch of bright-on-black images in [0, 1].

    Args:
        x: Images, shape (N, C, H, W).
        gen: Source of every random draw (a CPU generator).
        aug: The ranges of the distortions.

    Returns:
        A new tensor of the shape and dtype of `x`, values in [0, 1].
    """
    if x.ndim != 4 or len(x) == 0:
        return x
    with torch.no_grad():
        out = _round_trip(_affine(x, aug, gen), aug, gen)
        gain = _uniform(len(x), *aug.contrast, gen).to(x.dtype).reshape(-1, 1, 1, 1)
        return (out * gain).clamp_(0.0, 1.0)
