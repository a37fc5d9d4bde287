"""kiln.paths: the one rule for "may kiln read this user-given path", and the bounded reader."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kiln import paths
from kiln.config import Settings
from kiln.paths import PathRefused, check_inside, check_readable, read_bounded


def finishes(fn: Callable[[], Any], timeout: float = 10) -> Any:
    """fn() on a thread; fails the test (instead of hanging it) when it has not returned in time."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed back to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still blocked after {timeout} s"
    if "error" in out:
        raise out["error"]
    return out.get("value")


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """allowed/ (the root) with a file, outside/ beside it with a secret, and links between them."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    (allowed / "sub" / "a.png").write_bytes(b"inside")
    (outside / "secret.txt").write_bytes(b"outside")
    os.symlink(outside / "secret.txt", allowed / "to_secret.png")
    os.symlink(outside, allowed / "to_outside")
    os.symlink(allowed / "sub" / "a.png", allowed / "to_a.png")
    return {"root": allowed, "outside": outside}


def test_inside_the_roots_is_allowed_and_resolved(tree: dict[str, Path]) -> None:
    roots = [tree["root"]]
    assert check_readable(tree["root"] / "sub" / "a.png", roots) == tree["root"] / "sub" / "a.png"
    assert check_readable(tree["root"] / "sub" / ".." / "sub" / "a.png", roots) == tree["root"] / "sub" / "a.png"
    # a link that stays inside is followed
    assert check_readable(tree["root"] / "to_a.png", roots) == tree["root"] / "sub" / "a.png"
    assert check_readable(tree["root"] / "sub", roots, kind="dir") == tree["root"] / "sub"


@pytest.mark.parametrize(
    "given",
    [
        "{root}/../outside/secret.txt",  # traversal
        "{root}/sub/../../outside/secret.txt",
        "{outside}/secret.txt",  # absolute, outside
        "{root}/to_secret.png",  # a link inside the roots to a file outside
        "{root}/to_outside/secret.txt",  # a link inside the roots to a folder outside
        "/etc/passwd",
    ],
)
def test_outside_the_roots_is_refused(tree: dict[str, Path], given: str) -> None:
    path = given.format(root=tree["root"], outside=tree["outside"])
    with pytest.raises(PathRefused, match="outside the folders this server may read"):
        check_readable(path, [tree["root"]])
    with pytest.raises(PathRefused, match="outside"):
        check_inside(path, [tree["root"]])


def test_outside_says_the_same_whether_or_not_the_file_exists(tree: dict[str, Path]) -> None:
    roots = [tree["root"]]
    messages = set()
    for name in ("secret.txt", "no-such-file.txt"):
        with pytest.raises(PathRefused) as refused:
            check_readable(tree["outside"] / name, roots)
        messages.add(str(refused.value))
    assert len(messages) == 1, messages


def test_unrestricted_reads_the_users_own_files_but_only_regular_ones(tree: dict[str, Path]) -> None:
    assert check_readable(tree["outside"] / "secret.txt", None) == tree["outside"] / "secret.txt"
    assert check_readable(tree["root"] / "to_secret.png", None) == tree["outside"] / "secret.txt"
    with pytest.raises(PathRefused, match="character device"):
        check_readable("/dev/zero", None)
    with pytest.raises(PathRefused, match="a folder"):
        check_readable(tree["root"], None)
    with pytest.raises(PathRefused, match="is not a folder"):
        check_readable(tree["root"] / "sub" / "a.png", None, kind="dir")
    with pytest.raises(PathRefused, match="does not exist"):
        check_readable(tree["root"] / "nothing.png", None)
    with pytest.raises(PathRefused, match="not a valid path"):
        check_readable("/tmp/a\x00b", None)


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(PathRefused, match="FIFO"):
        finishes(lambda: check_readable(fifo, [tmp_path]))
    with pytest.raises(PathRefused, match="FIFO"):
        finishes(lambda: read_bounded(fifo, 1 << 20))  # no writer: a plain open() would wait forever


def test_devices_are_never_read(tmp_path: Path) -> None:
    with pytest.raises(PathRefused, match="character device"):
        finishes(lambda: read_bounded("/dev/zero", 1 << 20))  # would never end
    os.symlink("/dev/zero", tmp_path / "zero.png")
    with pytest.raises(PathRefused, match="character device"):
        finishes(lambda: read_bounded(tmp_path / "zero.png", 1 << 20))


def test_read_bounded_caps_the_bytes(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 1000)
    assert read_bounded(path, 1000) == b"x" * 1000
    with pytest.raises(PathRefused, match="KILN_MAX_IMAGE_MB"):
        read_bounded(path, 999)
    os.symlink(path, tmp_path / "link.bin")  # a link given by the user is resolved, then opened
    assert read_bounded(tmp_path / "link.bin", 1000) == b"x" * 1000
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "missing.bin", 1000)


def test_the_setting_reaches_worker_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers build their Settings from the environment: the scheduler hands them worker_env()."""
    server = Settings.from_env(data_dir=tmp_path, data_roots=f"{tmp_path}/a{os.pathsep}{tmp_path}/b", max_image_mb=3)
    assert server.max_file_bytes == 3 << 20
    for key, value in server.worker_env().items():
        monkeypatch.setenv(key, value)
    worker = Settings.from_env(data_dir=tmp_path)
    assert worker.allowed_roots == server.allowed_roots
    assert worker.max_file_bytes == server.max_file_bytes
    monkeypatch.setenv("KILN_DATA_ROOTS", "")
    assert Settings.from_env(data_dir=tmp_path).allowed_roots is None


def test_default_cap_is_64_mb() -> None:
    assert Settings().max_file_bytes == paths.DEFAULT_MAX_FILE_BYTES == 64 << 20
