"""A local web page for the handwriting calculator: draw or upload an expression, see it read.

`CalculatorServer` serves one static page (a drawing pad, an upload input and a Read
button) and one endpoint, ``POST /api/read``, on the standard library's
`http.server.ThreadingHTTPServer`. The endpoint takes the raw bytes of a PNG or JPEG
image (``Content-Type: image/png`` or ``image/jpeg``) and answers JSON:

```json
{"text": "3+5", "value": "8", "error": null,
 "symbols": [{"char": "3", "confidence": 0.99, "box": [x, y, w, h]}, ...],
 "annotated": "data:image/png;base64,..."}
```

A request the server cannot use (too large, another content type, bytes that are not
an image) gets a 4xx answer ``{"error": "<one line>"}``, which the page shows.

The server knows nothing of models: it calls a `Reader`, a function from an RGB image
to a `PageReading`, so the page can be tested and reused with any recognizer;
`reader_from_run` builds the one `federa ui` uses from a run directory's model.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from federa.apps.calculator.upload import ImageError, decode_image, encode_png

if TYPE_CHECKING:
    from federa.apps.calculator.recognizer import Recognizer

__all__ = [
    "MAX_BODY_BYTES",
    "CalculatorServer",
    "PageReading",
    "PageSymbol",
    "Reader",
    "reader_for",
    "reader_from_run",
]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest request body /api/read accepts; the page downscales photos well below it."""

_REQUEST_TIMEOUT_S = 30.0  # a client that stops sending mid-body does not hold a thread
_POLL_INTERVAL_S = 0.05  # how soon `close` stops a background server
_STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class PageSymbol:
    """One symbol the recognizer found: its character, confidence and box in the image.

    Attributes:
        char: The character read, e.g. ``"3"`` or ``"+"``.
        confidence: The model's probability for `char`, in [0, 1].
        box: ``(x, y, width, height)`` in pixels of the submitted image.
    """

    char: str
    confidence: float
    box: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class PageReading:
    """What the page shows for one image.

    Attributes:
        text: The expression read, e.g. ``"3+5"`` (empty when nothing was found).
        symbols: The symbols, left to right.
        value: The value as text when the expression computes, else None.
        error: One line saying why there is no value (unparsable, division by zero,
            nothing drawn), else None.
        annotated: The image with boxes and labels drawn on it, ``(H, W, 3)`` RGB or
            ``(H, W)`` gray, uint8.
    """

    text: str
    symbols: tuple[PageSymbol, ...]
    value: str | None
    error: str | None
    annotated: npt.NDArray[np.uint8]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object /api/read answers, the annotated image as a data URL."""
        png = base64.b64encode(encode_png(self.annotated)).decode("ascii")
        return {
            "text": self.text,
            "value": self.value,
            "error": self.error,
            "symbols": [
                {"char": s.char, "confidence": float(s.confidence), "box": list(s.box)}
                for s in self.symbols
            ],
            "annotated": f"data:image/png;base64,{png}",
        }


Reader = Callable[[npt.NDArray[np.uint8]], PageReading]
"""Read one ``(H, W, 3)`` RGB uint8 image: the server's only view of a recognizer."""


def reader_for(recognizer: Recognizer) -> Reader:
    """Return a `Reader` that reads with `recognizer` and annotates the image it read."""
    from federa.apps.calculator.annotate import annotate
    from federa.apps.calculator.reading import read_expression

    def read(image: npt.NDArray[np.uint8]) -> PageReading:
        reading = read_expression(image, recognizer)
        return PageReading(
            text=reading.text,
            symbols=tuple(
                PageSymbol(
                    char=s.char,
                    confidence=float(s.confidence),
                    box=(int(s.box.x), int(s.box.y), int(s.box.width), int(s.box.height)),
                )
                for s in reading.symbols
            ),
            value=reading.value_text,
            error=reading.error,
            annotated=annotate(image, reading),
        )

    return read


def reader_from_run(run: str | os.PathLike[str]) -> Reader:
    """Load the calculator model of a run directory (or its model.safetensors) as a `Reader`.

    Raises:
        FederaError: The directory or model file is missing or not a calculator model;
            the message says which and how to make one.
    """
    from federa.apps.calculator.recognizer import load_recognizer

    return reader_for(load_recognizer(run))


class _RequestError(Exception):
    """A request the server refuses: an HTTP status and one line for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _load_static() -> dict[str, tuple[bytes, str]]:
    """Read the page's files from the package once, keyed by URL path."""
    folder = resources.files("federa.apps.calculator").joinpath("static")
    return {
        path: (folder.joinpath(name).read_bytes(), content_type)
        for path, (name, content_type) in _STATIC_FILES.items()
    }


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serve the static page and /api/read; every answer is complete and closes cleanly."""

    server: _HTTPServer
    timeout = _REQUEST_TIMEOUT_S
    server_version = "federa-ui"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/api/read":
            self._send_json(405, {"error": "use POST to send an image to /api/read"})
            return
        found = self.server.static.get(path)
        if found is None:
            self._send_json(404, {"error": f"no page at {path}; open /"})
            return
        body, content_type = found
        self._send(200, body, content_type)

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/api/read":
            self._send_json(404, {"error": f"no endpoint at {self.path}; POST to /api/read"})
            return
        try:
            image = decode_image(self._read_body(), self.headers.get("Content-Type", ""))
            with self.server.read_lock:
                reading = self.server.reader(image)
            answer = reading.to_json()
        except _RequestError as exc:
            self._send_json(exc.status, {"error": exc.message})
            return
        except ImageError as exc:
            self._send_json(exc.status, {"error": str(exc)})
            return
        except Exception:
            logger.exception("reading an image failed")
            self._send_json(500, {"error": "the recognizer failed on this image; see the log"})
            return
        self._send_json(200, answer)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise _RequestError(411, "send the image with a Content-Length, not chunked")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            raise _RequestError(411, "send the image with a Content-Length header")
        try:
            length = int(length_text)
        except ValueError:
            raise _RequestError(400, f"bad Content-Length {length_text!r}") from None
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body must not be parsed as a request
            raise _RequestError(
                413,
                f"the image is {length / 2**20:.1f} MiB; send at most "
                f"{MAX_BODY_BYTES // 2**20} MiB (a smaller or downscaled picture)",
            )
        if length <= 0:
            raise _RequestError(400, "the request has no image in it; draw or upload one")
        body = self.rfile.read(length)
        if len(body) != length:
            raise _RequestError(400, "the image arrived incomplete; send it again")
        return body

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _SECURITY_HEADERS.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class _HTTPServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that carries the reader, its lock and the page's files."""

    daemon_threads = True  # a stuck browser connection never blocks shutdown

    def __init__(self, address: tuple[str, int], reader: Reader) -> None:
        self.reader = reader
        # Recognizers are not promised to be thread-safe; one image at a time is plenty here.
        self.read_lock = threading.Lock()
        self.static = _load_static()
        super().__init__(address, _Handler)


class CalculatorServer:
    """Serve the calculator page on `host`:`port` (port 0 picks a free one).

    Use it as a context manager, or call `start` (background thread) or
    `serve_forever` (this thread) and then `close`:

    ```python
    with CalculatorServer(reader, port=0) as server:
        server.start()
        print(server.url)
    ```

    Raises:
        OSError: The address cannot be bound (in use, or not an address of this host).
    """

    def __init__(self, reader: Reader, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._httpd = _HTTPServer((host, port), reader)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._is_closed = False

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on (the chosen one when 0 was asked for)."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:8000/`` (loopback for 0.0.0.0)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Serve in a background thread and return at once."""
        with self._lock:
            if self._thread is not None or self._is_closed:
                raise RuntimeError("the server was already started or closed")
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_S},
                name="federa-ui",
                daemon=True,
            )
            self._thread.start()

    def serve_forever(self) -> None:
        """Serve in this thread until `close` is called from another (or Ctrl-C)."""
        self._httpd.serve_forever()

    def close(self) -> None:
        """Stop serving, wait for the serving thread and release the socket; idempotent."""
        with self._lock:
            if self._is_closed:
                return
            self._is_closed = True
            thread = self._thread
        if thread is not None:
            self._httpd.shutdown()
            thread.join()
        self._httpd.server_close()

    def __enter__(self) -> CalculatorServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
