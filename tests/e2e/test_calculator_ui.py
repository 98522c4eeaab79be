"""End to end: the calculator page in headless Chromium, read by a real trained model.

The test serves the page with `CalculatorServer` on 127.0.0.1 (an ephemeral port) and a
model trained federatedly on the pen strokes of `tests.apps.glyphs`, then drives
Debian's Chromium (/usr/bin/chromium, installed by .ci/run) through Playwright: it
writes an expression with mouse strokes on the drawing pad, presses Read and checks the
expression, the value, one row and box per symbol; it uploads a photo-like image and a
file that is not an image. Playwright's own browser download is not used. The server
and the browser are always closed.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federa.apps.calculator.upload import encode_png
from federa.apps.calculator.web import CalculatorServer, reader_from_run
from tests.apps.glyph_model import glyph_run
from tests.apps.glyphs import layout, render_expression, text_width

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(
        f"Chromium is not installed at {CHROMIUM}; .ci/run installs Debian's chromium",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed; pip install -e '.[dev]'"
)

PAD_WIDTH, PAD_HEIGHT = 960, 320  # the drawing pad's own pixels (index.html)
GLYPH_HEIGHT = 180  # pad pixels; longer expressions are written smaller to fit
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CalculatorServer]:
    with CalculatorServer(reader_from_run(glyph_run(tmp_path_factory)), port=0) as running:
        running.start()
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, server: CalculatorServer) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    try:
        opened = context.new_page()
        opened.set_default_timeout(TIMEOUT_MS)
        errors: list[str] = []
        opened.on("pageerror", lambda exc: errors.append(str(exc)))
        opened.goto(server.url)
        opened.wait_for_selector("body[data-state=idle]")
        yield opened
        assert errors == [], f"the page's script failed: {errors}"
    finally:
        context.close()


def draw(page: Any, text: str) -> None:
    """Write `text` on the pad with the mouse, stroke by stroke, as a person would."""
    pad = page.locator("#pad").bounding_box()
    sx, sy = pad["width"] / PAD_WIDTH, pad["height"] / PAD_HEIGHT
    height = min(GLYPH_HEIGHT, 0.9 * PAD_WIDTH / text_width(text, height=1.0))
    left = (PAD_WIDTH - text_width(text, height=height)) / 2
    top = (PAD_HEIGHT - height) / 2
    for stroke in layout(text, height=height, origin=(left, top)):
        points = [(pad["x"] + x * sx, pad["y"] + y * sy) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=2)
        page.mouse.up()


def read_result(page: Any) -> dict[str, Any]:
    page.wait_for_selector("body[data-state=done]")
    image = page.locator("#annotated")
    return {
        "expression": page.locator("#expression").text_content(),
        "value": page.locator("#value").text_content(),
        "error": page.locator("#error").text_content(),
        "symbols": page.locator("#symbols tbody td.symbol").all_text_contents(),
        "confidences": page.locator("#symbols tbody tr td:nth-child(3)").all_text_contents(),
        "image_src": image.get_attribute("src"),
        "image_size": image.evaluate("img => [img.naturalWidth, img.naturalHeight]"),
    }


def test_a_mouse_drawn_expression_is_read_boxed_and_computed(page: Any) -> None:
    draw(page, "3+5")
    page.click("#read")
    result = read_result(page)
    assert result["expression"] == "3+5"
    assert result["value"] == "= 8"
    assert result["error"] == ""
    assert result["symbols"] == ["3", "+", "5"]
    assert all(c.endswith(" %") and float(c[:-2]) > 50 for c in result["confidences"])
    assert result["image_src"].startswith("data:image/png;base64,")
    width, height = result["image_size"]
    assert width == PAD_WIDTH
    assert height > PAD_HEIGHT  # the annotation adds a band with the result below
    assert page.locator("#status").text_content() == "3 symbols read"

    page.click("#clear")
    assert page.locator("#result").is_hidden()
    draw(page, "9÷3-12")
    page.click("#read")
    result = read_result(page)
    assert (result["expression"], result["value"]) == ("9÷3-12", "= -9")
    assert len(result["symbols"]) == 6


def test_an_unparsable_drawing_shows_the_error_line(page: Any) -> None:
    draw(page, "7x")
    page.click("#read")
    result = read_result(page)
    assert result["expression"] == "7x"
    assert result["value"] == ""
    assert "malformed expression" in result["error"]
    assert page.locator("#error").is_visible()


def test_an_uploaded_photo_is_read(page: Any, tmp_path: Path) -> None:
    ink = render_expression("64/8", height=90, stroke_width=9)
    photo = np.stack([255 - ink * 0.8] * 3, axis=2).astype(np.uint8)  # dark ink on paper
    path = tmp_path / "photo.png"
    path.write_bytes(encode_png(photo))
    page.set_input_files("#upload", str(path))
    result = read_result(page)
    assert (result["expression"], result["value"]) == ("64/8", "= 8")
    png = base64.b64decode(result["image_src"].split(",", 1)[1])
    assert png.startswith(b"\x89PNG")
    assert result["image_size"][0] == photo.shape[1]


def test_a_file_that_is_not_an_image_shows_the_servers_error(page: Any, tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_bytes(b"these are notes, not a picture")
    page.set_input_files("#upload", str(path))
    page.wait_for_selector("body[data-state=failed]")
    status = page.locator("#status")
    assert status.text_content() == (
        "Error: the request says image/png but the bytes are not a PNG"
    )
    assert page.locator("#result").is_hidden()
