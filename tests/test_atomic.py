"""kiln.atomic: complete content or nothing, no temp files left, file and folder fsynced."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from kiln import atomic
from kiln.atomic import (
    AtomicFile,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    remove_leftover_temps,
)


def test_writes_complete_content_and_leave_no_temp(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_write_json(tmp_path / "sub" / "c.json", {"v": [1, 2]})  # missing folders are made
    with AtomicFile(tmp_path / "d.npy") as f:
        np.save(f, np.arange(3))  # a path would get ".npy" appended by NumPy; a file object does not
    with atomic_path(tmp_path / "e.bin") as tmp:
        tmp.write_bytes(b"by path")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "sub" / "c.json").read_text()) == {"v": [1, 2]}
    assert (tmp_path / "sub" / "c.json").read_text() == json.dumps({"v": [1, 2]}, indent=1)
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), np.arange(3))
    assert (tmp_path / "e.bin").read_bytes() == b"by path"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.bin", "c.json", "d.npy", "e.bin", "sub"]


def test_permissions_follow_the_umask_not_mkstemp(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "trunc')
            raise OSError("disk full")
    with pytest.raises(ValueError):
        with AtomicFile(target, "w") as f:
            f.write('{"v": 3')
            raise ValueError("bad value")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_no_partial_file_is_visible_while_writing(tmp_path: Path) -> None:
    target = tmp_path / "data.u8"
    stream = AtomicFile(target, "w+b")
    stream.file.write(b"first half")
    stream.file.flush()
    assert not target.exists()
    stream.file.write(b", second half")
    stream.commit()
    assert target.read_bytes() == b"first half, second half"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"first half, second half"
    assert target.read_bytes() == b"new"
    stream = AtomicFile(tmp_path / "gone.u8")
    stream.file.write(b"abandoned")
    stream.discard()
    assert [p.name for p in tmp_path.iterdir()] == ["data.u8"]


def _by_path(path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("x")


def _streamed(path: Path) -> None:
    stream = AtomicFile(path, "w")
    stream.file.write("x")
    stream.commit()


@pytest.mark.parametrize(
    "write",
    [
        lambda p: atomic_write_text(p, "x"),
        lambda p: atomic_write_json(p, "x"),
        lambda p: atomic_write_bytes(p, b"x"),
        _by_path,
        _streamed,
    ],
    ids=["text", "json", "bytes", "path", "stream"],
)
def test_file_then_folder_are_fsynced_around_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, write) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            assert st.st_ino == tmp_path.stat().st_ino  # the target's own folder
            events.append("fsync folder")
        else:
            events.append("fsync file")
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    monkeypatch.setattr(atomic.os, "replace", replace)
    write(tmp_path / "out")
    assert events == ["fsync file", "replace", "fsync folder"]
    assert "x" in (tmp_path / "out").read_text()


def test_leftovers_of_a_killed_writer_can_be_removed(tmp_path: Path) -> None:
    stream = AtomicFile(tmp_path / "train.u8")  # never committed nor discarded: the process died
    stream.file.write(b"half")
    stream.file.close()
    (tmp_path / ".hidden.tmp").write_text("not ours")
    (tmp_path / "keep.u8").write_text("done")
    assert remove_leftover_temps(tmp_path) == [stream.tmp]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden.tmp", "keep.u8"]
