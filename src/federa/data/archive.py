"""Safe extraction of downloaded zip and tar archives.

Members with absolute paths, `..`, links or special files are refused; everything is
unpacked into a temporary folder inside the destination and renamed into place, so a
failed extraction leaves nothing half-written under the final names.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

from federa.errors import FederaError

CHUNK_SIZE = 1 << 20


def extract(archive: Path, dest: Path) -> list[str]:
    """Unpack into a temporary folder in `dest`, then rename each top-level entry into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".tmp", dir=dest))
    try:
        if archive.name.endswith(".zip"):
            _unzip(archive, tmp)
        elif archive.name.endswith((".tar.gz", ".tgz", ".tar")):
            _untar(archive, tmp)
        else:
            raise FederaError(f"cannot extract {archive}: only zip and tar(.gz) are supported")
        names = sorted(entry.name for entry in tmp.iterdir())
        for name in names:
            target = dest / name
            if target in (archive, tmp) or name.endswith(".part"):
                raise _unsafe(archive, name, "would overwrite the download itself")
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(tmp / name, target)
        return names
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise FederaError(
            f"{archive} is not a readable archive ({exc}); delete it and download again"
        ) from exc
    except OSError as exc:
        raise FederaError(
            f"cannot extract {archive} into {dest}: {exc.strerror or exc}; "
            "check free disk space and permissions"
        ) from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unsafe(archive: Path, member: str, why: str) -> FederaError:
    return FederaError(
        f"refusing to extract {archive}: member {member!r} {why}; nothing was extracted. "
        "The archive is not the published one: delete it and download again"
    )


def _member_target(root: Path, name: str, archive: Path) -> Path | None:
    """Return where member `name` goes under `root`, None for the root itself."""
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix):
        raise _unsafe(archive, name, "has an absolute path")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _unsafe(archive, name, "climbs out of the destination with '..'")
    return root.joinpath(*parts) if parts else None


def _unzip(archive: Path, root: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = _member_target(root, info.filename, archive)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise _unsafe(archive, info.filename, "is a symbolic link")
            if target is None:
                continue
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_SIZE)


def _untar(archive: Path, root: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            target = _member_target(root, member.name, archive)
            if not (member.isfile() or member.isdir()):
                raise _unsafe(archive, member.name, "is a link or a special file")
            if target is None:
                continue
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            if src is None:  # pragma: no cover - extractfile returns a file for regular files
                raise _unsafe(archive, member.name, "cannot be read")
            with src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK_SIZE)
