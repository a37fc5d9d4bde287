"""Shared fixtures: generated image folders, an in-process kiln, and real servers over HTTP.

Three ways to talk to kiln, cheapest first:
- `kiln` / `Kiln`: the app in this process through Starlette's TestClient, scheduler off. Jobs
  run only when a test runs them (`kiln.run(job_id)`, in this process, like the CLI does). For
  forms, errors, pages, JSON shapes, owners: everything that needs no worker process.
- `Kiln(..., scheduler=True)` or `live_kiln`: the same with the scheduler on, so jobs run in
  real worker processes (failures, crashes, limits, abort).
- `start_server`: a real `kiln serve` process, for restarts (SIGTERM, start again) and live
  events. Its output goes to a log file whose tail is added to the report of a failing test;
  stopping it also kills any worker it left behind.
Each test gets its own data directory: no test sees another test's jobs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Busy 2-core machines: spinning OpenMP threads make small tensor work 10-25x slower in tests
# (and in the servers and workers the tests start, which inherit this environment).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Starlette's TestClient sends `Host: testserver`, a name kiln refuses unless told (kiln.web.security;
# tests/web/test_security.py checks the refusal with its own settings).
os.environ.setdefault("KILN_ALLOWED_HOSTS", "testserver")

import httpx
import numpy as np
import psutil
import pytest
from PIL import Image

FINISHED = ("Done", "Error", "Aborted", "Interrupted")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_class_folder(
    root: Path, classes: dict[str, int], size: tuple[int, int] = (12, 12), mode: str = "L", seed: int = 0
) -> Path:
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


def wait_status(get: Callable[[], dict[str, Any]], what: str, timeout: float, until: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = get()
        if status.get("status") in until:
            return status
        time.sleep(0.1)
    raise AssertionError(f"{what} still {status} after {timeout} s")


# -- in process ---------------------------------------------------------------------------------
def worker_families(app: Any) -> list[psutil.Process]:
    """The worker processes an app's scheduler started, and their children (found while they live)."""
    found = []
    for worker in list(app.state.scheduler.procs.values()):
        try:
            proc = psutil.Process(worker.pid)
            found += [proc, *proc.children(recursive=True)]
        except psutil.Error:
            pass
    return found


def kill_all(procs: list[psutil.Process]) -> None:
    """Kill what is still running of `procs` (psutil checks that each is still the same process)."""
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


def login(client: Any, username: str, password: str = "") -> Any:
    """Log `client` (a TestClient or httpx.Client) in through POST /login: the session cookie lands in
    its jar. On loopback a username alone does (DIGITS); an account needs its password."""
    data = {"username": username, **({"password": password} if password else {})}
    res = client.post("/login", data=data, follow_redirects=False)
    assert res.status_code == 302, f"login as {username}: {res.status_code} {res.text[:300]}"
    return client


class Kiln:
    """kiln's app in this process over `data_dir`, a TestClient logged in as alice."""

    def __init__(self, data_dir: Path, scheduler: bool = False, **settings: Any) -> None:
        from fastapi.testclient import TestClient

        from kiln.config import Settings
        from kiln.web.app import create_app

        self.data_dir = data_dir
        self.settings = Settings.from_env(data_dir=data_dir, **settings)
        self.app = create_app(self.settings, run_scheduler=scheduler)
        self._TestClient = TestClient
        self.client = self.as_user("alice")
        self.client.__enter__()  # runs the app's lifespan: starts the scheduler when it is on
        self._store: Any = None

    def as_user(self, username: str | None, password: str = "") -> Any:
        """Another client of the same app, logged in as `username` (POST /login), or nobody for None."""
        client = self._TestClient(self.app, follow_redirects=False)
        if username:
            login(client, username, password)
        return client

    @property
    def store(self) -> Any:
        from kiln.store import Store

        if self._store is None:
            self._store = Store(self.settings.db_path)
        return self._store

    def run(self, job_id: str) -> str:
        """Run a queued job to its end in this process, as the CLI does; returns its status."""
        from kiln.jobs.worker import run_job

        return run_job(self.settings, job_id)

    def built_dataset(self, folder: Path, name: str, pct_val: str = "20") -> str:
        """A 28x28 grey dataset from a class folder, created over the API and built in this process."""
        res = self.client.post(
            "/datasets/images/classification.json",
            data={
                "dataset_name": name,
                "folder_train": str(folder),
                "resize_channels": "1",
                "resize_width": "28",
                "resize_height": "28",
                "folder_pct_val": pct_val,
            },
        )
        dataset_id = res.json()["id"]
        assert self.run(dataset_id) == "Done"
        return dataset_id

    def status(self, job_id: str) -> dict[str, Any]:
        return self.client.get(f"/jobs/{job_id}/status").json()

    def wait_job(self, job_id: str, timeout: float = 120, until: tuple[str, ...] = FINISHED) -> dict[str, Any]:
        return wait_status(lambda: self.status(job_id), f"job {job_id}", timeout, until)

    def close(self) -> None:
        if self.client is None:
            return
        left = worker_families(self.app)
        self.client.__exit__(None, None, None)
        self.client = None  # with the scheduler on: stops its workers
        kill_all(left)  # and whatever they left running
        if self._store is not None:
            self._store.close()
            self._store = None


@pytest.fixture
def kiln(tmp_path: Path) -> Iterator[Kiln]:
    """The app in this process over a fresh data dir, no scheduler: nothing runs unless run."""
    app = Kiln(tmp_path / "data")
    yield app
    app.close()


@pytest.fixture
def live_kiln(tmp_path: Path) -> Iterator[Kiln]:
    """The app in this process with its scheduler: jobs run in real worker processes."""
    app = Kiln(tmp_path / "data", scheduler=True)
    yield app
    app.close()


def copy_data_dir(src: Path, dst: Path) -> Path:
    """A private copy of a data dir (SQLite through its backup API, then the job folders)."""
    dst.mkdir(parents=True)
    with sqlite3.connect(src / "kiln.db") as a, sqlite3.connect(dst / "kiln.db") as b:
        a.backup(b)
    a.close()
    b.close()
    shutil.copytree(src / "jobs", dst / "jobs")
    return dst


# -- real servers -------------------------------------------------------------------------------
# One registry however often this file is imported (pytest loads it as `conftest`; tests import
# `tests.conftest`; tests/browser loads it by path): the report hook sees every server started.
_registry = sys.modules.setdefault("_kiln_test_servers", type(sys)("_kiln_test_servers"))
_servers: list[Server] = _registry.__dict__.setdefault("servers", [])
_test_started: list[float] = _registry.__dict__.setdefault("test_started", [0.0])


class Server:
    def __init__(self, url: str, data_dir: Path, proc: subprocess.Popen, log: Path) -> None:
        self.url = url
        self.data_dir = data_dir
        self.proc = proc
        self.log = log
        self.stopped_at: float | None = None
        self.client = httpx.Client(base_url=url, timeout=30)  # logged in as alice once the server answers

    def wait_job(
        self, job_id: str, timeout: float = 120, until: tuple[str, ...] = ("Done", "Error", "Aborted")
    ) -> dict:
        return wait_status(lambda: self.client.get(f"/jobs/{job_id}/status").json(), f"job {job_id}", timeout, until)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"


def start_server(data_dir: Path, env: dict[str, str] | None = None) -> Server:
    """`kiln serve` on a free port, output to a log file beside the data dir, in its own session."""
    port = _free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"{data_dir.name}-server-{port}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kiln", "--data-dir", str(data_dir), "serve", "--port", str(port)],
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", data_dir, proc, log)
    _servers.append(server)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop_server(server)
            raise RuntimeError(f"kiln serve exited with {proc.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/index.json", timeout=2).status_code == 200:
                login(server.client, "alice")
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_server(server)
    raise RuntimeError(f"kiln serve did not answer /index.json within 90 s:\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    """SIGTERM (a graceful shutdown: running jobs become Interrupted), then make sure that the
    server, its process group and every worker it started are gone."""
    if server.stopped_at is not None:
        return
    server.client.close()
    try:
        workers = psutil.Process(server.proc.pid).children(recursive=True)
    except psutil.Error:
        workers = []
    server.proc.terminate()
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(server.proc.pid, signal.SIGKILL)  # the server and anything left in its session
    except (ProcessLookupError, PermissionError):
        pass
    server.proc.wait()
    for worker in workers:  # workers run in sessions of their own
        try:
            worker.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(workers, timeout=5)
    server.stopped_at = time.monotonic()


class ThreadServer:
    """kiln's app served by uvicorn on a thread of this process (its lifespan, so its scheduler and
    real worker processes, included): real HTTP for live events and a browser, with no server
    process to start. Stopping it runs the app's shutdown, then kills any worker left behind."""

    def __init__(self, data_dir: Path, scheduler: bool = True, **settings: Any) -> None:
        import asyncio
        import threading

        import uvicorn

        from kiln.config import Settings
        from kiln.web.app import create_app

        self.data_dir = data_dir
        self.settings = Settings.from_env(data_dir=data_dir, **settings)
        self.app = create_app(self.settings, run_scheduler=scheduler)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_level="warning", timeout_graceful_shutdown=3)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._sock])), name="kiln-test-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the in-thread kiln server did not start")
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=30)
        if self.settings.auth_mode == "loopback":  # with accounts the test logs in whom it needs
            login(self.client, "alice")

    def wait_job(self, job_id: str, timeout: float = 120, until: tuple[str, ...] = FINISHED) -> dict:
        return wait_status(lambda: self.client.get(f"/jobs/{job_id}/status").json(), f"job {job_id}", timeout, until)

    def stop(self) -> None:
        if getattr(self, "client", None) is not None:
            self.client.close()
        left = worker_families(self.app)
        self._server.should_exit = True
        self._thread.join(30)
        self._sock.close()
        kill_all(left)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start real servers (`serve(data_dir, env=...)`); all are stopped after the test."""
    started: list[Server] = []

    def start(data_dir: Path | None = None, env: dict[str, str] | None = None) -> Server:
        started.append(start_server(data_dir or tmp_path / "data", env))
        return started[-1]

    yield start
    for server in started:
        stop_server(server)


def pytest_runtest_setup(item: pytest.Item) -> None:
    _test_started[0] = time.monotonic()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """A failing test's report ends with the log tail of every server it used."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for server in _servers:
        if server.stopped_at is None or server.stopped_at >= _test_started[0]:
            report.sections.append((f"kiln serve log (last lines) {server.url}", server.log_tail()))


def pytest_sessionfinish(session: pytest.Session) -> None:
    for server in _servers:
        stop_server(server)


def edit_text(text: str, old: str, new: str) -> str:
    """``text`` with the first ``old`` replaced; the edit must apply."""
    assert old in text, old
    return text.replace(old, new, 1)


def lab_lenet_text() -> str:
    """The MNIST lab's customized LeNet: 75 and 100 filters, and one more ReLU after pool1, in place."""
    from kiln.networks.prototxt import standard_text

    text = edit_text(standard_text("lenet"), "num_output: 20\n", "num_output: 75\n")
    text = edit_text(text, "num_output: 50\n", "num_output: 100\n")
    relu = 'layer {\n  name: "relu_pool1"\n  type: "ReLU"\n  bottom: "pool1"\n  top: "pool1"\n}\n\n'
    return edit_text(text, 'layer {\n  name: "conv2"', relu + 'layer {\n  name: "conv2"')
