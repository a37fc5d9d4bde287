"""A model job as a torchrun group (cpu_processes=N, gloo): the same result as one process, metrics and
snapshots from one rank, aborted as one with no process left behind, resumed from its snapshot."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from kiln.training import checkpoint
from tests.conftest import Kiln, write_class_folder


def _dataset(app: Kiln, tmp_path: Path) -> str:
    """3 classes x 16 grey 28x28 images; 25 % val: 36 train (divisible by 2 ranks x 6), 12 val."""
    folder = write_class_folder(tmp_path / "imgs", {"a": 16, "b": 16, "c": 16}, size=(28, 28))
    return app.built_dataset(folder, "bands", pct_val="25")


def _create(app: Kiln, dataset_id: str, name: str, **fields: str) -> str:
    form = {
        "dataset": dataset_id,
        "model_name": name,
        "standard_networks": "lenet",
        "random_seed": "7",
        "lr_policy": "fixed",
        "learning_rate": "0.01",
        **fields,
    }
    res = app.client.post("/models/images/classification.json", data=form)
    assert res.status_code == 200, res.text
    return res.json()["id"]


def test_two_processes_reach_the_accuracy_of_one(tmp_path: Path) -> None:
    """Batch 6 on each of 2 ranks sees, iteration by iteration, the 12 images one process sees at batch 12."""
    app = Kiln(tmp_path / "data")
    try:
        dataset_id = _dataset(app, tmp_path)
        one = _create(app, dataset_id, "one", train_epochs="3", batch_size="12")
        two = _create(app, dataset_id, "two", train_epochs="3", batch_size="6", cpu_processes="2")
        assert app.run(one) == "Done"
        assert app.run(two) == "Done", app.store.get_job(two).error
        a, b = (app.client.get(f"/models/{j}.json").json() for j in (one, two))
        assert a["world_size"] == 1 and b["world_size"] == 2
        sa, sb = a["summary"], b["summary"]
        assert sb["world_size"] == 2 and sb["iterations_per_epoch"] == sa["iterations_per_epoch"] == 3
        assert abs(sa["final"]["val_accuracy"] - sb["final"]["val_accuracy"]) <= 100 / 12 + 1e-9  # one image
        for key in ("train_loss", "val_loss"):  # the same gradients, summed in another order
            assert sb["final"][key] == pytest.approx(sa["final"][key], rel=1e-3), key
        assert sb["final"]["val_accuracy"] > 60
        # one rank reported: each chart point once, each snapshot once, one "Done" line
        points = [(m["epoch"], m["name"]) for m in app.store.metrics(two) if m["phase"] == "val"]
        assert len(points) == len(set(points)) == 3 * 2  # loss and accuracy (top-5 needs 5 classes) per epoch
        logs = app.store.logs(two, 500)
        assert sum(line.startswith("Done:") for line in logs) == 1
        assert any("torchrun group: 2 processes" in line for line in logs)
        job_dir = app.settings.jobs_dir / two
        assert checkpoint.list_snapshots(job_dir) == [1.0, 2.0, 3.0]
        assert [s["epoch"] for s in app.store.snapshots(two)] == [1.0, 2.0, 3.0]
        assert len(checkpoint.load_resume(job_dir)["rng"]) == 2  # both ranks' random streams
    finally:
        app.close()


def _family(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _ranks(family: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for proc in family:
        try:
            cmd = proc.cmdline()
            if "kiln.jobs.group" in cmd and cmd[cmd.index("kiln.jobs.group") + 1] == "rank":
                out.append(proc)
        except psutil.Error:
            pass
    return out


def _wait_for(what: str, check, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_group_aborts_as_one_and_resumes(tmp_path: Path) -> None:
    app = Kiln(tmp_path / "data", scheduler=True)
    seen: list[psutil.Process] = []
    try:
        dataset_id = _dataset(app, tmp_path)
        job_id = _create(app, dataset_id, "long", train_epochs="400", batch_size="6", cpu_processes="2")
        _wait_for("a first snapshot", lambda: app.store.snapshots(job_id))
        family = _family(app.store.get_job(job_id).pid)
        seen += family
        assert len(_ranks(family)) == 2, [p.cmdline() for p in family]

        def panel_names() -> list[str]:  # the hardware panel, as the worker sampled it (no GPU here)
            panel = app.client.get(f"/models/{job_id}/hardware.json").json()
            assert panel["running"] and panel["gpus"] == []
            return sorted(p["name"] for p in panel["processes"])

        _wait_for(
            "every process of the group on the panel",
            lambda: panel_names() == ["rank 0", "rank 1", "torchrun", "worker"],
        )
        assert app.client.post(f"/models/{job_id}/abort").status_code == 200
        assert app.wait_job(job_id, 60)["status"] == "Aborted"
        _, alive = psutil.wait_procs(family[1:], timeout=15)
        assert not alive, [p.cmdline() for p in alive]  # the worker, torchrun and both ranks are gone
        # where it continues: resume.pt's epoch (a kill between writing it and recording the snapshot
        # row leaves the row one snapshot behind)
        stopped_at = checkpoint.resume_epoch(app.settings.jobs_dir / job_id)
        assert stopped_at is not None and stopped_at >= max(s["epoch"] for s in app.store.snapshots(job_id))

        assert app.client.post(f"/models/{job_id}/resume").status_code == 200
        _wait_for(
            "a snapshot after the resume", lambda: max(s["epoch"] for s in app.store.snapshots(job_id)) > stopped_at
        )
        logs = app.store.logs(job_id, 2000)
        assert any(f"Resuming from epoch {stopped_at:g}" in line for line in logs), logs[-20:]
        job = app.store.get_job(job_id)
        assert job.status == "Running" and job.params["world_size"] == 2
        # a worker killed outright (the OOM killer, kill -9) takes its group along too
        family = _family(job.pid)
        seen += family
        assert len(_ranks(family)) == 2
        os.kill(job.pid, signal.SIGKILL)
        _, alive = psutil.wait_procs(family[1:], timeout=15)  # the worker itself is the scheduler's to reap
        assert not alive, [p.cmdline() for p in alive]
        assert app.wait_job(job_id, 60)["status"] == "Interrupted"
    finally:
        app.close()
        for proc in seen:  # whatever a failed check left running
            try:
                proc.kill()
            except psutil.Error:
                pass
