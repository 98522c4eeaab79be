from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from federa.apps.calculator import (
    Reading,
    Recognizer,
    annotate,
    evaluate,
    load_image,
    load_recognizer,
    read_expression,
    write_png,
)
from federa.apps.calculator.synth import Pool, compose, random_expression
from federa.cli.config import RunConfig
from federa.cli.rundir import write_run_dir
from federa.data import CALCULATOR_CLASSES
from federa.errors import FederaError
from federa.server.history import History
from federa.server.model_file import load_model_file, save_model_file
from federa.torch.arrays import module_to_arrays
from federa.torch.models import build_model
from tests.apps.symbols import font_pool

cv2 = pytest.importorskip("cv2")


class Scripted(nn.Module):
    """A stand-in classifier that answers the given characters, in order."""

    def __init__(self, chars: str, confidence: float = 0.99) -> None:
        super().__init__()
        self.labels = [CALCULATOR_CLASSES.index(c) for c in chars]
        self.confidence = confidence

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (1, 28, 28)
        assert len(x) == len(self.labels)
        low = float(np.log((1 - self.confidence) / 15))
        logits = torch.full((len(x), 16), low)
        logits[torch.arange(len(x)), self.labels] = float(np.log(self.confidence))
        return logits


@pytest.fixture(scope="module")
def drawn() -> Pool:
    return font_pool(np.random.default_rng(0))


def test_read_expression_tells_decimal_points_from_multiplication_dots(drawn: Pool) -> None:
    expression = compose("2.5·4", drawn, np.random.default_rng(1))
    # The model only says "dot"; where the dot sits decides which one it is.
    reading = read_expression(expression.image, Recognizer(Scripted("2.5.4"), CALCULATOR_CLASSES))
    assert reading.text == "2.5·4"
    assert [s.label for s in reading.symbols] == list("2.5.4")
    assert reading.value == 10
    assert reading.value_text == "10"
    assert reading.error is None


def test_read_expression_reports_a_division_by_zero(drawn: Pool) -> None:
    expression = compose("7÷0", drawn, np.random.default_rng(2))
    reading = read_expression(expression.image, Recognizer(Scripted("7÷0"), CALCULATOR_CLASSES))
    assert reading.text == "7÷0"
    assert reading.value is None
    assert reading.error is not None and "division by zero" in reading.error


def test_read_expression_reports_malformed_input_and_a_blank_page(drawn: Pool) -> None:
    expression = compose("3+x", drawn, np.random.default_rng(3))
    reading = read_expression(expression.image, Recognizer(Scripted("3+x"), CALCULATOR_CLASSES))
    assert reading.error is not None and "expected a number" in reading.error
    blank = read_expression(np.full((50, 80), 255, np.uint8), Recognizer(Scripted(""), "0"))
    assert blank.symbols == () and blank.text == "" and blank.value is None
    assert blank.error is not None and "no handwriting found" in blank.error


def test_reading_to_dict_is_json_ready(drawn: Pool) -> None:
    expression = compose("1/8", drawn, np.random.default_rng(4))
    reading = read_expression(expression.image, Recognizer(Scripted("1/8"), CALCULATOR_CLASSES))
    data = json.loads(json.dumps(reading.to_dict()))
    assert data["text"] == "1/8" and data["value"] == "0.125" and data["error"] is None
    assert [s["char"] for s in data["symbols"]] == ["1", "/", "8"]
    assert data["symbols"][0]["box"] == list(reading.symbols[0].box)
    assert data["symbols"][0]["confidence"] == pytest.approx(0.99, abs=1e-3)


def test_annotate_draws_a_box_per_symbol_and_the_result(drawn: Pool) -> None:
    expression = compose("4x2", drawn, np.random.default_rng(5), noise=0.0)
    sure = read_expression(expression.image, Recognizer(Scripted("4x2"), CALCULATOR_CLASSES))
    unsure = read_expression(
        expression.image, Recognizer(Scripted("4x2", confidence=0.5), CALCULATOR_CLASSES)
    )
    height, width = expression.image.shape
    zoom = min(4, -(-160 // height))  # small images are enlarged for legible labels
    green, magenta = (0, 160, 0), (200, 0, 200)
    for reading, colour, other in ((sure, green, magenta), (unsure, magenta, green)):
        picture = annotate(expression.image, reading)
        assert picture.dtype == np.uint8 and picture.shape[1:] == (width * zoom, 3)
        assert picture.shape[0] > height * zoom  # label and result bands
        painted = (picture == colour).all(axis=2).sum()
        perimeter = sum(2 * (s.box.width + s.box.height) * zoom for s in reading.symbols)
        assert painted >= perimeter
        assert not (picture == other).all(axis=2).any()
    big = np.full((400, 600, 3), (250, 240, 200), dtype=np.uint8)
    nothing = Reading(symbols=(), text="", value=None, error="no handwriting found")
    framed = annotate(big, nothing)
    assert framed.shape[1] == 600 and tuple(framed[0, 0]) == (250, 240, 200)


def make_run_dir(folder: Path, seed: int = 0) -> nn.Module:
    """Write a calculator run directory holding an (untrained) symbol CNN; return it."""
    torch.manual_seed(seed)
    module = build_model("symbol_cnn", (1, 28, 28), 16)
    folder.mkdir()
    cfg = RunConfig(dataset="calculator", rounds=1)
    write_run_dir(folder, cfg, History(arrays=module_to_arrays(module)))
    return module


def test_a_run_directory_holds_a_safetensors_model_that_loads_to_the_same_classifier(
    tmp_path: Path,
) -> None:
    module = make_run_dir(tmp_path / "run")
    _, metadata = load_model_file(tmp_path / "run" / "model.safetensors")
    assert metadata["model"] == "symbol_cnn"
    assert json.loads(metadata["class_names"]) == list(CALCULATOR_CLASSES)
    assert json.loads(metadata["in_shape"]) == [1, 28, 28]
    assert "median ink pixel" in metadata["framing"] or "median pixel" in metadata["framing"]
    recognizer = load_recognizer(tmp_path / "run")
    assert recognizer.class_names == CALCULATOR_CLASSES
    images = np.random.default_rng(0).random((5, 28, 28)).astype(np.float32)
    with torch.no_grad():
        expected = torch.softmax(module.eval()(torch.from_numpy(images[:, None])), dim=1).numpy()
    np.testing.assert_allclose(recognizer.probabilities(images), expected, rtol=1e-5, atol=1e-6)


def test_load_recognizer_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FederaError, match="does not exist"):
        load_recognizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FederaError, match=r"has no model.safetensors; train a model"):
        load_recognizer(tmp_path / "empty")
    arrays = module_to_arrays(build_model("simple_cnn", (1, 8, 8), 10))
    digits = tmp_path / "digits.safetensors"
    save_model_file(
        digits,
        arrays,
        {
            "model": "simple_cnn",
            "in_shape": "[1, 8, 8]",
            "class_names": json.dumps(list("0123456789")),
        },
    )
    with pytest.raises(FederaError, match="the calculator reads 28x28"):
        load_recognizer(digits)
    letters = tmp_path / "letters.safetensors"
    save_model_file(
        letters,
        module_to_arrays(build_model("symbol_cnn", (1, 28, 28), 2)),
        {"model": "symbol_cnn", "in_shape": "[1, 28, 28]", "class_names": '["a", "b"]'},
    )
    with pytest.raises(FederaError, match="not calculator symbols"):
        load_recognizer(letters)
    bare = tmp_path / "bare.safetensors"
    save_model_file(bare, arrays, {"model": "simple_cnn"})
    with pytest.raises(FederaError, match="does not record its in_shape"):
        load_recognizer(bare)


def test_load_image_reads_rgb_and_refuses_what_is_not_an_image(tmp_path: Path) -> None:
    bgr = np.zeros((4, 6, 3), dtype=np.uint8)
    bgr[:, :, 0] = 255  # blue in OpenCV's order
    cv2.imwrite(str(tmp_path / "blue.png"), bgr)
    rgb = load_image(tmp_path / "blue.png")
    assert rgb.shape == (4, 6, 3) and tuple(rgb[0, 0]) == (0, 0, 255)
    write_png(tmp_path / "again.png", rgb)
    np.testing.assert_array_equal(load_image(tmp_path / "again.png"), rgb)
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(FederaError, match="is not an image"):
        load_image(tmp_path / "notes.txt")
    with pytest.raises(FederaError, match="does not exist"):
        load_image(tmp_path / "missing.png")


def test_evaluate_agrees_with_what_read_expression_computes(drawn: Pool) -> None:
    rng = np.random.default_rng(6)
    for _ in range(5):
        text = random_expression(rng, operators="+-x÷")
        expression = compose(text, drawn, rng)
        reading = read_expression(expression.image, Recognizer(Scripted(text), CALCULATOR_CLASSES))
        assert reading.text == text
        assert reading.value == evaluate(text)
        assert isinstance(reading.value, Fraction)


class Fixed(nn.Module):
    """A stand-in classifier that answers fixed class probabilities, one row per symbol."""

    def __init__(self, rows: list[dict[str, float]]) -> None:
        super().__init__()
        probs = torch.full((len(rows), 16), 1e-4)
        for i, row in enumerate(rows):
            for char, p in row.items():
                probs[i, CALCULATOR_CLASSES.index(char)] = p
        self.logits = torch.log(probs / probs.sum(dim=1, keepdim=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def test_a_reading_that_does_not_parse_takes_the_likeliest_one_that_does(drawn: Pool) -> None:
    expression = compose("17+1", drawn, np.random.default_rng(8))
    confused = Fixed([{"/": 0.6, "1": 0.4}, {"7": 0.99}, {"+": 0.99}, {"1": 0.7, "/": 0.3}])
    reading = read_expression(expression.image, Recognizer(confused, CALCULATOR_CLASSES))
    assert reading.text == "17+1" and reading.value == 18
    confidences = [s.confidence for s in reading.symbols]
    assert confidences == pytest.approx([0.4, 0.99, 0.99, 0.7], abs=0.01)
    # A well-formed first choice is kept, however unsure.
    unsure = Fixed([{"1": 0.4, "7": 0.35}, {"7": 0.99}, {"+": 0.99}, {"1": 0.7, "/": 0.3}])
    assert read_expression(expression.image, Recognizer(unsure, CALCULATOR_CLASSES)).text == "17+1"
    # An alternative far less likely than the first choice is not taken.
    sure = Fixed([{"/": 0.9999}, {"7": 0.99}, {"+": 0.99}, {"1": 0.99}])
    reading = read_expression(expression.image, Recognizer(sure, CALCULATOR_CLASSES))
    assert reading.text == "/7+1" and reading.error is not None


def test_recognizer_moves_the_training_prior_to_the_calculator_prior(tmp_path: Path) -> None:
    from federa.apps.calculator.recognizer import calculator_prior
    from federa.data import Dataset, DatasetSplit

    prior = calculator_prior(CALCULATOR_CLASSES)
    assert prior.sum() == pytest.approx(1.0)
    assert prior[:10].sum() == pytest.approx(0.75) and prior[10:].sum() == pytest.approx(0.25)
    # Trained on 8 times more "1" than "/", the model leans to "1"; the calculator does not.
    counts = [800] * 16
    counts[1] = 6400
    leaning = Fixed([{"1": 0.6, "/": 0.4}])
    images = np.zeros((1, 28, 28), dtype=np.float32)
    assert Recognizer(leaning, CALCULATOR_CLASSES).classify(images)[0] == ["1"]
    corrected = Recognizer(leaning, CALCULATOR_CLASSES, class_counts=counts)
    assert corrected.classify(images)[0] == ["/"]
    assert corrected.probabilities(images).sum() == pytest.approx(1.0)
    with pytest.raises(FederaError, match="positive count for each of the 16 classes"):
        Recognizer(leaning, CALCULATOR_CLASSES, class_counts=[1, 2])
    # federa run records the counts beside the model, and load_recognizer uses them.
    labels = np.repeat(np.arange(16), counts).astype(np.int64)
    data = Dataset(
        x=np.zeros((len(labels), 1, 28, 28), dtype=np.float32),
        y=labels,
        num_classes=16,
        name="calculator-train",
        class_names=CALCULATOR_CLASSES,
    )
    module = build_model("symbol_cnn", (1, 28, 28), 16)
    (tmp_path / "run").mkdir()
    write_run_dir(
        tmp_path / "run",
        RunConfig(dataset="calculator"),
        History(arrays=module_to_arrays(module)),
        split=DatasetSplit(train=data, test=data),
    )
    _, metadata = load_model_file(tmp_path / "run" / "model.safetensors")
    assert json.loads(metadata["class_counts"]) == counts
    loaded = load_recognizer(tmp_path / "run")
    assert loaded.weights is not None
    np.testing.assert_allclose(loaded.weights, corrected.weights)
