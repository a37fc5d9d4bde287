"""Uploaded archives unpacked safely: into a fresh folder, member by member, every path checked.

:func:`extract_archive` reads a zip or a tar (plain, gzip, bzip2 or xz), told apart by content.
No absolute paths, no ``..``, no drive letters, no links, devices or pipes; at most
``max_members`` members and ``max_bytes`` unpacked, counted as the bytes stream out (a bomb stops
at the cap, whatever the headers claim). A broken, oversized or hostile archive is an
:class:`ArchiveError` whose message names the member, and the half-made folder is removed.
Never ``extractall``: each member's data is copied into a new file with ``open(..., "xb")``, so
nothing on disk is followed, overwritten or given the archive's permissions.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Protocol, Self

MAX_MEMBERS = 200_000
MAX_BYTES = 8 << 30

_BLOCK = 1 << 20
_MAX_HEADER = 64 << 10  # a pax or GNU long-name header; tarfile reads it whole into memory
_HEADER_ALLOWANCE = 16 << 10  # per tar member: its header, padding and extended headers
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# errors that decoding a damaged or truncated stream raises (gzip's are OSError, bz2's too)
_DECODE_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, tarfile.TarError)


class ArchiveError(ValueError):
    """An archive kiln will not unpack; the message says why."""


class _Broken(Exception):
    """The archive's bytes did not decode; caught and reworded with the member it happened in."""


def extract_archive(archive: Path, dest: Path, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_BYTES) -> Path:
    """Unpack a zip or tar ``archive`` into ``dest`` (which must not exist yet); returns ``dest``.

    Raises :class:`ArchiveError` for a hostile, oversized, broken or unknown archive; ``dest`` is
    then removed.
    """
    with open(archive, "rb") as f:
        head = f.read(6)
    if head.startswith(_ZIP_MAGIC):
        return _into(dest, lambda: _unzip(archive, dest, max_members, max_bytes))
    return _into(dest, lambda: _untar(archive, dest, max_members, max_bytes))


def extract_zip(archive: Path, dest: Path, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_BYTES) -> Path:
    """Unpack a zip ``archive`` into ``dest`` (which must not exist yet); returns ``dest``."""
    return _into(dest, lambda: _unzip(archive, dest, max_members, max_bytes))


def flatten_single_folder(dest: Path) -> Path:
    """The one folder an archive wraps everything in (``model/info.json``), else ``dest`` itself.

    Finder's ``__MACOSX`` folder and hidden files (``.DS_Store``) do not count as entries.
    """
    entries = [p for p in dest.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return dest


def _into(dest: Path, unpack: Callable[[], None]) -> Path:
    dest.mkdir(parents=True)  # outside the try: a folder that was already there is not ours to remove
    try:
        unpack()
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return dest


# --- zip ---------------------------------------------------------------------------------------


def _unzip(archive: Path, dest: Path, max_members: int, max_bytes: int) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ArchiveError(f"the zip archive is damaged or truncated ({exc})") from None
    with zf:
        members = zf.infolist()
        if len(members) > max_members:
            raise ArchiveError(f"the archive has {len(members):,} members; at most {max_members:,}")
        if not members:
            raise ArchiveError("the archive is empty")
        written = 0
        for info in members:
            written = _zip_member(zf, info, dest, written, max_bytes)


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, written: int, max_bytes: int) -> int:
    name = info.filename
    path = _safe_name(name)
    kind = stat.S_IFMT(info.external_attr >> 16)
    _check_kind(name, link=kind == stat.S_IFLNK, device=kind in _DEVICES, other=kind not in (0, *_PLAIN))
    if info.is_dir() or kind == stat.S_IFDIR:
        _make_dir(dest, path, name)
        return written
    if info.flag_bits & 0x1:
        raise ArchiveError(f"the archive's member {name!r} is encrypted; kiln cannot unpack it")
    try:
        src = zf.open(info)
    except NotImplementedError as exc:
        raise ArchiveError(f"the archive's member {name!r} uses a compression kiln cannot read ({exc})") from None
    except _DECODE_ERRORS as exc:
        raise ArchiveError(f"the archive is damaged or truncated at member {name!r} ({exc})") from None
    with src:
        return _copy(src, dest, path, name, written, max_bytes)


# --- tar ---------------------------------------------------------------------------------------


class _TarInfo(tarfile.TarInfo):
    """tarfile's header reader, refusing before it reads: an oversized extended header (which it
    would hold in memory whole), a GNU sparse member (whose map it would read block by block),
    and a header that is cut off or garbled after the first (which it would take for the end)."""

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        info = super().frombuf(buf, encoding, errors)
        if info.type in _EXTENDED and info.size > _MAX_HEADER:
            raise ArchiveError(f"the archive has a header of {info.size:,} bytes; at most {_MAX_HEADER >> 10} KB")
        if info.type == tarfile.GNUTYPE_SPARSE:
            raise ArchiveError(f"the archive's member {info.name!r} is a sparse file; kiln unpacks only plain files")
        return info

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> Self:
        try:
            return super().fromtarfile(tf)
        except tarfile.HeaderError as exc:
            # a block of zeros is the archive's end; a bad first header, no archive (tarfile.open says so)
            if type(exc).__name__ == "EOFHeaderError" or tf.offset == 0:
                raise
            raise _Broken(f"{exc} at byte {tf.offset:,}") from None


_EXTENDED = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class _Reader(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class _TarStream:
    """The decompressed tar stream as tarfile reads it: decoding errors become :class:`_Broken`,
    and everything read (headers and padding too, not only members' data) stays under a budget."""

    def __init__(self, raw: _Reader, max_bytes: int) -> None:
        self._raw = raw
        self.max_bytes = max_bytes
        self.limit = max_bytes + 4 * _HEADER_ALLOWANCE + _MAX_HEADER
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        try:
            data = self._raw.read(size)
        except _DECODE_ERRORS as exc:
            raise _Broken(str(exc) or type(exc).__name__) from None
        self.total += len(data)
        if self.total > self.limit:
            raise ArchiveError(f"the archive unpacks to more than {_size(self.max_bytes)}")
        return data


def _decompressed(raw: IO[bytes]) -> tuple[_Reader, bool]:
    """The tar stream inside ``raw``, and whether it was compressed (gzip, bzip2, xz or none)."""
    head = raw.read(6)
    raw.seek(0)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb"), True
    if head.startswith(b"BZh"):
        return bz2.BZ2File(raw), True
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw), True
    return raw, False


def _untar(archive: Path, dest: Path, max_members: int, max_bytes: int) -> None:
    with open(archive, "rb") as raw:
        inner, compressed = _decompressed(raw)
        stream = _TarStream(inner, max_bytes)
        try:
            tf = tarfile.open(fileobj=stream, mode="r|", tarinfo=_TarInfo)  # type: ignore[call-overload]  # noqa: SIM115
        except _Broken as exc:
            raise ArchiveError(f"the archive is damaged or truncated ({exc})") from None
        except (tarfile.TarError, RecursionError):
            raise ArchiveError(
                "the file is not a zip or tar archive (a tar may be compressed with gzip, bzip2 or xz)"
            ) from None
        with tf:
            _tar_members(tf, stream, dest, max_members)
            if compressed:  # read to the end: a truncated stream or a bad checksum shows only there
                _read_to_end(stream)


def _tar_members(tf: tarfile.TarFile, stream: _TarStream, dest: Path, max_members: int) -> None:
    count, written, name = 0, 0, ""
    while True:
        try:
            member = tf.next()
        except (tarfile.TarError, _Broken, RecursionError) as exc:
            where = f" after member {name!r}" if name else ""
            raise ArchiveError(f"the archive is damaged or truncated{where} ({exc})") from None
        if member is None:
            break
        count += 1
        if count > max_members:
            raise ArchiveError(f"the archive has more than {max_members:,} members; at most {max_members:,}")
        stream.limit += _HEADER_ALLOWANCE
        name = member.name
        written = _tar_member(tf, member, dest, written, stream.max_bytes)
    if not count:
        raise ArchiveError("the archive is empty")


def _tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, written: int, max_bytes: int) -> int:
    name = member.name
    path = _safe_name(name)
    device = member.ischr() or member.isblk() or member.isfifo()
    plain = (member.isreg() and not member.issparse()) or member.isdir()
    _check_kind(name, link=member.issym() or member.islnk(), device=device, other=not plain)
    if member.isdir():
        _make_dir(dest, path, name)
        return written
    src = tf.extractfile(member)
    assert src is not None  # a regular member always has a file
    with src:
        return _copy(src, dest, path, name, written, max_bytes)


def _read_to_end(stream: _TarStream) -> None:
    try:
        while stream.read(_BLOCK):
            pass
    except _Broken as exc:
        raise ArchiveError(f"the archive is damaged or truncated at its end ({exc})") from None


# --- shared ------------------------------------------------------------------------------------

_DEVICES = (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK)
_PLAIN = (stat.S_IFREG, stat.S_IFDIR)


def _safe_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]) or "\0" in name:
        raise ArchiveError(f"the archive's member {name!r} would land outside its folder")
    return path


def _check_kind(name: str, link: bool, device: bool, other: bool) -> None:
    if link:
        raise ArchiveError(f"the archive's member {name!r} is a link; kiln does not unpack links")
    if device:
        raise ArchiveError(f"the archive's member {name!r} is a device or a pipe; kiln unpacks only files and folders")
    if other:
        raise ArchiveError(f"the archive's member {name!r} is not a plain file or folder; kiln unpacks only those")


def _make_dir(dest: Path, path: PurePosixPath, name: str) -> None:
    try:
        dest.joinpath(*path.parts).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(f"the archive's member {name!r} cannot be unpacked ({exc.strerror})") from None


def _copy(src: IO[bytes], dest: Path, path: PurePosixPath, name: str, written: int, max_bytes: int) -> int:
    """Stream one member into a new file, counting bytes as they come; the new total."""
    if not path.parts:
        raise ArchiveError(f"the archive's member {name!r} has no file name")
    target = dest.joinpath(*path.parts)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = open(target, "xb")  # noqa: SIM115 (a with below; open errors told apart from write errors)
    except FileExistsError:
        raise ArchiveError(f"the archive's member {name!r} is in it twice") from None
    except OSError as exc:
        raise ArchiveError(f"the archive's member {name!r} cannot be unpacked ({exc.strerror})") from None
    with out:
        while True:
            try:  # at most one byte past the cap is ever decoded
                block = src.read(min(_BLOCK, max_bytes - written + 1))
            except (*_DECODE_ERRORS, _Broken) as exc:
                raise ArchiveError(f"the archive is damaged or truncated at member {name!r} ({exc})") from None
            if not block:
                return written
            written += len(block)
            if written > max_bytes:
                raise ArchiveError(f"the archive unpacks to more than {_size(max_bytes)} (at member {name!r})")
            out.write(block)


def _size(n: int) -> str:
    for unit, shift in (("GB", 30), ("MB", 20), ("KB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):,.4g} {unit}"
    return f"{n:,} bytes"
