"""A small calculator model trained federatedly on the strokes of `tests.apps.glyphs`.

The training images are framed by the calculator's own `to_model_input`, so the model
sees what it sees when it reads a drawing (a clean drawing's segment is its ink); four
clients train it with FedAvg in a few seconds. It is written as a run directory's
model.safetensors, as `federa run --dataset calculator` writes it.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

import federa
from federa.apps.calculator.preprocess import to_model_input
from federa.data.calculator import CALCULATOR_CLASSES
from federa.server.model_file import MODEL_FILE, save_model_file
from federa.torch.arrays import arrays_to_module, module_to_arrays
from federa.torch.client import TorchClient
from federa.torch.models import build_model
from federa.torch.train import TrainConfig
from tests.apps.glyphs import draw_strokes, jittered_strokes

MODEL = "mnist_2nn"
NUM_CLIENTS = 4
IN_SHAPE = (1, 28, 28)


def _glyph_inputs(
    per_class: int, seed: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Render jittered glyphs of every class and frame them as the reader does."""
    rng = np.random.default_rng(seed)
    size = 64
    images, labels = [], []
    for label, char in enumerate(CALCULATOR_CLASSES):
        for _ in range(per_class):
            canvas = np.zeros((2 * size, 2 * size), dtype=np.uint8)
            strokes = jittered_strokes(char, rng, height=size, origin=(size / 2, size / 2))
            draw_strokes(canvas, strokes, width=int(rng.integers(5, 11)))
            images.append(to_model_input(canvas.astype(np.float32) / 255.0))
            labels.append(label)
    return np.stack(images)[:, None], np.asarray(labels, dtype=np.int64)


def _client(
    cid: int, x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], config: TrainConfig
) -> TorchClient:
    shard = np.arange(cid, len(x), NUM_CLIENTS)
    return TorchClient(
        partial(build_model, MODEL, IN_SHAPE, len(CALCULATOR_CLASSES)),
        (x[shard], y[shard]),
        train_config=config,
    )


def train_glyph_run(run_dir: Path, *, per_class: int = 40, rounds: int = 4, seed: int = 0) -> float:
    """Train the glyph model into `run_dir`/model.safetensors; return its accuracy on new glyphs."""
    x, y = _glyph_inputs(per_class, seed)
    config = TrainConfig(epochs=2, batch_size=16, lr=2e-3, optimizer="adam")
    torch.manual_seed(seed)
    initial = module_to_arrays(build_model(MODEL, IN_SHAPE, len(CALCULATOR_CLASSES)))
    history = federa.simulate(
        partial(_client, x=x, y=y, config=config),
        federa.FedAvg(min_train_clients=NUM_CLIENTS),
        num_clients=NUM_CLIENTS,
        num_rounds=rounds,
        initial=initial,
        seed=seed,
    )
    assert history.arrays is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    metadata = {
        "model": MODEL,
        "dataset": "calculator",
        "in_shape": json.dumps(list(IN_SHAPE)),
        "class_names": json.dumps(list(CALCULATOR_CLASSES), ensure_ascii=False),
    }
    save_model_file(run_dir / MODEL_FILE, history.arrays, metadata)
    test_x, test_y = _glyph_inputs(10, seed + 1)
    module = build_model(MODEL, IN_SHAPE, len(CALCULATOR_CLASSES))
    arrays_to_module(module, history.arrays)
    with torch.inference_mode():
        predicted = module.eval()(torch.from_numpy(test_x)).argmax(dim=1).numpy()
    return float((predicted == test_y).mean())


_TRAINED: dict[str, Path] = {}


def glyph_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a run directory with the glyph model, trained once per test session."""
    if "run" not in _TRAINED:
        run_dir = tmp_path_factory.mktemp("glyph-run")
        accuracy = train_glyph_run(run_dir)
        assert accuracy >= 0.95, f"the glyph model reads only {accuracy:.0%} of fresh glyphs"
        _TRAINED["run"] = run_dir
    return _TRAINED["run"]
