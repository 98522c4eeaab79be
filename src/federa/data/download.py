"""Fetch datasets from their original public addresses, verified by checksum.

`SOURCES` lists each dataset's files with the checksum its publisher or a widely
used loader publishes. `download` streams them into a folder, resumes partial
downloads with HTTP range requests, verifies each file before moving it into place
atomically, and unpacks archives without letting a member escape the folder.
Only the standard library is used, so the data layer needs no extra dependency.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from federa.data.archive import extract
from federa.errors import ConfigError, FederaError

__all__ = ["SOURCES", "ProgressFn", "RemoteFile", "download", "source_files"]

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Bytes read, hashed and written at a time: no file is ever held in memory whole."""
TIMEOUT_S = 60.0
"""Seconds to wait for a connection or for the next bytes of a response."""
MAX_ATTEMPTS = 3
"""Transfers of one file per call; an interrupted transfer that made progress resumes."""
# Some hosts turn away urllib's default "Python-urllib" agent; say who we are instead.
_USER_AGENT = "Mozilla/5.0 (compatible; federa-download)"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

ProgressFn = Callable[[str, int, "int | None"], None]
"""Called as progress(filename, bytes_done, bytes_total_or_None) while a file arrives."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteFile:
    """One file of a dataset at its original public address.

    Attributes:
        url: Where the publisher serves it.
        filename: The name it is saved under in the destination folder.
        sha256: Its SHA-256 as lowercase hex, or None where none is published and
            `md5` is given instead.
        size: Its size in bytes, or None where it is not published.
        extract: Whether it is an archive (zip or tar.gz) to unpack after verification.
        md5: Its MD5 as lowercase hex, given only where no SHA-256 is published.
    """

    url: str
    filename: str
    sha256: str | None
    size: int | None
    extract: bool = False
    md5: str | None = None

    def __post_init__(self) -> None:
        if self.sha256 is None and self.md5 is None:
            raise ValueError(f"{self.filename}: a RemoteFile needs a sha256 or an md5")


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_SYMBOLS = (
    "https://raw.githubusercontent.com/jdmacleod/handwritten-calculator/"
    "c00b70f1dfafe54c17de6ed7fc49b9598d134e2c/mdas_symbol_dataset/mdas_symbols_v1.zip"
)
_NIST_SD19 = "https://s3.amazonaws.com/nist-srd/SD19/"

# Where the checksums come from. MNIST, EMNIST, CIFAR-10: tensorflow-datasets'
# url_checksums/{mnist,emnist,cifar10}.txt (sha256 and size; TFDS fetches MNIST from
# another mirror of the same original files and EMNIST from www.itl.nist.gov, which
# serves the same gzip.zip as biometrics.nist.gov). Three MNIST values and the symbols
# zip's were also recomputed from byte-identical copies of the files. NIST publishes
# no SHA-256 for SD-19; its MD5s are the ones LEAF-based loaders such as
# FederatedScope check.
SOURCES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": (
        RemoteFile(
            url=_MNIST + "train-images-idx3-ubyte.gz",
            filename="train-images-idx3-ubyte.gz",
            sha256="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            size=9_912_422,
        ),
        RemoteFile(
            url=_MNIST + "train-labels-idx1-ubyte.gz",
            filename="train-labels-idx1-ubyte.gz",
            sha256="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            size=28_881,
        ),
        RemoteFile(
            url=_MNIST + "t10k-images-idx3-ubyte.gz",
            filename="t10k-images-idx3-ubyte.gz",
            sha256="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            size=1_648_877,
        ),
        RemoteFile(
            url=_MNIST + "t10k-labels-idx1-ubyte.gz",
            filename="t10k-labels-idx1-ubyte.gz",
            sha256="f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            size=4_542,
        ),
    ),
    "emnist": (
        RemoteFile(
            url="https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
            filename="gzip.zip",
            sha256="fb9bb67e33772a9cc0b895e4ecf36d2cf35be8b709693c3564cea2a019fcda8e",
            size=561_753_746,
            extract=True,
        ),
    ),
    "cifar10": (
        RemoteFile(
            url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            filename="cifar-10-binary.tar.gz",
            sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
            size=170_052_171,
            extract=True,
        ),
    ),
    "symbols": (
        RemoteFile(
            url=_SYMBOLS,
            filename="mdas_symbols_v1.zip",
            sha256="c779edb082fbe932e02ba129d4a0f7eee5e539873f988b587284d46a947d8791",
            size=2_831_438,
        ),
    ),
    # The raw NIST SD-19 files that LEAF's FEMNIST is built from; LEAF's own
    # preprocessing (data/femnist/preprocess.sh) turns them into per-writer JSON.
    "femnist": (
        RemoteFile(
            url=_NIST_SD19 + "by_class.zip",
            filename="by_class.zip",
            sha256=None,
            md5="79572b1694a8506f2b722c7be54130c4",
            size=None,
            extract=True,
        ),
        RemoteFile(
            url=_NIST_SD19 + "by_write.zip",
            filename="by_write.zip",
            sha256=None,
            md5="a29f21babf83db0bb28a2f77b2b456cb",
            size=None,
            extract=True,
        ),
    ),
}
"""Each downloadable dataset's files, by the name `download` takes."""


def source_files(name: str) -> tuple[RemoteFile, ...]:
    """Return the files of the dataset `name`, or raise ConfigError naming the choices."""
    try:
        return SOURCES[name]
    except KeyError:
        choices = ", ".join(sorted(SOURCES))
        raise ConfigError(
            f"unknown dataset {name!r} to download; choose one of: {choices}"
        ) from None


def download(
    name: str,
    dest_dir: str | os.PathLike[str],
    *,
    progress: ProgressFn | None = None,
    base_url: str | None = None,
) -> Path:
    """Download every file of a dataset into a folder, verify it and unpack archives.

    A file already present with the right checksum is not fetched again. A partial
    `<file>.part` left by an interrupted run is resumed with an HTTP range request
    (from zero when the server ignores the range). Each file is verified before it is
    renamed into place, so a corrupt or partial file never sits under the final name.
    Archives unpack into a temporary folder first; a member with an absolute path, a
    `..` component or a link is refused.

    Args:
        name: A key of `SOURCES`, such as "mnist".
        dest_dir: The folder to write into; created when missing.
        progress: Called as `progress(filename, bytes_done, bytes_total)` as bytes
            arrive; `bytes_total` is None when neither the server nor `SOURCES` says.
        base_url: A mirror's http(s) address that replaces each file URL's scheme and
            host; the file's URL path is appended to it.

    Returns:
        The destination folder.

    Raises:
        ConfigError: `name` is unknown or `base_url` is not an http(s) address.
        FederaError: The network failed, the server refused, a file was corrupt, an
            archive was unsafe or the folder is not writable. The message says what to do.
    """
    files = source_files(name)
    if base_url is not None:
        try:
            parts = urllib.parse.urlsplit(base_url)
        except ValueError:
            parts = urllib.parse.urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"mirror {base_url!r} is not an http:// or https:// address")
    dest = Path(dest_dir)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FederaError(
            f"cannot create download folder {dest}: {exc.strerror or exc}; choose another folder"
        ) from exc
    for remote in files:
        url = remote.url
        if base_url is not None:
            url = base_url.rstrip("/") + urllib.parse.urlsplit(remote.url).path
        path = _fetch(remote, url, dest, progress)
        if remote.extract:
            _extract_once(remote, path, dest)
    return dest


class _Digest:
    """The checksums a RemoteFile publishes, computed over a stream of chunks."""

    __slots__ = ("_md5", "_sha256")

    def __init__(self, remote: RemoteFile) -> None:
        self._sha256 = hashlib.sha256() if remote.sha256 is not None else None
        self._md5 = hashlib.md5(usedforsecurity=False) if remote.md5 is not None else None

    def update(self, chunk: bytes) -> None:
        if self._sha256 is not None:
            self._sha256.update(chunk)
        if self._md5 is not None:
            self._md5.update(chunk)

    def update_from(self, path: Path) -> None:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_SIZE):
                self.update(chunk)

    def mismatch(self, remote: RemoteFile) -> str | None:
        """Return "<algo> <got>, expected <want>" for the first wrong checksum, else None."""
        for algo, hasher, want in (
            ("sha256", self._sha256, remote.sha256),
            ("md5", self._md5, remote.md5),
        ):
            if hasher is not None and want is not None and hasher.hexdigest() != want.lower():
                return f"{algo} {hasher.hexdigest()}, expected {want}"
        return None


class _TransferCutError(Exception):
    """A transfer stopped before its end; the .part file keeps what arrived."""

    def __init__(self, done: int, total: int | None, reason: str, *, progressed: bool) -> None:
        super().__init__(reason)
        self.done, self.total, self.progressed = done, total, progressed


class _RangeRefusedError(Exception):
    """The server answered 416 to a range request: the .part file is unusable."""


def _report(progress: ProgressFn | None, filename: str, done: int, total: int | None) -> None:
    if progress is not None:
        progress(filename, done, total)


def _fetch(remote: RemoteFile, url: str, dest: Path, progress: ProgressFn | None) -> Path:
    """Make `dest/remote.filename` hold the verified file, downloading it if needed."""
    final = dest / remote.filename
    if final.is_file():
        if _is_verified(final, remote):
            size = final.stat().st_size
            _report(progress, remote.filename, size, size)
            logger.info("%s is present and verified; not downloading it again", final)
            return final
        logger.warning("%s does not match its checksum; downloading it again", final)
    part = dest / f"{remote.filename}.part"
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            digest = _transfer(remote, url, part, progress)
            break
        except _TransferCutError as exc:
            total = "?" if exc.total is None else str(exc.total)
            if attempt == MAX_ATTEMPTS or not exc.progressed:
                raise FederaError(
                    f"download of {url} was interrupted after {exc.done} of {total} bytes "
                    f"({exc}); {part} was kept: run the download again to resume it"
                ) from exc
            logger.info("download of %s interrupted (%s); resuming", url, exc)
    problem = digest.mismatch(remote)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise FederaError(
            f"{remote.filename} downloaded from {url} was corrupt ({problem}); it was deleted: "
            "run the download again to retry, or use another mirror if it keeps failing"
        )
    os.replace(part, final)
    return final


def _is_verified(path: Path, remote: RemoteFile) -> bool:
    if remote.size is not None and path.stat().st_size != remote.size:
        return False
    digest = _Digest(remote)
    digest.update_from(path)
    return digest.mismatch(remote) is None


def _transfer(remote: RemoteFile, url: str, part: Path, progress: ProgressFn | None) -> _Digest:
    """Complete `part` from `url`, resuming it when possible; return its checksums."""
    offset = part.stat().st_size if part.is_file() else 0
    if remote.size is not None and offset >= remote.size:
        if offset == remote.size:  # complete but never verified: an earlier run stopped
            _report(progress, remote.filename, offset, offset)
            digest = _Digest(remote)
            digest.update_from(part)
            return digest
        offset = 0
    response, offset = _open_resumable(url, offset)
    with response:
        digest = _Digest(remote)
        if offset:
            digest.update_from(part)
        length = response.getheader("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        total = remote.size if expected is None else offset + expected
        _copy(response, part, digest, offset, total, expected, remote, progress)
    return digest


def _open_resumable(url: str, offset: int) -> tuple[http.client.HTTPResponse, int]:
    """Open `url` from byte `offset`, or from 0 when the server will not resume there."""
    if not offset:
        return _open(url, 0), 0
    try:
        response = _open(url, offset)
    except _RangeRefusedError:
        logger.info("%s refused to resume at byte %d; downloading from the start", url, offset)
        return _open(url, 0), 0
    if response.status == 206 and _range_start(response) == offset:
        return response, offset
    logger.info("%s ignored the range request; downloading from the start", url)
    if response.status == 200:
        return response, 0
    response.close()  # a partial answer for a range we did not ask for
    return _open(url, 0), 0


def _range_start(response: http.client.HTTPResponse) -> int | None:
    match = _CONTENT_RANGE.fullmatch((response.getheader("Content-Range") or "").strip())
    return int(match.group(1)) if match else None


def _open(url: str, offset: int) -> http.client.HTTPResponse:
    """Open `url` (from byte `offset` when positive) or raise a FederaError that says why."""
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response: http.client.HTTPResponse = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            raise _RangeRefusedError from exc
        advice = (
            "the file may have moved: check the address or use a mirror (--mirror URL)"
            if exc.code < 500
            else "the server failed: try again later or use a mirror (--mirror URL)"
        )
        raise FederaError(f"{url} answered HTTP {exc.code} {exc.reason}; {advice}") from exc
    except urllib.error.URLError as exc:
        raise FederaError(
            f"cannot reach {url} ({exc.reason}); check the internet connection and try "
            "again, or use a mirror (--mirror URL)"
        ) from exc
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise FederaError(
            f"connection to {url} failed ({exc or type(exc).__name__}); try again, "
            "or use a mirror (--mirror URL)"
        ) from exc
    return response


def _copy(
    response: http.client.HTTPResponse,
    part: Path,
    digest: _Digest,
    offset: int,
    total: int | None,
    expected: int | None,
    remote: RemoteFile,
    progress: ProgressFn | None,
) -> None:
    """Append the response body to `part` (from scratch when `offset` is 0), chunk by chunk."""
    done, received, too_long = offset, 0, False
    _report(progress, remote.filename, done, total)
    try:
        out = part.open("ab" if offset else "wb")
    except OSError as exc:
        raise FederaError(f"cannot write {part}: {exc.strerror or exc}; check the folder") from exc
    with out:
        while True:
            try:
                chunk = response.read(CHUNK_SIZE)
            except (OSError, http.client.HTTPException) as exc:
                reason = str(exc) or type(exc).__name__
                raise _TransferCutError(done, total, reason, progressed=received > 0) from exc
            if not chunk:
                break
            _write(out, chunk, part)
            digest.update(chunk)
            received += len(chunk)
            done += len(chunk)
            _report(progress, remote.filename, done, total)
            if remote.size is not None and done > remote.size:
                too_long = True
                break
        _write(out, b"", part)  # flush and sync: on disk before it is renamed into place
    if too_long:
        part.unlink(missing_ok=True)
        raise FederaError(
            f"{response.geturl()} sent more than the {remote.size} bytes {remote.filename} has; "
            "the server does not serve the published file: use another mirror"
        )
    if expected is not None and received < expected:
        raise _TransferCutError(done, total, "connection closed early", progressed=received > 0)


def _write(out: BinaryIO, chunk: bytes, part: Path) -> None:
    """Write `chunk` to `out`, or flush and sync it when `chunk` is empty."""
    try:
        if chunk:
            out.write(chunk)
        else:
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise FederaError(
            f"cannot write {part}: {exc.strerror or exc}; free some disk space and run the "
            "download again to resume"
        ) from exc


def _extract_once(remote: RemoteFile, archive: Path, dest: Path) -> None:
    """Unpack `archive` into `dest` unless a marker shows this archive already is."""
    marker = dest / f".{remote.filename}.extracted"
    checksum = remote.sha256 or remote.md5
    try:
        recorded = marker.read_text(encoding="utf-8").splitlines()
    except OSError:
        recorded = []
    if recorded and recorded[0] == checksum and all((dest / n).exists() for n in recorded[1:]):
        logger.info("%s is already extracted in %s", archive.name, dest)
        return
    names = extract(archive, dest)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text("\n".join([str(checksum), *names]) + "\n", encoding="utf-8")
    os.replace(tmp, marker)
