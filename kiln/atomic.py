"""Atomic file writes: a file is either absent, its old version, or complete; never half written.

Every writer in kiln goes through here. The new content is written to a temporary file in the
same folder (so the rename cannot cross file systems), flushed and fsynced, renamed over the
target with os.replace, and then the folder itself is fsynced so the rename survives a crash.
On an exception the temporary file is removed and the target is left as it was.

    atomic_write_text(path, text)           whole contents at once
    with atomic_path(path) as tmp: ...      for writers that want a path (torch.save, safetensors)
    with AtomicFile(path) as f: ...         for writers that want a file object (np.save)
    f = AtomicFile(path, "w+b"); ...; f.commit() / f.discard()   for files streamed over time
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "AtomicFile",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_dir",
    "remove_leftover_temps",
]

_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # what _create_temp names


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or a new file in `folder` durable (POSIX; Windows cannot open folders)."""
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(path: Path) -> tuple[Path, int]:
    """A new, empty, hidden temp file beside `path`. Not mkstemp: its 0600 mode would survive the
    rename, and a dataset or snapshot should get the same permissions as any file the user makes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def _publish(tmp: Path, path: Path) -> None:
    os.replace(tmp, path)
    fsync_dir(path.parent)


def remove_leftover_temps(folder: str | Path) -> list[Path]:
    """Remove the temp files a killed writer left in `folder` (a normal failure removes its own).
    Only for a folder that nothing else is writing to, e.g. a job's folder as its job starts."""
    removed = []
    for path in Path(folder).iterdir() if Path(folder).is_dir() else ():
        if _TEMP_NAME.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


class AtomicFile:
    """An open temp file that becomes `path` on commit(). As a context manager it yields the file
    object and commits on success, discards on exception."""

    def __init__(self, path: str | Path, mode: str = "wb", encoding: str | None = None) -> None:
        self.path = Path(path)
        self.tmp, fd = _create_temp(self.path)
        self.file: IO[Any] = os.fdopen(fd, mode, encoding=encoding)

    def commit(self) -> Path:
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            _publish(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> IO[Any]:
        return self.file

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path` (an existing empty file) for a writer that opens it by name;
    on success it is fsynced and renamed to `path`, on exception removed."""
    path = Path(path)
    tmp, fd = _create_temp(path)
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)  # the writer closed its own handle: fsync through a new one
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with AtomicFile(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with AtomicFile(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent))
