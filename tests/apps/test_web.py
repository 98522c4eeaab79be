"""The calculator page's HTTP server: static files, /api/read's answers and its refusals.

Most tests serve a `ShapeReader`, which reports what the server handed it, so they check
the server's decoding and JSON without a model; `test_read_with_a_trained_model_*` reads a
rendered expression with a real model trained by the `calculator_run` fixture.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from federa.apps.calculator.upload import MAX_PIXELS, ImageError, decode_image, encode_png
from federa.apps.calculator.web import (
    MAX_BODY_BYTES,
    CalculatorServer,
    PageReading,
    PageSymbol,
)

cv2 = pytest.importorskip("cv2")


class ShapeReader:
    """Answer with the image's size as `text` and its mean colour as the one symbol's box."""

    def __init__(self) -> None:
        self.images: list[npt.NDArray[np.uint8]] = []

    def __call__(self, image: npt.NDArray[np.uint8]) -> PageReading:
        self.images.append(image)
        height, width = image.shape[:2]
        if width == 13:
            raise RuntimeError("this reader breaks on 13-pixel-wide images")
        red, green, blue = (round(float(c)) for c in image.reshape(-1, 3).mean(axis=0))
        return PageReading(
            text=f"{height}x{width}",
            symbols=(PageSymbol(char="7", confidence=0.75, box=(red, green, blue, 1)),),
            value=None if width == 7 else str(height * width),
            error="seven is odd" if width == 7 else None,
            annotated=np.full((height, width, 3), (255, 0, 0), dtype=np.uint8),
        )


@pytest.fixture
def reader() -> ShapeReader:
    return ShapeReader()


@pytest.fixture
def server(reader: ShapeReader) -> Iterator[CalculatorServer]:
    with CalculatorServer(reader, port=0) as running:
        running.start()
        yield running


def request(
    server: CalculatorServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def post_image(
    server: CalculatorServer, body: bytes, content_type: str = "image/png"
) -> tuple[int, dict[str, Any]]:
    status, headers, data = request(
        server, "POST", "/api/read", body, {"Content-Type": content_type}
    )
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    answer: dict[str, Any] = json.loads(data)
    return status, answer


def png_of(image: npt.NDArray[np.uint8]) -> bytes:
    return encode_png(image)


def test_page_script_and_styles_are_served_with_safe_headers(server: CalculatorServer) -> None:
    status, headers, body = request(server, "GET", "/")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<canvas id="pad"' in body
    assert b'<input id="upload" type="file"' in body
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    status, headers, body = request(server, "GET", "/app.js")
    assert (status, headers["Content-Type"]) == (200, "text/javascript; charset=utf-8")
    assert b'fetch("/api/read"' in body
    status, headers, _ = request(server, "GET", "/style.css?v=1")
    assert (status, headers["Content-Type"]) == (200, "text/css; charset=utf-8")


def test_unknown_paths_and_wrong_methods_get_json_errors(server: CalculatorServer) -> None:
    status, _, body = request(server, "GET", "/../../etc/passwd")
    assert status == 404
    assert "no page at" in json.loads(body)["error"]
    status, _, body = request(server, "GET", "/api/read")
    assert (status, json.loads(body)) == (405, {"error": "use POST to send an image to /api/read"})
    status, _, body = request(server, "POST", "/api/other", b"x", {"Content-Type": "image/png"})
    assert status == 404


def test_read_answers_the_readers_result_as_json(
    server: CalculatorServer, reader: ShapeReader
) -> None:
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    image[:, :, 1] = 200  # green, to check the channel order survives PNG and decoding
    status, answer = post_image(server, png_of(image))
    assert status == 200
    assert answer["text"] == "20x30"
    assert answer["value"] == "600"
    assert answer["error"] is None
    assert answer["symbols"] == [{"char": "7", "confidence": 0.75, "box": [0, 200, 0, 1]}]
    np.testing.assert_array_equal(reader.images[0], image)
    prefix = "data:image/png;base64,"
    assert answer["annotated"].startswith(prefix)
    png = base64.b64decode(answer["annotated"][len(prefix) :])
    annotated = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert annotated.shape == (20, 30, 3)
    np.testing.assert_array_equal(annotated[0, 0], [0, 0, 255])  # red, in OpenCV's BGR


def test_read_reports_a_reading_error_with_status_200(server: CalculatorServer) -> None:
    status, answer = post_image(server, png_of(np.zeros((5, 7), dtype=np.uint8)))
    assert (status, answer["value"], answer["error"]) == (200, None, "seven is odd")


def test_jpeg_uploads_are_read(server: CalculatorServer) -> None:
    ok, jpeg = cv2.imencode(".jpg", np.full((40, 60, 3), 128, dtype=np.uint8))
    assert ok
    status, answer = post_image(server, jpeg.tobytes(), "image/jpeg")
    assert (status, answer["text"]) == (200, "40x60")


def test_bytes_that_are_not_an_image_get_400_with_a_message(server: CalculatorServer) -> None:
    status, answer = post_image(server, b"hello, this is not a picture")
    assert status == 400
    assert answer == {"error": "the request says image/png but the bytes are not a PNG"}
    damaged = png_of(np.zeros((8, 8), dtype=np.uint8))[:40]
    status, answer = post_image(server, damaged)
    assert status == 400
    assert "could not be decoded" in answer["error"]
    status, answer = post_image(server, b"\xff\xd8\xff\xd9", "image/jpeg")
    assert status == 400
    assert answer["error"] == "the JPEG is damaged (no frame header); save it again"


def test_other_content_types_get_415(server: CalculatorServer) -> None:
    status, answer = post_image(server, b"GIF89a", "image/gif")
    assert status == 415
    assert answer["error"].endswith("not image/gif")
    status, answer = post_image(server, b"{}", "")
    assert (status, answer["error"].endswith("not no Content-Type")) == (415, True)


def test_empty_and_oversized_bodies_are_refused(server: CalculatorServer) -> None:
    status, answer = post_image(server, b"")
    assert status == 400
    assert "no image" in answer["error"]
    # Claim a body over the limit but send none: the server answers without reading it.
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    try:
        conn.putrequest("POST", "/api/read")
        conn.putheader("Content-Type", "image/png")
        conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert "send at most 8 MiB" in json.loads(response.read())["error"]
    finally:
        conn.close()


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding(
    server: CalculatorServer, reader: ShapeReader
) -> None:
    png = bytearray(png_of(np.zeros((4, 4), dtype=np.uint8)))
    png[16:24] = struct.pack(">II", 20_000, 20_000)  # a "decompression bomb" header
    status, answer = post_image(server, bytes(png))
    assert status == 413
    assert "20000x20000 pixels" in answer["error"]
    assert reader.images == []
    assert MAX_PIXELS < 20_000 * 20_000


def test_a_failing_reader_gives_500_and_the_server_keeps_serving(
    server: CalculatorServer,
) -> None:
    with pytest.raises(RuntimeError):  # the reader really breaks on this width
        ShapeReader()(np.zeros((3, 13, 3), dtype=np.uint8))
    status, answer = post_image(server, png_of(np.zeros((3, 13), dtype=np.uint8)))
    assert status == 500
    assert answer == {"error": "the recognizer failed on this image; see the log"}
    status, _ = post_image(server, png_of(np.zeros((3, 4), dtype=np.uint8)))
    assert status == 200


def test_close_stops_serving_and_frees_the_port(reader: ShapeReader) -> None:
    server = CalculatorServer(reader, port=0)
    server.start()
    port = server.port
    assert request(server, "GET", "/")[0] == 200
    server.close()
    server.close()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(RuntimeError, match="already started or closed"):
        server.start()
    assert server.url == f"http://127.0.0.1:{port}/"


def test_decode_lays_transparency_over_white_and_expands_gray() -> None:
    bgra = np.zeros((2, 2, 4), dtype=np.uint8)
    bgra[0, 0] = (255, 0, 0, 255)  # opaque blue
    ok, png = cv2.imencode(".png", bgra)
    assert ok
    image = decode_image(png.tobytes(), "image/png; charset=binary")
    assert image.shape == (2, 2, 3)
    np.testing.assert_array_equal(image[0, 0], [0, 0, 255])
    np.testing.assert_array_equal(image[1, 1], [255, 255, 255])  # transparent -> white
    gray16 = np.full((3, 2), 65535, dtype=np.uint16)
    ok, png = cv2.imencode(".png", gray16)
    assert ok
    np.testing.assert_array_equal(decode_image(png.tobytes(), "IMAGE/PNG"), 255)


def test_decode_errors_carry_an_http_status() -> None:
    with pytest.raises(ImageError, match="not a PNG") as caught:
        decode_image(b"nope", "image/png")
    assert caught.value.status == 400


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CalculatorServer]:
    from federa.apps.calculator.web import reader_from_run
    from tests.apps.glyph_model import glyph_run

    with CalculatorServer(reader_from_run(glyph_run(tmp_path_factory)), port=0) as running:
        running.start()
        yield running


@pytest.mark.slow
def test_read_with_a_trained_model_answers_text_value_and_boxes(
    model_server: CalculatorServer,
) -> None:
    from tests.apps.glyphs import render_expression

    margin, height = 40, 120
    image = render_expression("47-9", height=height, stroke_width=12, margin=margin)
    status, answer = post_image(model_server, png_of(image))
    assert status == 200
    assert (answer["text"], answer["value"], answer["error"]) == ("47-9", "38", None)
    assert [s["char"] for s in answer["symbols"]] == ["4", "7", "-", "9"]
    for symbol in answer["symbols"]:
        assert 0.5 < symbol["confidence"] <= 1.0
        _, y, _, h = symbol["box"]
        assert margin - 10 <= y and y + h <= margin + height + 10  # on the written line
    lefts = [s["box"][0] for s in answer["symbols"]]
    assert lefts == sorted(lefts)
    png = base64.b64decode(answer["annotated"].split(",", 1)[1])
    annotated = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert annotated.shape[1] == image.shape[1]


@pytest.mark.slow
def test_read_with_a_trained_model_reports_a_blank_image(model_server: CalculatorServer) -> None:
    status, answer = post_image(model_server, png_of(np.full((50, 80), 255, dtype=np.uint8)))
    assert status == 200
    assert (answer["text"], answer["value"], answer["symbols"]) == ("", None, [])
    assert "no handwriting found" in answer["error"]
