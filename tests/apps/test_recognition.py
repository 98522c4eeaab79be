"""Reading expressions drawn from held-out handwriting with a model trained in the test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from federa.apps.calculator import Recognizer, read_expression
from federa.apps.calculator.synth import compose, random_expression, symbol_pool
from federa.data import DatasetSplit
from federa.data.framing import frame_many, stretch_ink
from federa.torch.models import build_model
from federa.torch.train import TrainConfig, train
from tests.apps.conftest import needs_real_data

pytestmark = [needs_real_data, pytest.mark.slow]

PER_CLASS = 200


@pytest.fixture(scope="module")
def recognizer(real_symbols: DatasetSplit) -> Recognizer:
    """Train the symbol CNN for a few seconds on 200 training images per class."""
    train_set = real_symbols.train
    rng = np.random.default_rng(0)
    keep = np.concatenate(
        [
            rng.choice(np.flatnonzero(train_set.y == label), PER_CLASS, replace=False)
            for label in range(train_set.num_classes)
        ]
    )
    x, y = train_set.x[keep], train_set.y[keep]
    # The calculator format, as load_calculator(mnist_framing=True) gives it.
    x = np.where((y >= 10)[:, None, None, None], frame_many(x), stretch_ink(x))
    torch.manual_seed(0)
    module = build_model("symbol_cnn", (1, 28, 28), train_set.num_classes)
    config = TrainConfig(epochs=5, batch_size=32, lr=0.002, optimizer="adam")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same result on every machine; fast on a busy one
    try:
        train(module, torch.from_numpy(x), torch.from_numpy(y), config, seed=0)
    finally:
        torch.set_num_threads(threads)
    return Recognizer(module, train_set.class_names)


def test_most_held_out_expressions_are_read_exactly(
    recognizer: Recognizer, real_symbols: DatasetSplit
) -> None:
    test = real_symbols.test
    pool = symbol_pool(test.x, test.y, test.class_names, one_piece=True)
    rng = np.random.default_rng(1)
    exact, symbols, right = 0, 0, 0
    for _ in range(20):
        text = random_expression(rng, max_numbers=3)
        reading = read_expression(compose(text, pool, rng).image, recognizer)
        assert len(reading.symbols) == len(text), (text, reading.text)  # segmentation exact
        exact += reading.text == text
        symbols += len(text)
        right += sum(a == b for a, b in zip(reading.text, text, strict=True))
        if reading.text == text:
            assert reading.error is not None or reading.value is not None
    assert right / symbols >= 0.9, f"{right}/{symbols} symbols read right"
    assert exact >= 11, f"only {exact} of 20 expressions read exactly"
