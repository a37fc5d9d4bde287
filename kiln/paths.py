"""May kiln read this path? One rule for every path a user gives (dataset folders and lists, every
line of a list, classify paths and folders), and a reader that never reads more than a cap.

    real = check_inside(path, roots)                  # symlinks resolved, inside the data roots
    real = check_readable(path, roots)                # ... and an existing regular file
    real = check_readable(path, roots, kind="dir")    # ... or an existing folder
    data = read_bounded(real, max_bytes)              # a regular file, at most max_bytes

`roots` is `Settings.allowed_roots`: a list of resolved folders, or None for "unrestricted" (a
loopback server with KILN_DATA_ROOTS unset, where the user's own files stay reachable). Even then
only regular files are read (no FIFO that blocks forever, no /dev/zero that never ends) and
never more than the byte cap (KILN_MAX_IMAGE_MB).

A path outside the roots is refused with the same message whether or not it exists, and before
anything outside is looked at, so errors never tell a user what lies outside the roots.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

ROOTS_SETTING = "KILN_DATA_ROOTS (--data-roots)"
SIZE_SETTING = "KILN_MAX_IMAGE_MB"
DEFAULT_MAX_FILE_MB = 64
DEFAULT_MAX_FILE_BYTES = DEFAULT_MAX_FILE_MB << 20

# O_NONBLOCK: opening a FIFO with no writer must not wait for one (it is refused after fstat).
# O_NOFOLLOW: the last component was resolved already; a link swapped in since is refused.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
    stat.S_IFLNK: "a symbolic link",
}


class PathRefused(ValueError):
    """kiln will not read this path; the message says why (never whether something outside exists)."""


def resolve(path: str | os.PathLike[str]) -> Path:
    """The absolute path with every symlink and `..` resolved (components that do not exist are kept).

    Raises PathRefused for a path no file system can hold (a NUL byte, an empty path).
    """
    text = os.fspath(path)
    if not text or "\x00" in text:
        raise PathRefused("is not a valid path" if text else "is empty")
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(text))))


def inside(real: Path, roots: Iterable[Path] | None) -> bool:
    """True when the resolved path lies in one of the roots (None: unrestricted)."""
    if roots is None:
        return True
    return any(real == root or real.is_relative_to(root) for root in roots)


OUTSIDE = "is outside the folders this server may read (setting KILN_DATA_ROOTS)"  # short form, per line


def outside_message(roots: Iterable[Path]) -> str:
    return (
        "is outside the folders this server may read; allowed: "
        f"{', '.join(str(r) for r in roots)} (setting {ROOTS_SETTING})"
    )


def check_inside(path: str | os.PathLike[str], roots: list[Path] | None) -> Path:
    """The resolved path when it lies inside the roots; raises PathRefused otherwise.

    Looks at nothing but the path's own components, so the answer for a path outside the roots is
    the same whether or not it exists.
    """
    real = resolve(path)
    if not inside(real, roots):
        assert roots is not None
        raise PathRefused(outside_message(roots))
    return real


def describe_mode(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def check_readable(path: str | os.PathLike[str], roots: list[Path] | None, kind: str = "file") -> Path:
    """The resolved path of an existing regular file (kind="file") or folder (kind="dir") inside the
    roots; raises PathRefused naming what is wrong."""
    real = check_inside(path, roots)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise PathRefused("does not exist") from None
    except OSError as exc:
        raise PathRefused(f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if kind == "dir":
        if not stat.S_ISDIR(st.st_mode):
            raise PathRefused("is not a folder")
    elif not stat.S_ISREG(st.st_mode):
        raise PathRefused(f"is not a regular file ({describe_mode(st.st_mode)})")
    return real


def _too_large(size: int, max_bytes: int) -> PathRefused:
    return PathRefused(
        f"is {size / 2**20:.1f} MB, over the limit of {max_bytes / 2**20:g} MB per file (setting {SIZE_SETTING})"
    )


def open_bounded(path: str | os.PathLike[str], max_bytes: int) -> BinaryIO:
    """Open a regular file for reading, refusing FIFOs, devices, folders and files over max_bytes.

    The path is resolved first and its last component opened without following links, so what is
    opened is the file that was checked. Never blocks on a FIFO. Raises PathRefused, or OSError
    (FileNotFoundError, PermissionError) for a file that cannot be opened.
    """
    real = resolve(path)
    try:
        fd = os.open(real, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component became a link after it was resolved
            raise PathRefused("is a symbolic link that changed while it was read") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PathRefused(f"is not a regular file ({describe_mode(st.st_mode)})")
        if st.st_size > max_bytes:
            raise _too_large(st.st_size, max_bytes)
        if _OPEN_FLAGS & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_opened(f: BinaryIO) -> bytes:
    """All of a file that open_bounded opened: the size it had then, and not a byte more (a file
    that grows meanwhile, or a /proc file that claims 0 bytes, is refused rather than read on)."""
    size = os.fstat(f.fileno()).st_size
    data = f.read(size + 1)  # the buffer is the file's size, not the cap
    if len(data) > size:
        raise PathRefused("changed size while it was read")
    return data


def read_bounded(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The whole content of a regular file of at most max_bytes (see open_bounded)."""
    with open_bounded(path, max_bytes) as f:
        return read_opened(f)


def read_text_bounded(path: str | os.PathLike[str], max_bytes: int) -> str:
    """A text file (a list, a labels file) as read_bounded, decoded as UTF-8 with replacement."""
    return read_bounded(path, max_bytes).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class ReadPolicy:
    """What a job may read: images and image folders inside `roots` (None: unrestricted), lists
    there or in `list_roots_extra` (kiln's own folders, e.g. the job folder holding uploaded lists),
    and never more than `max_bytes` from one file."""

    roots: list[Path] | None = None
    max_bytes: int = DEFAULT_MAX_FILE_BYTES
    list_roots_extra: tuple[Path, ...] = ()

    @property
    def list_roots(self) -> list[Path] | None:
        return None if self.roots is None else [*self.roots, *self.list_roots_extra]
