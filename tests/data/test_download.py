import gzip
import hashlib
import io
import re
import shutil
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from federa.data import download as dl
from federa.data import load_mnist
from federa.data.download import SOURCES, RemoteFile, download
from federa.errors import ConfigError, FederaError
from tests.data.test_mnist import write_mnist

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
# Every path a test serves lives under this prefix; base_url replaces the host.
FAKE_HOST = "https://files.example.invalid"


@dataclass
class Served:
    content: bytes
    behaviour: str = "ok"  # ok | drop_once | drop_always | ignore_range | stall


class LocalServer(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that serves in-memory files and can misbehave."""

    daemon_threads = False  # server_close() joins every handler thread
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, Served] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.release = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def ranges(self, path: str) -> list[str | None]:
        return [rng for p, rng in self.requests if p == path]


class Handler(BaseHTTPRequestHandler):
    server: LocalServer

    def do_GET(self) -> None:
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        served = srv.files.get(self.path)
        if served is None:
            self.send_error(404)
            return
        if served.behaviour == "stall":
            srv.release.wait(10)
            return
        content, start = served.content, 0
        if rng is not None and served.behaviour != "ignore_range":
            match = re.fullmatch(r"bytes=(\d+)-", rng)
            assert match is not None, rng
            start = int(match.group(1))
            if start >= len(content):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        else:
            self.send_response(200)
        body = content[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        first = len(srv.ranges(self.path)) == 1
        if served.behaviour == "drop_always" or (served.behaviour == "drop_once" and first):
            body = body[: len(body) // 2]  # then the connection closes: a dropped download
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def running_server() -> Iterator[LocalServer]:
    srv = LocalServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02})
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        thread.join()
        srv.server_close()


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with running_server() as srv:
        yield srv


def remote_for(
    srv: LocalServer,
    filename: str,
    content: bytes,
    *,
    behaviour: str = "ok",
    extract: bool = False,
    size: int | None = -1,
    served: bytes | None = None,
) -> RemoteFile:
    """Serve `served` (default `content`) and return a RemoteFile that expects `content`."""
    path = f"/data/{filename}"
    srv.files[path] = Served(content if served is None else served, behaviour)
    return RemoteFile(
        url=FAKE_HOST + path,
        filename=filename,
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content) if size == -1 else size,
        extract=extract,
    )


def fetch(
    monkeypatch: pytest.MonkeyPatch, srv: LocalServer, dest: Path, *files: RemoteFile
) -> Path:
    monkeypatch.setitem(SOURCES, "test", files)
    return download("test", dest, base_url=srv.base_url)


def payload(n: int = 300_000, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(n))


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_gz_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


def test_download_writes_verified_files_and_reports_progress(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    big, small = payload(3 * dl.CHUNK_SIZE + 5), b"tiny"
    files = (remote_for(server, "big.bin", big), remote_for(server, "small.bin", small))
    calls: list[tuple[str, int, int | None]] = []
    monkeypatch.setitem(SOURCES, "test", files)
    dest = download(
        "test",
        tmp_path / "new" / "dir",
        base_url=server.base_url + "/",
        progress=lambda *a: calls.append(a),
    )
    assert dest == tmp_path / "new" / "dir"
    assert (dest / "big.bin").read_bytes() == big
    assert (dest / "small.bin").read_bytes() == small
    assert sorted(p.name for p in dest.iterdir()) == ["big.bin", "small.bin"]
    big_calls = [done for name, done, total in calls if name == "big.bin"]
    assert big_calls == sorted(big_calls)
    assert big_calls[0] == 0
    assert len(big_calls) == 5  # the start, then one call per 1 MiB chunk
    assert calls[-1] == ("small.bin", 4, 4)
    assert server.requests == [("/data/big.bin", None), ("/data/small.bin", None)]


def test_downloaded_fake_mnist_loads_with_the_mnist_reader(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "made").mkdir()
    source = write_mnist(tmp_path / "made", num_train=12, num_test=5)
    monkeypatch.setitem(
        SOURCES,
        "mnist",
        tuple(
            remote_for(server, f.name, f.read_bytes())
            for f in sorted(source.iterdir())
            if f.name.endswith(".gz")
        ),
    )
    dest = download("mnist", tmp_path / "mnist", base_url=server.base_url)
    split = load_mnist(dest)
    assert (len(split.train), len(split.test)) == (12, 5)


def test_a_verified_file_is_not_downloaded_again(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    remote = remote_for(server, "a.bin", payload(1000))
    fetch(monkeypatch, server, tmp_path, remote)
    calls: list[tuple[str, int, int | None]] = []
    download("test", tmp_path, base_url=server.base_url, progress=lambda *a: calls.append(a))
    assert len(server.requests) == 1
    assert calls == [("a.bin", 1000, 1000)]


def test_a_damaged_file_under_the_final_name_is_replaced(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    content = payload(1000)
    (tmp_path / "a.bin").write_bytes(content[:-1] + b"X")
    fetch(monkeypatch, server, tmp_path, remote_for(server, "a.bin", content))
    assert (tmp_path / "a.bin").read_bytes() == content
    assert len(server.requests) == 1


def test_a_dropped_connection_resumes_with_a_range_request(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    content = payload(2 * dl.CHUNK_SIZE + 123)
    fetch(
        monkeypatch, server, tmp_path, remote_for(server, "a.bin", content, behaviour="drop_once")
    )
    assert (tmp_path / "a.bin").read_bytes() == content
    assert not (tmp_path / "a.bin.part").exists()
    assert server.ranges("/data/a.bin") == [None, f"bytes={len(content) // 2}-"]


def test_an_interrupted_download_keeps_its_part_and_the_next_run_resumes(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    content = payload(100_000)
    remote = remote_for(server, "a.bin", content, behaviour="drop_always")
    with pytest.raises(FederaError, match=r"interrupted .*run the download again to resume"):
        fetch(monkeypatch, server, tmp_path, remote)
    part = tmp_path / "a.bin.part"
    assert not (tmp_path / "a.bin").exists()
    kept = part.stat().st_size
    assert 0 < kept < len(content)
    assert part.read_bytes() == content[:kept]
    assert len(server.requests) == dl.MAX_ATTEMPTS
    server.files["/data/a.bin"].behaviour = "ok"
    download("test", tmp_path, base_url=server.base_url)
    assert (tmp_path / "a.bin").read_bytes() == content
    assert not part.exists()
    assert server.requests[-1] == ("/data/a.bin", f"bytes={kept}-")


def test_a_server_that_ignores_range_makes_the_download_start_over(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    content = payload(50_000)
    (tmp_path / "a.bin.part").write_bytes(b"garbage that must not survive")
    remote = remote_for(server, "a.bin", content, behaviour="ignore_range")
    fetch(monkeypatch, server, tmp_path, remote)
    assert (tmp_path / "a.bin").read_bytes() == content
    assert server.ranges("/data/a.bin") == ["bytes=29-"]


def test_a_refused_range_makes_the_download_start_over(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    content = payload(1000)
    (tmp_path / "a.bin.part").write_bytes(payload(1500))  # longer than the file
    fetch(monkeypatch, server, tmp_path, remote_for(server, "a.bin", content, size=None))
    assert (tmp_path / "a.bin").read_bytes() == content
    assert server.ranges("/data/a.bin") == ["bytes=1500-", None]


def test_a_complete_part_from_an_earlier_run_is_verified_without_the_network(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    content = payload(1000)
    (tmp_path / "a.bin.part").write_bytes(content)
    fetch(monkeypatch, server, tmp_path, remote_for(server, "a.bin", content))
    assert (tmp_path / "a.bin").read_bytes() == content
    assert server.requests == []


def test_corrupt_content_is_deleted_and_reported(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    content = payload(5000)
    remote = remote_for(server, "a.bin", content, served=content[:-1] + b"!")
    with pytest.raises(FederaError, match=r"a\.bin downloaded from .* was corrupt \(sha256 "):
        fetch(monkeypatch, server, tmp_path, remote)
    assert list(tmp_path.iterdir()) == []


def test_a_server_sending_more_than_the_published_size_is_refused(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    content = payload(1000)
    remote = remote_for(server, "a.bin", content, served=content + b"more")
    with pytest.raises(FederaError, match=r"sent more than the 1000 bytes a\.bin has"):
        fetch(monkeypatch, server, tmp_path, remote)
    assert list(tmp_path.iterdir()) == []


def test_md5_is_checked_where_no_sha256_is_published(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    content = payload(2000)
    server.files["/data/a.bin"] = Served(content)
    good = RemoteFile(
        url=FAKE_HOST + "/data/a.bin",
        filename="a.bin",
        sha256=None,
        md5=hashlib.md5(content).hexdigest(),
        size=None,
    )
    fetch(monkeypatch, server, tmp_path / "good", good)
    assert (tmp_path / "good" / "a.bin").read_bytes() == content
    bad = RemoteFile(url=good.url, filename="a.bin", sha256=None, md5="0" * 32, size=None)
    with pytest.raises(FederaError, match=r"was corrupt \(md5 "):
        fetch(monkeypatch, server, tmp_path / "bad", bad)
    assert list((tmp_path / "bad").iterdir()) == []


def test_http_404_names_the_url(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = RemoteFile(
        url=FAKE_HOST + "/data/gone.bin", filename="gone.bin", sha256="0" * 64, size=None
    )
    url = re.escape(f"{server.base_url}/data/gone.bin")
    with pytest.raises(FederaError, match=rf"{url} answered HTTP 404 .*check the address"):
        fetch(monkeypatch, server, tmp_path, missing)
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_server_names_the_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a port that nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    remote = RemoteFile(url=FAKE_HOST + "/a.bin", filename="a.bin", sha256="0" * 64, size=None)
    monkeypatch.setitem(SOURCES, "test", (remote,))
    with pytest.raises(FederaError, match=rf"cannot reach http://127\.0\.0\.1:{port}/a\.bin"):
        download("test", tmp_path, base_url=f"http://127.0.0.1:{port}")


def test_a_stalled_server_times_out(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(dl, "TIMEOUT_S", 0.2)
    remote = remote_for(server, "a.bin", b"never sent", behaviour="stall")
    with pytest.raises(FederaError, match=r"/data/a\.bin failed \(timed out\)"):
        fetch(monkeypatch, server, tmp_path, remote)
    assert not (tmp_path / "a.bin").exists()


def test_archives_are_extracted_once_into_place(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    zipped = zip_bytes({"pkg/a.txt": b"alpha", "pkg/sub/b.bin": b"\x00\x01", "top.txt": b"t"})
    tarred = tar_gz_bytes({"batches/x.bin": b"x" * 10, "./batches/y.bin": b"y"})
    files = (
        remote_for(server, "set.zip", zipped, extract=True),
        remote_for(server, "set.tar.gz", tarred, extract=True),
    )
    fetch(monkeypatch, server, tmp_path, *files)
    assert (tmp_path / "pkg" / "a.txt").read_bytes() == b"alpha"
    assert (tmp_path / "pkg" / "sub" / "b.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "top.txt").read_bytes() == b"t"
    assert (tmp_path / "batches" / "x.bin").read_bytes() == b"x" * 10
    assert (tmp_path / "batches" / "y.bin").read_bytes() == b"y"
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ["batches", "pkg", "set.tar.gz", "set.zip", "top.txt"]
    hidden = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert hidden == [".set.tar.gz.extracted", ".set.zip.extracted"]  # no temporary folders

    (tmp_path / "pkg" / "mine.txt").write_text("kept")  # a second run must not unpack again
    download("test", tmp_path, base_url=server.base_url)
    assert (tmp_path / "pkg" / "mine.txt").exists()
    assert len(server.requests) == 2

    shutil.rmtree(tmp_path / "batches")  # a missing folder is unpacked again
    download("test", tmp_path, base_url=server.base_url)
    assert (tmp_path / "batches" / "x.bin").read_bytes() == b"x" * 10
    assert (tmp_path / "pkg" / "mine.txt").exists()


@pytest.mark.parametrize(
    ("filename", "archive", "why"),
    [
        ("evil.zip", zip_bytes({"ok.txt": b"1", "../evil": b"x"}), "climbs out"),
        ("evil.zip", zip_bytes({"/tmp/evil": b"x"}), "has an absolute path"),
        ("evil.zip", zip_bytes({"ok/..\\..\\evil": b"x"}), "climbs out"),
        ("evil.tar.gz", tar_gz_bytes({"ok.txt": b"1", "../evil": b"x"}), "climbs out"),
        ("evil.tar.gz", tar_gz_bytes({"/tmp/evil": b"x"}), "has an absolute path"),
        ("evil.tar.gz", tar_gz_bytes({}, links={"link": "/etc/passwd"}), "is a link"),
    ],
)
def test_unsafe_archive_members_are_refused(
    server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    filename: str,
    archive: bytes,
    why: str,
) -> None:
    dest = tmp_path / "dest"
    remote = remote_for(server, filename, archive, extract=True)
    with pytest.raises(FederaError, match=rf"refusing to extract .*{why}"):
        fetch(monkeypatch, server, dest, remote)
    assert not (tmp_path / "evil").exists()
    assert sorted(p.name for p in dest.iterdir()) == [filename]  # no member, no temp folder


def test_a_corrupt_archive_says_to_download_again(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    remote = remote_for(server, "bad.tar.gz", gzip.compress(b"not a tar")[:20], extract=True)
    with pytest.raises(FederaError, match=r"not a readable archive .*download again"):
        fetch(monkeypatch, server, tmp_path, remote)


def test_unknown_dataset_lists_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'imagenet' .* cifar10, emnist"):
        download("imagenet", tmp_path)


@pytest.mark.parametrize(
    "mirror", ["ftp://mirror/x", "file:///tmp", "mirror.example", "http://[::1"]
)
def test_a_mirror_must_be_http(tmp_path: Path, mirror: str) -> None:
    with pytest.raises(ConfigError, match="is not an http:// or https:// address"):
        download("mnist", tmp_path, base_url=mirror)


def test_a_remote_file_needs_a_checksum() -> None:
    with pytest.raises(ValueError, match="needs a sha256 or an md5"):
        RemoteFile(url="https://x/y", filename="y", sha256=None, size=None)


def test_every_real_source_has_an_https_url_a_checksum_and_a_filename() -> None:
    assert set(SOURCES) >= {"mnist", "emnist", "cifar10", "symbols"}
    for name, files in SOURCES.items():
        assert files, name
        assert len({f.filename for f in files}) == len(files), name
        for f in files:
            assert f.url.startswith("https://"), f
            assert f.filename and "/" not in f.filename and not f.filename.startswith("."), f
            if f.sha256 is not None:
                assert re.fullmatch("[0-9a-f]{64}", f.sha256), f
            else:
                assert f.md5 is not None and re.fullmatch("[0-9a-f]{32}", f.md5), f
            assert f.size is None or f.size > 0, f
            assert not f.extract or f.filename.endswith((".zip", ".tar.gz")), f


@pytest.mark.skipif(
    not (SHARED / "mnist").is_dir(), reason="../shared/data not present (real dataset files)"
)
@pytest.mark.parametrize(
    ("name", "local"),
    [
        ("mnist", "mnist/train-labels-idx1-ubyte.gz"),
        ("mnist", "mnist/t10k-images-idx3-ubyte.gz"),
        ("mnist", "mnist/t10k-labels-idx1-ubyte.gz"),
        ("symbols", "math_symbols/mdas_symbols_v1.zip"),
    ],
)
def test_real_checksums_match_byte_identical_local_copies(name: str, local: str) -> None:
    path = SHARED / local
    (remote,) = (f for f in SOURCES[name] if f.filename == path.name)
    assert path.stat().st_size == remote.size
    assert hashlib.sha256(path.read_bytes()).hexdigest() == remote.sha256
