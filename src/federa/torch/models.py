"""Reference PyTorch models from the federated-learning literature, and a registry by name.

Every model takes `in_shape` (the shape of one example, channels first) and `num_classes`,
works out the size of its first dense layer from `in_shape`, and returns logits. The CNNs
keep the spatial size through each convolution ("same" padding) and halve it, rounding
down as `nn.MaxPool2d` does, at each of their two 2x2 max-pools.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from federa.errors import ConfigError

__all__ = [
    "MODELS",
    "Cifar10CNN",
    "FemnistCNN",
    "Mnist2NN",
    "MnistCNN",
    "SimpleCNN",
    "SymbolCNN",
    "build_model",
]

_NUM_POOLS = 2
_MIN_SIDE = 2**_NUM_POOLS  # two 2x2 pools need at least 4 pixels a side to leave one


def _check_num_classes(model: str, num_classes: int) -> None:
    if num_classes < 1:
        raise ConfigError(f"{model} needs num_classes >= 1, got {num_classes}")


def _check_image_shape(model: str, in_shape: Sequence[int]) -> tuple[int, int, int]:
    """Return `in_shape` as (channels, height, width) after checking two pools fit."""
    shape = tuple(in_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(
            f"{model} needs in_shape=(channels, height, width) with positive sizes, got {shape}"
        )
    channels, height, width = shape
    if height < _MIN_SIDE or width < _MIN_SIDE:
        raise ConfigError(
            f"{model} needs inputs of at least {_MIN_SIDE}x{_MIN_SIDE} pixels for its "
            f"two 2x2 max-pools, got {height}x{width}; use larger images or a "
            "model without pooling (mnist_2nn)"
        )
    return channels, height, width


def _pooled_side(side: int) -> int:
    """Return the size of one side after the two 2x2 pools (MaxPool2d rounds down)."""
    for _ in range(_NUM_POOLS):
        side //= 2
    return side


def _conv_block(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    """Return conv ("same" padding, odd kernel) -> ReLU -> 2x2 max-pool."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]


class _TwoPoolCNN(nn.Module):
    """Two convolution blocks, then a dense classifier over the flattened features.

    Args:
        model: Class name, for error messages.
        in_shape: (channels, height, width) of one example.
        num_classes: Number of output logits.
        channels: Output channels of the two convolutions.
        kernel_size: Side of the (square, odd) convolution kernels.
        hidden: Widths of the hidden dense layers, each followed by ReLU.
        dropout: Dropout probability after each hidden dense layer (0 for none).

    Raises:
        ConfigError: if `in_shape` is not (channels, height, width) or is smaller than
            4x4, or `num_classes` < 1.
    """

    def __init__(
        self,
        model: str,
        in_shape: Sequence[int],
        num_classes: int,
        *,
        channels: tuple[int, int],
        kernel_size: int,
        hidden: tuple[int, ...],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        in_channels, height, width = _check_image_shape(model, in_shape)
        _check_num_classes(model, num_classes)
        self.features = nn.Sequential(
            *_conv_block(in_channels, channels[0], kernel_size),
            *_conv_block(channels[0], channels[1], kernel_size),
        )
        layers: list[nn.Module] = []
        width_in = channels[1] * _pooled_side(height) * _pooled_side(width)
        for width_out in hidden:
            layers += [nn.Linear(width_in, width_out), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width_out
        layers.append(nn.Linear(width_in, num_classes))
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits for a batch of images shaped (N, C, H, W)."""
        logits: torch.Tensor = self.classifier(torch.flatten(self.features(x), 1))
        return logits


class Mnist2NN(nn.Module):
    """The "2NN" multilayer perceptron: two hidden layers of 200 ReLU units.

    From McMahan et al., "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", AISTATS 2017 (arXiv:1602.05629), section 3. 199,210 parameters
    for 28x28 inputs and 10 classes.

    Args:
        in_shape: Shape of one example; inputs are flattened, so (N, C, H, W) and
            (N, features) batches both work as long as they hold prod(in_shape) values.
        num_classes: Number of output logits.

    Raises:
        ConfigError: if `in_shape` is empty or has a size below 1, or `num_classes` < 1.
    """

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> None:
        super().__init__()
        shape = tuple(in_shape)
        if not shape or min(shape) < 1:
            raise ConfigError(f"Mnist2NN needs an in_shape of positive sizes, got {shape}")
        _check_num_classes("Mnist2NN", num_classes)
        self.layers = nn.Sequential(
            nn.Linear(math.prod(shape), 200),
            nn.ReLU(),
            nn.Linear(200, 200),
            nn.ReLU(),
            nn.Linear(200, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits for a batch shaped (N, ...), flattened after the first axis."""
        logits: torch.Tensor = self.layers(torch.flatten(x, 1))
        return logits


class MnistCNN(_TwoPoolCNN):
    """The MNIST CNN: two 5x5 convolutions (32, 64 channels) and a 512-unit dense layer.

    From McMahan et al., "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", AISTATS 2017 (arXiv:1602.05629), section 3. 1,663,370
    parameters for 28x28 inputs and 10 classes.

    Args:
        in_shape: (channels, height, width) of one example, at least 4x4.
        num_classes: Number of output logits.

    Raises:
        ConfigError: if `in_shape` is not (channels, height, width) of at least 4x4, or
            `num_classes` < 1.
    """

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> None:
        super().__init__(
            "MnistCNN", in_shape, num_classes, channels=(32, 64), kernel_size=5, hidden=(512,)
        )


class FemnistCNN(_TwoPoolCNN):
    """The LEAF FEMNIST CNN: two 5x5 convolutions (32, 64 channels) and 2048 dense units.

    From Caldas et al., "LEAF: A Benchmark for Federated Settings", arXiv:1812.01097,
    as implemented in LEAF's models/femnist/cnn.py. 6,603,710 parameters for 28x28
    inputs and 62 classes.

    Args:
        in_shape: (channels, height, width) of one example, at least 4x4.
        num_classes: Number of output logits (62 for FEMNIST: digits and both cases).

    Raises:
        ConfigError: if `in_shape` is not (channels, height, width) of at least 4x4, or
            `num_classes` < 1.
    """

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 62) -> None:
        super().__init__(
            "FemnistCNN", in_shape, num_classes, channels=(32, 64), kernel_size=5, hidden=(2048,)
        )


class SimpleCNN(_TwoPoolCNN):
    """A small CNN: two 3x3 convolutions (64, 128 channels), dense 256 and 128, dropout 0.1.

    Source: federa's own default for scikit-learn's 8x8 digits (not from a paper).
    1,714,570 parameters for 28x28 inputs and 10 classes; 240,010 for 8x8 digits.

    Args:
        in_shape: (channels, height, width) of one example, at least 4x4.
        num_classes: Number of output logits.

    Raises:
        ConfigError: if `in_shape` is not (channels, height, width) of at least 4x4, or
            `num_classes` < 1.
    """

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> None:
        super().__init__(
            "SimpleCNN",
            in_shape,
            num_classes,
            channels=(64, 128),
            kernel_size=3,
            hidden=(256, 128),
            dropout=0.1,
        )


class Cifar10CNN(_TwoPoolCNN):
    """A CIFAR-10 CNN: two 3x3 convolutions (32, 64 channels) and a 64-unit dense layer.

    Adapted from the TensorFlow CNN tutorial (https://www.tensorflow.org/tutorials/images/cnn)
    with its third convolution dropped and "same" padding. 282,250 parameters for
    3x32x32 inputs and 10 classes.

    Args:
        in_shape: (channels, height, width) of one example, at least 4x4.
        num_classes: Number of output logits.

    Raises:
        ConfigError: if `in_shape` is not (channels, height, width) of at least 4x4, or
            `num_classes` < 1.
    """

    def __init__(self, in_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10) -> None:
        super().__init__(
            "Cifar10CNN", in_shape, num_classes, channels=(32, 64), kernel_size=3, hidden=(64,)
        )


class SymbolCNN(_TwoPoolCNN):
    """A handwritten-symbol CNN: two 3x3 convolutions (32 channels), two dense 128 layers.

    Source: federa's own model for the handwriting calculator's digits and operators
    (not from a paper); dropout 0.25 after each dense layer. 228,976 parameters for
    28x28 inputs and 16 classes.

    Args:
        in_shape: (channels, height, width) of one example, at least 4x4.
        num_classes: Number of output logits.

    Raises:
        ConfigError: if `in_shape` is not (channels, height, width) of at least 4x4, or
            `num_classes` < 1.
    """

    def __init__(self, in_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 16) -> None:
        super().__init__(
            "SymbolCNN",
            in_shape,
            num_classes,
            channels=(32, 32),
            kernel_size=3,
            hidden=(128, 128),
            dropout=0.25,
        )


MODELS: dict[str, Callable[..., nn.Module]] = {
    "cifar10_cnn": Cifar10CNN,
    "femnist_cnn": FemnistCNN,
    "mnist_2nn": Mnist2NN,
    "mnist_cnn": MnistCNN,
    "simple_cnn": SimpleCNN,
    "symbol_cnn": SymbolCNN,
}


def build_model(name: str, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build the model registered as `name` for examples of `in_shape` and `num_classes`.

    Args:
        name: A key of `MODELS`, as the CLI's --model flag spells it.
        in_shape: Shape of one example, channels first.
        num_classes: Number of output logits.

    Returns:
        A freshly initialised model (seed torch's global RNG first for reproducibility).

    Raises:
        ConfigError: if `name` is not registered, or the model cannot take `in_shape`.
    """
    model_cls = MODELS.get(name)
    if model_cls is None:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}")
    return model_cls(in_shape=tuple(in_shape), num_classes=num_classes)
