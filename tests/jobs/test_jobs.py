"""Job life cycle: recovery after a crash, restart, abort, and the CLI sharing jobs with the server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kiln.config import Settings
from kiln.datasets.spec import DatasetSpec
from kiln.jobs.scheduler import Scheduler
from kiln.jobs.worker import run_job
from kiln.store import Store
from tests.conftest import Kiln, start_server, stop_server, write_class_folder


def _spec(folder: Path, **kw) -> dict:
    values = {"dataset_name": "d", "folder_train": str(folder), "resize_width": 8, "resize_height": 8, **kw}
    return DatasetSpec(**values).to_dict()


def test_store_status_history_and_claim(tmp_path: Path) -> None:
    store = Store(tmp_path / "kiln.db")
    job_id = store.create_job("dataset", "d", {"spec": {}}, "alice")
    assert store.set_status(job_id, "Running", expect=("Initialized",), pid=1)
    assert not store.set_status(job_id, "Running", expect=("Initialized",))  # someone else claimed it
    store.set_progress(job_id, 0.5, "half")
    store.set_status(job_id, "Done")
    job = store.get_job(job_id)
    assert job.progress == 1.0 and job.finished and job.pid is None
    assert [h["status"] for h in store.history(job_id)] == ["Initialized", "Running", "Done"]


class Crash(BaseException):
    """Stands for the machine going down: nothing in the worker catches it."""


def test_restart_recovers_interrupted_jobs_and_they_resume(tmp_path: Path) -> None:
    """A real `kiln serve`: jobs whose worker died with the machine are Interrupted at the next
    start and resume from their last snapshot; a shutdown stops the workers it started."""
    folder = write_class_folder(tmp_path / "imgs", {"a": 12, "b": 12}, size=(28, 28))
    data = tmp_path / "data"
    setup = Kiln(data)
    dataset_id = setup.client.post(
        "/datasets/images/classification.json",
        data={
            "dataset_name": "d",
            "folder_train": str(folder),
            "resize_channels": "1",
            "resize_width": "28",
            "resize_height": "28",
            "folder_pct_val": "25",
        },
    ).json()["id"]
    assert setup.run(dataset_id) == "Done"

    def model(name: str, epochs: int) -> str:
        return setup.client.post(
            "/models/images/classification.json",
            data={
                "dataset": dataset_id,
                "model_name": name,
                "standard_networks": "lenet",
                "train_epochs": str(epochs),
                "snapshot_interval": "1",
                "random_seed": "1",
                "device": "cpu",
            },
        ).json()["id"]

    crashed, running = model("crashed", 3), model("running", 500)
    setup.store.set_status(running, "Aborted", expect=("Initialized",))  # queued after the first start

    def crash_after_first_snapshot(epoch: float, values: dict, phase: str) -> None:
        if phase == "train" and epoch > 1:
            raise Crash()

    with pytest.raises(Crash):  # trains in this process, as the CLI does, until "the machine dies"
        run_job(setup.settings, crashed, on_metrics=crash_after_first_snapshot)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with setup.store.db:  # its worker is gone
        setup.store.db.execute("UPDATE jobs SET pid=? WHERE id=?", (dead.pid, crashed))
    assert setup.status(crashed)["status"] == "Running"
    before = [s["epoch"] for s in setup.store.snapshots(crashed)]
    assert before == [1.0]
    setup.close()

    server = start_server(data)
    try:
        history = [h["status"] for h in server.client.get(f"/jobs/{crashed}/state.json").json()["history"]]
        assert history[-1] == "Interrupted", history
        assert server.client.post(f"/models/{crashed}/resume").status_code == 200
        assert server.client.post(f"/models/{running}/resume").status_code == 200
        assert server.wait_job(crashed)["status"] == "Done"
        info = server.client.get(f"/models/{crashed}.json").json()
        assert info["snapshots"] == [1.0, 2.0, 3.0]
        lines = server.client.get(f"/jobs/{crashed}/log.json").json()["lines"]
        assert any("Resuming from epoch 1" in line for line in lines)
        loss = server.client.get(f"/models/{crashed}/metrics.json").json()["series"]["loss (train)"]["x"]
        assert loss == sorted(set(loss)) and max(loss) == 3
        deadline = time.monotonic() + 120
        while not server.client.get(f"/models/{running}.json").json()["snapshots"]:
            assert time.monotonic() < deadline, server.client.get(f"/jobs/{running}/status").json()
            time.sleep(0.1)
        assert server.client.get(f"/jobs/{running}/status").json()["status"] == "Running"
    finally:
        stop_server(server)  # SIGTERM: the server stops its worker and records it, then exits
    again = Kiln(data)
    try:
        stopped = again.status(running)
        assert stopped["status"] == "Interrupted", stopped  # and resumable, at the next start
        assert again.client.post(f"/models/{running}/resume").text == "Job resumed."
    finally:
        again.close()


def test_abort_running_worker(tmp_path: Path) -> None:
    """SIGTERM reaches the worker, which stops at its next check and records Aborted."""
    folder = write_class_folder(tmp_path / "imgs", {"a": 400, "b": 400}, size=(64, 64))
    settings = Settings.from_env(data_dir=tmp_path / "data")
    store = Store(settings.db_path)
    job_id = store.create_job(
        "dataset", "d", {"spec": _spec(folder, resize_width=256, resize_height=256, encoding="png")}, "alice"
    )
    sched = Scheduler(settings, poll_s=0.05)
    sched.tick()
    deadline = time.monotonic() + 30
    while store.get_job(job_id).progress < 0.05 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.get_job(job_id).status == "Running"
    worker = psutil.Process(store.get_job(job_id).pid)
    family = [worker, *worker.children(recursive=True)]  # the worker and its decoding processes
    try:
        assert sched.abort(job_id)
        deadline = time.monotonic() + 30
        while store.get_job(job_id).status == "Running" and time.monotonic() < deadline:
            time.sleep(0.1)
            sched.tick()
        assert store.get_job(job_id).status == "Aborted"
        assert not (settings.jobs_dir / job_id / "manifest.json").exists()  # nothing half-made looks complete
        _, alive = psutil.wait_procs(family, timeout=10)
        assert not alive, [p.cmdline() for p in alive]  # an aborted job leaves no process behind
    finally:
        for proc in family:
            if proc.is_running():
                proc.kill()
        store.close()


def test_cli_dataset_create_is_a_job_the_server_lists(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "imgs", {"x": 5, "y_z": 5})
    data = tmp_path / "data"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiln",
            "--data-dir",
            str(data),
            "dataset",
            "create",
            "--name",
            "cli-set",
            "--folder",
            str(folder),
            "--width",
            "10",
            "--height",
            "10",
            "--channels",
            "1",
            "--pct-val",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "dataset job " in out.stdout and ": Done" in out.stdout
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiln",
            "--data-dir",
            str(data),
            "dataset",
            "create",
            "--name",
            "bad",
            "--folder",
            str(tmp_path / "missing"),
            "--width",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "folder_train" in bad.stderr and "resize_width" in bad.stderr
    assert "Traceback" not in bad.stderr
    kiln = Kiln(data)
    try:
        index = kiln.client.get("/index.json").json()
        assert [(d["name"], d["status"]) for d in index["datasets"]] == [("cli-set", "Done")]
    finally:
        kiln.close()


def test_the_server_quiets_openmp_but_workers_get_the_users_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kiln serve sets OMP_WAIT_POLICY=PASSIVE (fast classify); training workers spin as the user had it."""
    from kiln import cli_serve

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv(cli_serve.OMP_SET_BY_SERVE, raising=False)
    cli_serve.quiet_openmp(torch_loaded=True)  # too late to matter: left alone
    assert "OMP_WAIT_POLICY" not in os.environ
    cli_serve.quiet_openmp(torch_loaded=False)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    env = Scheduler(Settings.from_env(data_dir=tmp_path))._worker_env()
    assert "OMP_WAIT_POLICY" not in env and cli_serve.OMP_SET_BY_SERVE not in env
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's own choice goes everywhere
    monkeypatch.delenv(cli_serve.OMP_SET_BY_SERVE)
    cli_serve.quiet_openmp(torch_loaded=False)
    assert Scheduler(Settings.from_env(data_dir=tmp_path))._worker_env()["OMP_WAIT_POLICY"] == "ACTIVE"
