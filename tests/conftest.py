"""Shared fixtures: generated image folders and a real kiln server over HTTP."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

# Busy 2-core machines: spinning OpenMP threads make small tensor work 10-25x slower in tests
# (and in the servers and workers the tests start, which inherit this environment).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import httpx  # noqa: E402
import numpy as np
import pytest
from PIL import Image


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_class_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (12, 12),
                       mode: str = "L", seed: int = 0) -> Path:
    """root/<class>/<i>.png with a class-dependent pattern, so a network can tell them apart."""
    rng = np.random.default_rng(seed)
    for ci, (name, count) in enumerate(sorted(classes.items())):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            h, w = size[1], size[0]
            img = rng.integers(0, 40, (h, w), dtype=np.uint8)
            band = slice(ci * h // max(1, len(classes)), (ci + 1) * h // max(1, len(classes)))
            img[band, :] = 200 + rng.integers(0, 55)
            arr = np.stack([img] * 3, -1) if mode == "RGB" else img
            Image.fromarray(arr).convert(mode).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    def make(classes: dict[str, int] | None = None, **kw) -> Path:
        root = tmp_path / f"images{len(list(tmp_path.iterdir()))}"
        return write_class_folder(root, classes or {"cat": 6, "dog": 6}, **kw)
    return make


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny convolutions on 2 busy cores run many times slower with two OpenMP threads."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Server:
    def __init__(self, url: str, data_dir: Path, proc: subprocess.Popen) -> None:
        self.url = url
        self.data_dir = data_dir
        self.proc = proc
        self.client = httpx.Client(base_url=url, timeout=30, cookies={"username": "alice"})

    def wait_job(self, job_id: str, timeout: float = 120, until: tuple[str, ...] = ("Done", "Error", "Aborted")) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.get(f"/jobs/{job_id}/status").json()
            if status.get("status") in until:
                return status
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} still {status} after {timeout} s")


def start_server(data_dir: Path, env: dict[str, str] | None = None) -> Server:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kiln", "--data-dir", str(data_dir), "serve", "--port", str(port)],
        env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kiln serve exited: {proc.stdout.read()}")
        try:
            if httpx.get(f"{url}/index.json", timeout=2).status_code == 200:
                return Server(url, data_dir, proc)
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("kiln serve did not answer /index.json within 60 s")


def stop_server(server: Server) -> None:
    server.client.close()
    server.proc.terminate()
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("kiln-data"))
    yield srv
    stop_server(srv)
