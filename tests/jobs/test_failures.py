"""Jobs that fail, crash, wait or queue: what the user sees, and that they can go on from there.

Jobs are prepared with the scheduler off (nothing runs), then a second app over the same data dir
turns the scheduler on, so that what its real worker processes do is not a race with the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from kiln.jobs.scheduler import Scheduler
from tests.conftest import Kiln, copy_data_dir, write_class_folder


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A data dir with one Done dataset (3 classes of 28x28 grey images)."""
    root = tmp_path_factory.mktemp("failures")
    folder = write_class_folder(root / "imgs", {"a": 20, "b": 20, "c": 20}, size=(28, 28))
    kiln = Kiln(root / "data")
    try:
        dataset_id = dataset(kiln, folder, "bands")
        assert kiln.run(dataset_id) == "Done"
    finally:
        kiln.close()
    return {"data": root / "data", "folder": folder, "dataset_id": dataset_id}


@pytest.fixture
def data_dir(template: dict[str, Any], tmp_path: Path) -> Path:
    return copy_data_dir(template["data"], tmp_path / "data")


def dataset(kiln: Kiln, folder: Path, name: str) -> str:
    res = kiln.client.post(
        "/datasets/images/classification.json",
        data={
            "dataset_name": name,
            "folder_train": str(folder),
            "resize_channels": "1",
            "resize_width": "28",
            "resize_height": "28",
            "folder_pct_val": "20",
        },
    )
    assert res.status_code == 200, res.text
    return res.json()["id"]


def model(kiln: Kiln, dataset_id: str, name: str = "m", **fields: str) -> str:
    res = kiln.client.post(
        "/models/images/classification.json",
        data={
            "dataset": dataset_id,
            "model_name": name,
            "standard_networks": "lenet",
            "train_epochs": "500",
            "snapshot_interval": "1",
            "learning_rate": "0.01",
            "random_seed": "1",
            "device": "cpu",
            **fields,
        },
    )
    assert res.status_code == 200, res.text
    return res.json()["id"]


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120, poll: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(poll)
    return value


def snapshots(kiln: Kiln, job_id: str) -> list[float]:
    return kiln.client.get(f"/models/{job_id}.json").json()["snapshots"]


def history(kiln: Kiln, job_id: str) -> list[dict[str, Any]]:
    return kiln.client.get(f"/jobs/{job_id}/state.json").json()["history"]


def test_a_diverging_model_fails_and_says_what_to_do(data_dir: Path, template: dict[str, Any]) -> None:
    kiln = Kiln(data_dir)
    try:
        job_id = model(kiln, template["dataset_id"], train_epochs="3", learning_rate="1e10")
        assert kiln.run(job_id) == "Error"  # the worker's own code, in this process
        status = kiln.status(job_id)
        assert status["status"] == "Error"
        assert "diverged" in status["error"] and "Lower the learning rate" in status["error"]
        assert "Traceback" not in status["error"] and "report it" not in status["error"]
        log = kiln.client.get(f"/jobs/{job_id}/log.json").json()["lines"]
        assert any("Traceback" in line for line in log)  # the details are in the job log
        page = kiln.client.get(f"/models/{job_id}")
        assert "Lower the learning rate" in page.text
        assert kiln.client.post(f"/models/{job_id}/resume").text == "Job resumed."  # Error is resumable
        assert kiln.status(job_id)["status"] == "Initialized"
    finally:
        kiln.close()


def test_a_failing_dataset_fails_its_waiting_model_and_a_failed_model_resumes(
    data_dir: Path, template: dict[str, Any], tmp_path: Path
) -> None:
    folder = write_class_folder(tmp_path / "gone", {"x": 4, "y": 4}, size=(28, 28))
    setup = Kiln(data_dir)
    broken = dataset(setup, folder, "soon broken")
    waiting = model(setup, broken, "waits")
    orphan = model(setup, template["dataset_id"], "orphan", train_epochs="2")
    setup.close()
    shutil.rmtree(folder)  # the images went away before the job ran
    moved = tmp_path / "moved"
    (data_dir / "jobs" / template["dataset_id"]).rename(moved)  # and so did a finished dataset's folder

    kiln = Kiln(data_dir, scheduler=True)
    try:
        failed = kiln.wait_job(broken)
        assert failed["status"] == "Error", failed
        assert str(folder) in failed["error"] and "clone" in failed["error"], failed["error"]
        assert kiln.wait_job(waiting)["status"] == "Aborted"
        assert "dataset Error" in history(kiln, waiting)[-1]["note"]
        assert not (data_dir / "jobs" / waiting / "worker.log").exists()  # it never ran
        lost = kiln.wait_job(orphan)
        assert lost["status"] == "Error", lost
        assert template["dataset_id"] in lost["error"] and "clone this model" in lost["error"], lost["error"]
        moved.rename(data_dir / "jobs" / template["dataset_id"])  # the cause fixed, a failed model resumes
        assert kiln.client.post(f"/models/{orphan}/resume").text == "Job resumed."
        assert kiln.wait_job(orphan)["status"] == "Done"
        assert snapshots(kiln, orphan)[-1] == 2
    finally:
        kiln.close()


def test_models_wait_for_their_dataset(tmp_path: Path) -> None:
    """The scheduler's rules for a model whose dataset is not Done (no worker is started here)."""
    kiln = Kiln(tmp_path / "data", max_running_jobs=4)  # slots for the three datasets and more
    store = kiln.store
    me = psutil.Process()

    def running_dataset() -> str:
        job_id = store.create_job("dataset", "d", {"spec": {}}, "alice")
        store.set_status(job_id, "Running", pid=me.pid, pid_started=me.create_time())  # "its worker" is alive
        return job_id

    building, failing, deleted = running_dataset(), running_dataset(), running_dataset()
    models = {
        ds: store.create_job("model", f"on {ds}", {"config": {}}, "alice", dataset_id=ds)
        for ds in (building, failing, deleted)
    }
    sched = Scheduler(kiln.settings)
    sched.tick()
    assert {store.get_job(m).status for m in models.values()} == {"Waiting"}
    assert sched.procs == {}
    store.set_status(failing, "Error", error="broken")
    store.delete_job(deleted)
    sched.tick()
    assert store.get_job(models[building]).status == "Waiting"
    assert store.get_job(models[failing]).status == "Aborted"
    assert "dataset Error" in store.history(models[failing])[-1]["note"]
    gone = store.get_job(models[deleted])
    assert gone.status == "Error" and "dataset was deleted" in gone.error and "clone" in gone.error
    assert sched.procs == {}
    kiln.close()


def test_a_killed_worker_is_interrupted_and_the_model_resumes(data_dir: Path, template: dict[str, Any]) -> None:
    """kill -9 (the OOM killer) is not the job's fault: Interrupted, not Error, and resumable."""
    setup = Kiln(data_dir)
    job_id = model(setup, template["dataset_id"], "crashes")
    setup.close()
    kiln = Kiln(data_dir, scheduler=True)
    try:
        wait_for(lambda: snapshots(kiln, job_id), "a first snapshot")
        os.kill(kiln.store.get_job(job_id).pid, signal.SIGKILL)
        crashed = kiln.wait_job(job_id, until=("Interrupted", "Error", "Done", "Aborted"))
        assert crashed["status"] == "Interrupted", crashed
        assert "signal 9" in history(kiln, job_id)[-1]["note"]
        before = snapshots(kiln, job_id)
        assert kiln.client.post(f"/models/{job_id}/resume").text == "Job resumed."
        wait_for(lambda: len(snapshots(kiln, job_id)) > len(before), "a snapshot after resuming")
        assert any(f"Resuming from epoch {before[-1]:g}" in line for line in kiln.store.logs(job_id))
        assert kiln.client.post(f"/models/{job_id}/abort").text == "Job aborted."
        assert kiln.wait_job(job_id)["status"] == "Aborted"
        after = snapshots(kiln, job_id)
        assert after[: len(before)] == before and after == sorted(set(after))
        train = kiln.client.get(f"/models/{job_id}/metrics.json").json()["series"]["loss (train)"]["x"]
        assert train == sorted(set(train)) and max(train) > before[-1]  # went on from the snapshot
    finally:
        kiln.close()


def test_max_running_jobs_queues_the_rest(
    data_dir: Path, template: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = Kiln(data_dir)
    first = model(setup, template["dataset_id"], "first")
    second = dataset(setup, template["folder"], "second")
    setup.close()
    monkeypatch.setenv("KILN_MAX_RUNNING_JOBS", "1")
    kiln = Kiln(data_dir, scheduler=True)
    try:
        assert kiln.settings.max_running_jobs == 1
        scheduler = kiln.app.state.scheduler
        kiln.wait_job(first, until=("Running",))
        for _ in range(10):  # a few of the scheduler's rounds
            assert second not in scheduler.procs and kiln.status(second)["status"] == "Initialized"
            time.sleep(0.15)
        assert kiln.status(first)["status"] == "Running"
        assert kiln.client.post(f"/models/{first}/abort").text == "Job aborted."
        assert kiln.wait_job(first)["status"] == "Aborted"
        assert kiln.wait_job(second)["status"] == "Done"
        ended = history(kiln, first)[-1]["ts"]
        started = next(h["ts"] for h in history(kiln, second) if h["status"] == "Running")
        assert started >= ended
    finally:
        kiln.close()


def test_shutdown_interrupts_running_jobs_and_they_resume(data_dir: Path, template: dict[str, Any]) -> None:
    """The app's shutdown (what `kiln serve` runs on SIGTERM) leaves running jobs Interrupted."""
    setup = Kiln(data_dir)
    job_id = model(setup, template["dataset_id"], "interrupted")
    setup.close()
    kiln = Kiln(data_dir, scheduler=True)
    try:
        wait_for(lambda: snapshots(kiln, job_id), "a first snapshot")
        pid = kiln.store.get_job(job_id).pid
    finally:
        kiln.close()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    again = Kiln(data_dir)
    try:
        status = again.status(job_id)
        assert status["status"] == "Interrupted", (status, history(again, job_id))
        assert again.client.post(f"/models/{job_id}/resume").text == "Job resumed."
    finally:
        again.close()


def _kill_when_running(kiln: Kiln, job_id: str, after: float = 0.0, progress: float = 0.0) -> bool:
    """SIGKILL the job's worker once it is Running (past `progress`), `after` seconds later (the OOM
    killer, a power cut). False if the job had already finished."""

    def ready() -> Any:
        job = kiln.store.get_job(job_id)
        return job and ((job.status == "Running" and job.pid and job.progress > progress) or not job.active) and job

    job = wait_for(ready, "Running", poll=0.005)
    if job.status != "Running":
        return False
    time.sleep(after)
    try:
        os.kill(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True


def test_kill_9_mid_dataset_resumes_to_every_image(template: dict[str, Any], tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "many", {"a": 500, "b": 500, "c": 500}, size=(28, 28))
    setup = Kiln(tmp_path / "data")
    job_id = dataset(setup, folder, "killed")
    setup.close()
    kiln = Kiln(tmp_path / "data", scheduler=True)
    try:
        if not _kill_when_running(kiln, job_id, progress=0.0):
            pytest.skip("the dataset finished before the kill landed")
        first = kiln.wait_job(job_id, timeout=120)
        assert first["status"] == "Interrupted", first
        assert kiln.client.post(f"/jobs/{job_id}/resume").status_code == 200
        assert kiln.wait_job(job_id, timeout=180)["status"] == "Done"
        info = kiln.client.get(f"/datasets/{job_id}.json").json()
        assert sum(int(task["entries"]) for task in info["CreateDbTasks"]) == 1500, info["CreateDbTasks"]
        leftovers = [p.name for p in (kiln.settings.jobs_dir / job_id).iterdir() if p.name.startswith(".")]
        assert leftovers == [], leftovers  # nothing half written stays behind
    finally:
        kiln.close()


def test_kill_9_at_random_moments_leaves_every_snapshot_loadable(data_dir: Path, template: dict[str, Any]) -> None:
    """Killed three times at random moments (mid-snapshot included), resumed each time: every
    snapshot on disk loads, and the run still finishes."""
    import random

    from kiln.training.checkpoint import list_snapshots, load_snapshot

    setup = Kiln(data_dir)
    job_id = model(setup, template["dataset_id"], "killed", train_epochs="6", snapshot_interval="0.5")
    setup.close()
    kiln = Kiln(data_dir, scheduler=True)
    job_dir = kiln.settings.jobs_dir / job_id
    rand = random.Random(7)
    try:
        for _ in range(3):
            if not _kill_when_running(kiln, job_id, rand.uniform(0.5, 3.0)):
                break
            status = kiln.wait_job(job_id, timeout=120)["status"]
            if status == "Done":
                break
            assert status == "Interrupted"
            for epoch in list_snapshots(job_dir):
                load_snapshot(job_dir, epoch)  # raises on a half-written file
            assert kiln.client.post(f"/models/{job_id}/resume").text == "Job resumed."
        else:
            assert kiln.wait_job(job_id, timeout=240)["status"] == "Done"
        epochs = list_snapshots(job_dir)
        assert epochs and epochs[-1] == 6
        for epoch in epochs:
            load_snapshot(job_dir, epoch)
    finally:
        kiln.close()
