"""Job life cycle: recovery after a crash, restart, abort, and the CLI sharing jobs with the server."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import start_server, stop_server, write_class_folder
from kiln.config import Settings
from kiln.datasets.spec import DatasetSpec
from kiln.jobs.scheduler import Scheduler
from kiln.store import Store


def _spec(folder: Path, **kw) -> dict:
    values = {"dataset_name": "d", "folder_train": str(folder), "resize_width": 8, "resize_height": 8, **kw}
    return DatasetSpec(**values).to_dict()


def test_store_status_history_and_claim(tmp_path: Path) -> None:
    store = Store(tmp_path / "kiln.db")
    job_id = store.create_job("dataset", "d", {"spec": {}}, "alice")
    assert store.set_status(job_id, "Running", expect=("Initialized",), pid=1)
    assert not store.set_status(job_id, "Running", expect=("Initialized",))   # someone else claimed it
    store.set_progress(job_id, 0.5, "half")
    store.set_status(job_id, "Done")
    job = store.get_job(job_id)
    assert job.progress == 1.0 and job.finished and job.pid is None
    assert [h["status"] for h in store.history(job_id)] == ["Initialized", "Running", "Done"]


def test_interrupted_job_recovers_and_restarts(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "imgs", {"a": 4, "b": 4})
    data = tmp_path / "data"
    store = Store(data / "kiln.db")
    job_id = store.create_job("dataset", "d", {"spec": _spec(folder)}, "alice")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.set_status(job_id, "Running", pid=dead.pid, pid_started=time.time() - 100)  # a worker that died
    server = start_server(data)
    try:
        assert server.client.get(f"/jobs/{job_id}/status").json()["status"] == "Interrupted"
        assert server.client.post(f"/datasets/{job_id}/resume").status_code == 200
        assert server.wait_job(job_id)["status"] == "Done"
        history = [h["status"] for h in server.client.get(f"/jobs/{job_id}/state.json").json()["history"]]
        assert history[-4:] == ["Interrupted", "Initialized", "Running", "Done"]
    finally:
        stop_server(server)


def test_abort_running_worker(tmp_path: Path) -> None:
    """SIGTERM reaches the worker, which stops at its next check and records Aborted."""
    folder = write_class_folder(tmp_path / "imgs", {"a": 400, "b": 400}, size=(64, 64))
    settings = Settings.from_env(data_dir=tmp_path / "data")
    store = Store(settings.db_path)
    job_id = store.create_job("dataset", "d", {"spec": _spec(folder, resize_width=256, resize_height=256,
                                                             encoding="png")}, "alice")
    sched = Scheduler(settings, poll_s=0.05)
    sched.tick()
    deadline = time.monotonic() + 30
    while store.get_job(job_id).progress < 0.05 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.get_job(job_id).status == "Running"
    assert sched.abort(job_id)
    deadline = time.monotonic() + 30
    while store.get_job(job_id).status == "Running" and time.monotonic() < deadline:
        time.sleep(0.1)
        sched.tick()
    assert store.get_job(job_id).status == "Aborted"
    assert not (settings.jobs_dir / job_id / "manifest.json").exists()   # nothing half-made looks complete


def test_cli_dataset_create_is_a_job_the_server_lists(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "imgs", {"x": 5, "y_z": 5})
    data = tmp_path / "data"
    out = subprocess.run([sys.executable, "-m", "kiln", "--data-dir", str(data), "dataset", "create",
                          "--name", "cli-set", "--folder", str(folder), "--width", "10", "--height", "10",
                          "--channels", "1", "--pct-val", "20"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "dataset job " in out.stdout and ": Done" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "kiln", "--data-dir", str(data), "dataset", "create",
                          "--name", "bad", "--folder", str(tmp_path / "missing"), "--width", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "folder_train" in bad.stderr and "resize_width" in bad.stderr
    assert "Traceback" not in bad.stderr
    server = start_server(data)
    try:
        index = server.client.get("/index.json").json()
        assert [d["name"] for d in index["datasets"]] == ["cli-set"]
    finally:
        stop_server(server)
