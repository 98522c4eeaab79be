import pytest
import torch
from torch import nn

from federa.errors import ConfigError
from federa.torch.models import (
    MODELS,
    Cifar10CNN,
    FemnistCNN,
    Mnist2NN,
    MnistCNN,
    SimpleCNN,
    SymbolCNN,
    build_model,
)

# name, class, canonical in_shape, canonical num_classes
CANONICAL = [
    ("mnist_2nn", Mnist2NN, (1, 28, 28), 10),
    ("mnist_cnn", MnistCNN, (1, 28, 28), 10),
    ("femnist_cnn", FemnistCNN, (1, 28, 28), 62),
    ("simple_cnn", SimpleCNN, (1, 28, 28), 10),
    ("cifar10_cnn", Cifar10CNN, (3, 32, 32), 10),
    ("symbol_cnn", SymbolCNN, (1, 28, 28), 16),
]
NAMES = [name for name, *_ in CANONICAL]
CNN_NAMES = [name for name in NAMES if name != "mnist_2nn"]


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_mnist_2nn_has_199210_parameters() -> None:
    # 784*200+200 = 157,000; 200*200+200 = 40,200; 200*10+10 = 2,010.
    assert num_params(Mnist2NN()) == 199_210


def test_mnist_cnn_has_1663370_parameters() -> None:
    # conv 5*5*1*32+32 = 832; conv 5*5*32*64+64 = 51,264; 28 -> 14 -> 7, so
    # dense (7*7*64)*512+512 = 1,606,144; out 512*10+10 = 5,130.
    assert num_params(MnistCNN()) == 1_663_370


def test_femnist_cnn_has_6603710_parameters() -> None:
    # conv 832 and 51,264 as in MnistCNN; dense (7*7*64)*2048+2048 = 6,424,576;
    # out 2048*62+62 = 127,038.
    assert num_params(FemnistCNN()) == 6_603_710


def test_simple_cnn_has_1714570_parameters() -> None:
    # conv 3*3*1*64+64 = 640; conv 3*3*64*128+128 = 73,856; dense (7*7*128)*256+256
    # = 1,605,888; dense 256*128+128 = 32,896; out 128*10+10 = 1,290.
    assert num_params(SimpleCNN()) == 1_714_570


def test_simple_cnn_on_8x8_digits_has_240010_parameters() -> None:
    # As above but 8 -> 4 -> 2: dense (2*2*128)*256+256 = 131,328 instead of 1,605,888.
    assert num_params(SimpleCNN(in_shape=(1, 8, 8))) == 240_010


def test_cifar10_cnn_has_282250_parameters() -> None:
    # conv 3*3*3*32+32 = 896; conv 3*3*32*64+64 = 18,496; 32 -> 16 -> 8, so
    # dense (8*8*64)*64+64 = 262,208; out 64*10+10 = 650.
    assert num_params(Cifar10CNN()) == 282_250


def test_symbol_cnn_has_228976_parameters() -> None:
    # conv 3*3*1*32+32 = 320; conv 3*3*32*32+32 = 9,248; dense (7*7*32)*128+128
    # = 200,832; dense 128*128+128 = 16,512; out 128*16+16 = 2,064.
    assert num_params(SymbolCNN()) == 228_976


def test_registry_maps_every_cli_name_to_its_class() -> None:
    assert {name: cls for name, cls, *_ in CANONICAL} == MODELS


@pytest.mark.parametrize(("name", "cls", "in_shape", "num_classes"), CANONICAL)
def test_build_model_matches_the_class_defaults(
    name: str, cls: type[nn.Module], in_shape: tuple[int, ...], num_classes: int
) -> None:
    model = build_model(name, in_shape, num_classes)
    assert type(model) is cls
    assert num_params(model) == num_params(cls())


@pytest.mark.parametrize(("name", "cls", "in_shape", "num_classes"), CANONICAL)
def test_model_returns_one_float32_logit_row_per_example(
    name: str, cls: type[nn.Module], in_shape: tuple[int, ...], num_classes: int
) -> None:
    model = build_model(name, in_shape, num_classes)
    x = torch.randn((3, *in_shape), generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (3, num_classes)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_model_accepts_8x8_single_channel_input(name: str) -> None:
    model = build_model(name, (1, 8, 8), 10)
    assert model(torch.zeros(5, 1, 8, 8)).shape == (5, 10)


@pytest.mark.parametrize("name", CNN_NAMES)
@pytest.mark.parametrize("in_shape", [(1, 4, 4), (2, 9, 11), (1, 7, 30)])
def test_cnn_sizes_its_dense_layer_like_max_pool_rounds_down(
    name: str, in_shape: tuple[int, int, int]
) -> None:
    model = build_model(name, in_shape, 4)
    assert model(torch.zeros(2, *in_shape)).shape == (2, 4)


def test_mnist_2nn_accepts_flat_and_image_batches() -> None:
    model = Mnist2NN(in_shape=(64,), num_classes=10)
    flat = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(model(flat), model(flat.reshape(4, 1, 8, 8)))


def test_build_model_rejects_unknown_name_listing_the_choices() -> None:
    with pytest.raises(ConfigError, match="unknown model 'resnet'") as info:
        build_model("resnet", (1, 28, 28), 10)
    message = str(info.value)
    assert "\n" not in message
    for name in NAMES:
        assert name in message


@pytest.mark.parametrize("in_shape", [(1, 3, 3), (1, 3, 28), (3, 28, 2)])
def test_build_model_rejects_images_too_small_for_two_pools(in_shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match=r"SimpleCNN needs inputs of at least 4x4 pixels"):
        build_model("simple_cnn", in_shape, 10)


@pytest.mark.parametrize("name", CNN_NAMES)
def test_cnn_rejects_in_shape_without_channels(name: str) -> None:
    with pytest.raises(ConfigError, match=r"in_shape=\(channels, height, width\)"):
        build_model(name, (28, 28), 10)


def test_mnist_2nn_needs_no_minimum_size() -> None:
    assert build_model("mnist_2nn", (1, 2, 2), 3)(torch.zeros(1, 4)).shape == (1, 3)


@pytest.mark.parametrize("name", NAMES)
def test_build_model_rejects_zero_classes(name: str) -> None:
    with pytest.raises(ConfigError, match="num_classes >= 1"):
        build_model(name, (1, 28, 28), 0)
