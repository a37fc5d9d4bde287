"""Uploaded archives unpacked safely: into a fresh folder, every member's path checked.

No absolute paths, no ``..``, no links, at most ``max_members`` members and ``max_bytes`` unpacked
(a zip bomb stops at the cap, whatever the headers claim). A broken, oversized or hostile archive
is an :class:`ArchiveError` with a message for the user.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath

MAX_MEMBERS = 200_000
MAX_BYTES = 8 << 30


class ArchiveError(ValueError):
    """An archive kiln will not unpack; the message says why."""


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise ArchiveError(f"the archive's member {name!r} would land outside its folder")
    return path


def extract_zip(archive: Path, dest: Path, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_BYTES) -> Path:
    """Unpack ``archive`` into ``dest`` (which must not exist yet); returns ``dest``."""
    dest.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > max_members:
                raise ArchiveError(f"the archive has {len(members):,} members; at most {max_members:,}")
            written = 0
            for info in members:
                written = _extract_member(zf, info, dest, written, max_bytes)
    except zipfile.BadZipFile as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise ArchiveError(f"not a readable zip archive ({exc})") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


def _extract_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, written: int, max_bytes: int) -> int:
    path = _safe_name(info.filename)
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"the archive's member {info.filename!r} is a link; kiln does not unpack links")
    target = dest.joinpath(*path.parts)
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return written
    target.parent.mkdir(parents=True, exist_ok=True)
    with zf.open(info) as src, open(target, "xb") as out:
        while block := src.read(1 << 20):
            written += len(block)
            if written > max_bytes:
                raise ArchiveError(f"the archive unpacks to more than {max_bytes >> 20:,} MB")
            out.write(block)
    return written
