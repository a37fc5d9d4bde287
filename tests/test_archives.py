"""Archives unpacked safely: zip and tar (plain, gz, bz2, xz) accepted; hostile, oversized and broken ones refused."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from kiln.archives import ArchiveError, extract_archive, extract_zip, flatten_single_folder

FILES = {"model/info.json": b'{"a": 1}', "model/sub/deep/w.bin": bytes(range(256)) * 40, "model/labels.txt": b"a\nb\n"}
ZEROS = 50 << 20  # a bomb: 50 MB of zeros, a few tens of KB packed


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w:gz", **kw) -> Path:
    """A tar of ``(name, data)`` files and ready-made TarInfo members (links, devices)."""
    with tarfile.open(path, mode, **kw) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tf.addfile(info, io.BytesIO(member[1]))
    return path


def make_zip(path: Path, members: list[zipfile.ZipInfo | tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for member in members:
            if isinstance(member, zipfile.ZipInfo):
                zf.writestr(member, b"target.txt")
            else:
                zf.writestr(member[0], member[1])
    return path


def tar_member(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix: the mode below is read
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(archive: Path, dest: Path, match: str, **caps: int) -> ArchiveError:
    with pytest.raises(ArchiveError, match=match) as err:
        extract_archive(archive, dest, **caps)
    assert not dest.exists(), "the half-made folder is removed"
    return err.value


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_a_tar_with_nested_folders_unpacks_whole(tmp_path: Path, mode: str) -> None:
    archive = make_tar(tmp_path / "m.tar", [tar_member("model", tarfile.DIRTYPE), *FILES.items()], mode=mode)
    dest = extract_archive(archive, tmp_path / "out" / "x")
    assert dest == tmp_path / "out" / "x" and tree(dest) == FILES
    assert flatten_single_folder(dest) == dest / "model"


def test_a_zip_with_nested_folders_unpacks_whole_and_extract_zip_still_works(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "m.zip", [zipfile.ZipInfo("model/"), *FILES.items(), ("__MACOSX/._x", b"")])
    dest = extract_archive(archive, tmp_path / "x")
    assert tree(dest) == {**FILES, "__MACOSX/._x": b""}
    assert flatten_single_folder(dest) == dest / "model", "Finder's __MACOSX folder does not count"
    assert tree(extract_zip(archive, tmp_path / "y")) == tree(dest)
    with pytest.raises(ArchiveError, match="zip archive is damaged"):
        extract_zip(make_tar(tmp_path / "t.tgz", list(FILES.items())), tmp_path / "z")


def test_flatten_keeps_an_archive_of_several_entries(tmp_path: Path) -> None:
    flat = extract_archive(make_zip(tmp_path / "f.zip", [("info.json", b"{}"), ("w/a.bin", b"1")]), tmp_path / "f")
    assert flatten_single_folder(flat) == flat
    one_file = extract_archive(make_tar(tmp_path / "o.tgz", [("info.json", b"{}")]), tmp_path / "o")
    assert flatten_single_folder(one_file) == one_file


@pytest.mark.parametrize("name", ["../escape.txt", "a/../../escape.txt", "/tmp/escape.txt", "C:/escape.txt"])
def test_paths_leaving_the_folder_are_refused_tar_and_zip(tmp_path: Path, name: str) -> None:
    tar = make_tar(tmp_path / "s.tgz", [("ok.txt", b"fine"), (name, b"x")])
    assert f"member {name!r} would land outside its folder" in str(refused(tar, tmp_path / "t", "outside"))
    zip_ = make_zip(tmp_path / "s.zip", [("ok.txt", b"fine"), (name, b"x")])
    refused(zip_, tmp_path / "z", "outside")
    assert not (tmp_path / "escape.txt").exists() and not Path("/tmp/escape.txt").exists()


def test_a_zip_slip_written_with_backslashes_is_refused(tmp_path: Path) -> None:
    refused(make_zip(tmp_path / "b.zip", [("..\\..\\escape.txt", b"x")]), tmp_path / "z", "outside")


@pytest.mark.parametrize(
    "member",
    [
        tar_member("ln", tarfile.SYMTYPE, "/etc/passwd"),
        tar_member("inside", tarfile.SYMTYPE, "ok.txt"),
        tar_member("hard", tarfile.LNKTYPE, "ok.txt"),
    ],
    ids=["symlink-out", "symlink-in", "hardlink"],
)
def test_tar_links_are_refused_even_pointing_inside(tmp_path: Path, member: tarfile.TarInfo) -> None:
    archive = make_tar(tmp_path / "l.tgz", [("ok.txt", b"fine"), member])
    assert f"member {member.name!r} is a link" in str(refused(archive, tmp_path / "x", "link"))


def test_zip_symlinks_are_refused(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "l.zip", [("ok.txt", b"fine"), zip_symlink("ln")])
    assert "member 'ln' is a link" in str(refused(archive, tmp_path / "x", "link"))


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_devices_and_pipes_are_refused(tmp_path: Path, kind: bytes) -> None:
    refused(make_tar(tmp_path / "d.tar", [tar_member("dev", kind)], mode="w"), tmp_path / "x", "'dev' is a device")


def test_a_zip_bomb_stops_at_the_byte_cap(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bomb.zip", [("zeros.bin", bytes(ZEROS))])
    assert archive.stat().st_size < 200_000
    error = refused(archive, tmp_path / "x", "unpacks to more than 1 MB", max_bytes=1 << 20)
    assert "'zeros.bin'" in str(error)


def test_a_tar_gz_bomb_stops_at_the_byte_cap(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "bomb.tgz", [("zeros.bin", bytes(ZEROS))])
    assert archive.stat().st_size < 200_000
    refused(archive, tmp_path / "x", r"more than 1 MB \(at member 'zeros.bin'\)", max_bytes=1 << 20)


def test_the_byte_cap_counts_all_members_together(tmp_path: Path) -> None:
    members = [(f"f{i}.bin", bytes(400)) for i in range(3)]
    refused(make_tar(tmp_path / "m.tgz", members), tmp_path / "t", "'f2.bin'", max_bytes=1000)
    refused(make_zip(tmp_path / "m.zip", members), tmp_path / "z", "'f2.bin'", max_bytes=1000)
    assert len(tree(extract_archive(tmp_path / "m.tgz", tmp_path / "ok", max_bytes=1200))) == 3


def test_a_huge_extended_tar_header_is_refused_before_it_is_read(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "h.tgz", [("a.txt", b"x")], format=tarfile.PAX_FORMAT)
    assert tree(extract_archive(archive, tmp_path / "ok")) == {"a.txt": b"x"}
    with tarfile.open(tmp_path / "p.tgz", "w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("a.txt")
        info.pax_headers = {"comment": "x" * (1 << 20)}
        tf.addfile(info, io.BytesIO(b""))
    refused(tmp_path / "p.tgz", tmp_path / "x", "a header of 1,0")


@pytest.mark.parametrize("kind", ["tgz", "zip"])
def test_too_many_members(tmp_path: Path, kind: str) -> None:
    members = [(f"d/{i}.txt", b"x") for i in range(11)]
    archive = make_tar(tmp_path / "n.tgz", members) if kind == "tgz" else make_zip(tmp_path / "n.zip", members)
    refused(archive, tmp_path / "x", "at most 10", max_members=10)
    assert len(tree(extract_archive(archive, tmp_path / "ok", max_members=11))) == 11


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_a_truncated_tar_is_refused(tmp_path: Path, mode: str) -> None:
    members = [(f"{i}.bin", os.urandom(3000)) for i in range(4)]
    data = make_tar(tmp_path / "t.tar", members, mode=mode).read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) * 2 // 3])
    refused(tmp_path / "cut.tar", tmp_path / "x", "damaged or truncated")


def test_a_plain_tar_cut_between_members_is_refused(tmp_path: Path) -> None:
    """tarfile alone takes a missing header for the end of the archive and unpacks a part silently."""
    data = make_tar(tmp_path / "t.tar", [("a.bin", bytes(512)), ("b.bin", bytes(512))], mode="w").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:1024])  # a's header and data; b's header gone
    refused(tmp_path / "cut.tar", tmp_path / "x", "damaged or truncated after member 'a.bin'")


def test_a_tar_gz_with_a_bad_checksum_is_refused(tmp_path: Path) -> None:
    data = bytearray(make_tar(tmp_path / "t.tgz", [("a.txt", b"hello")]).read_bytes())
    data[-8] ^= 0xFF  # gzip's CRC-32 of the whole tar, checked only at the end
    (tmp_path / "bad.tgz").write_bytes(bytes(data))
    refused(tmp_path / "bad.tgz", tmp_path / "x", "damaged or truncated")


def test_a_truncated_zip_is_refused(tmp_path: Path) -> None:
    data = make_zip(tmp_path / "t.zip", [("a.bin", os.urandom(5000))]).read_bytes()
    (tmp_path / "cut.zip").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "cut.zip", tmp_path / "x", "zip archive is damaged or truncated")


def test_a_zip_member_with_a_bad_crc_is_refused_naming_it(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "c.zip", "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", b"hello world")
    data = (tmp_path / "c.zip").read_bytes().replace(b"hello world", b"HELLO world")
    (tmp_path / "c.zip").write_bytes(data)
    refused(tmp_path / "c.zip", tmp_path / "x", "damaged or truncated at member 'a.txt'")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (os.urandom(4096), "not a zip or tar archive"),
        (b"", "not a zip or tar archive"),
        (b"just some text\n" * 100, "not a zip or tar archive"),
        (b"\x1f\x8b" + os.urandom(500), "damaged or truncated"),
        (b"BZh9" + bytes(100), "damaged or truncated"),
    ],
)
def test_a_file_that_is_not_an_archive_is_refused(tmp_path: Path, data: bytes, match: str) -> None:
    (tmp_path / "junk").write_bytes(data)
    refused(tmp_path / "junk", tmp_path / "x", match)


def test_an_empty_archive_and_a_member_twice_are_refused(tmp_path: Path) -> None:
    refused(make_tar(tmp_path / "e.tar", [], mode="w"), tmp_path / "x", "the archive is empty")
    refused(make_zip(tmp_path / "e.zip", []), tmp_path / "y", "the archive is empty")
    twice = make_tar(tmp_path / "2.tgz", [("a.txt", b"1"), ("a.txt", b"2")])
    refused(twice, tmp_path / "z", "'a.txt' is in it twice")


def test_an_existing_dest_is_an_error_and_is_left_alone(tmp_path: Path) -> None:
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        extract_archive(make_zip(tmp_path / "a.zip", [("keep.txt", b"theirs")]), dest)
    assert (dest / "keep.txt").read_text() == "mine"
