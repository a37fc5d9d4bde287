"""Job actions (kiln.jobs.actions) and their two faces: the web routes (in-process) and `kiln jobs`.

Running jobs are played by a small stand-in worker that claims the job as a real one does, so a
test controls how it answers SIGTERM: slowly (it writes one last file first), or not at all.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kiln.config import Settings
from kiln.jobs import actions
from kiln.jobs.errors import ActionError, JobNotFound, UserFacingError, failure_message
from kiln.store import Store
from tests.conftest import login

Kiln = Callable[..., subprocess.CompletedProcess]
STAND_IN = """
import os, signal, sys, time
from pathlib import Path
import psutil
from kiln.store import Store

db, job_id, job_dir, mode = sys.argv[1:]
store = Store(Path(db))
stop = []
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else (lambda *_: stop.append(1)))
assert store.set_status(job_id, "Running", expect=("Initialized",), pid=os.getpid(),
                        pid_started=psutil.Process().create_time())
print("running", flush=True)
while not stop:
    time.sleep(0.02)
time.sleep(1.0)                                     # finishing the step it was in
Path(job_dir).mkdir(parents=True, exist_ok=True)    # ... which ends with a write to its folder
(Path(job_dir) / "last-step.txt").write_text("written after SIGTERM")
store.set_status(job_id, "Aborted", note="aborted by user")
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(data_dir=tmp_path / "data")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store(settings.db_path)
    yield s
    s.close()


@pytest.fixture
def web(settings: Settings) -> Iterator[TestClient]:
    from kiln.web.app import create_app

    with login(TestClient(create_app(settings, run_scheduler=False)), "alice") as client:
        yield client


def running(
    settings: Settings, store: Store, mode: str = "slow", owner: str | None = "alice"
) -> tuple[str, subprocess.Popen]:
    """A Running job with a live worker (mode 'slow': stops 1 s after SIGTERM; 'stubborn': ignores it)."""
    job_id = store.create_job("dataset", "busy", {"spec": {}}, owner)
    job_dir = settings.jobs_dir / job_id
    job_dir.mkdir(parents=True)
    (job_dir / "worker.log").write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-c", STAND_IN, str(settings.db_path), job_id, str(job_dir), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "running"
    return job_id, proc


def gone(proc: subprocess.Popen) -> bool:
    """The worker has exited (poll also reaps it, as its parent must)."""
    try:
        return proc.poll() is not None
    finally:
        if proc.poll() is None:  # never leave a worker behind a failed test
            proc.kill()
            proc.wait()


@pytest.fixture
def kiln(settings: Settings, capsys: pytest.CaptureFixture[str]) -> Kiln:
    """`kiln ARGS --data-dir D`, in this process (tests/test_cli.py runs the real command)."""
    from kiln.cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = main([*args, "--data-dir", str(settings.data_dir)])
        out = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out.out, out.err)

    return run


# -- delete waits for the worker ------------------------------------------------------------------
def test_web_delete_of_a_running_job_waits_for_its_worker(settings: Settings, store: Store, web: TestClient) -> None:
    job_id, proc = running(settings, store, "slow")
    res = web.delete(f"/jobs/{job_id}")
    assert res.status_code == 200 and res.text == "Job deleted."
    assert gone(proc) and proc.returncode == 0  # it stopped by itself, after its last write
    assert not (settings.jobs_dir / job_id).exists()  # ... which did not outlive the delete
    assert store.get_job(job_id) is None


def test_cli_delete_of_a_running_job_kills_a_stubborn_worker(settings: Settings, store: Store, kiln: Kiln) -> None:
    job_id, proc = running(settings, store, "stubborn")
    out = kiln("jobs", "delete", job_id)
    assert out.returncode == 0 and out.stdout.strip() == "Job deleted.", out.stderr
    assert "waiting for its worker" in out.stderr
    assert gone(proc) and proc.returncode == -signal.SIGKILL  # SIGTERM was ignored: SIGKILL after it
    assert not (settings.jobs_dir / job_id).exists() and store.get_job(job_id) is None


def test_cli_delete_of_a_running_job_waits_for_its_worker(settings: Settings, store: Store, kiln: Kiln) -> None:
    job_id, proc = running(settings, store, "slow")
    out = kiln("jobs", "delete", job_id)
    assert out.returncode == 0, out.stderr
    assert gone(proc) and proc.returncode == 0
    assert not (settings.jobs_dir / job_id).exists()


def test_abort_waits_when_asked_and_records_aborted(settings: Settings, store: Store) -> None:
    job_id, proc = running(settings, store, "stubborn")
    started = time.monotonic()
    job = actions.abort(store, job_id, "alice", wait=True)
    assert gone(proc) and time.monotonic() - started >= 2  # SIGTERM, then SIGKILL after KILL_AFTER_S
    assert job.status == "Aborted" and (settings.jobs_dir / job_id).exists()  # abort keeps the folder


# -- refusals ----------------------------------------------------------------------------------------
def test_abort_of_a_job_that_is_not_running(settings: Settings, store: Store, web: TestClient, kiln: Kiln) -> None:
    job_id = store.create_job("dataset", "d", {"spec": {}}, "alice")
    store.set_status(job_id, "Done")
    with pytest.raises(ActionError) as refused:
        actions.abort(store, job_id, "alice")
    assert refused.value.status == 403 and "not running" in refused.value.message
    res = web.post(f"/datasets/{job_id}/abort", headers={"Accept": "application/json"})
    assert res.status_code == 403 and "not running" in res.json()["error"]["message"]
    out = kiln("jobs", "abort", job_id)
    assert out.returncode == 1 and "error: Job not aborted: it is not running." in out.stderr
    assert store.get_job(job_id).status == "Done"


def test_owner_checks(settings: Settings, store: Store, web: TestClient) -> None:
    mine = store.create_job("dataset", "mine", {"spec": {}}, "alice")
    anyones = store.create_job("dataset", "demo", {"spec": {}}, None)
    store.set_status(mine, "Aborted")
    for act in (
        lambda: actions.abort(store, mine, "mallory"),
        lambda: actions.resume(store, mine, "mallory"),
        lambda: actions.delete(store, settings.jobs_dir, mine, "mallory"),
        lambda: actions.edit(store, mine, "mallory", name="x"),
        lambda: actions.group(store, [anyones, mine], "g", "mallory"),
    ):
        with pytest.raises(ActionError) as refused:
            act()
        assert refused.value.status == 403 and refused.value.message == "Only alice may change this job."
    assert store.get_job(anyones).group_name == ""  # group is all or none
    assert actions.edit(store, anyones, "mallory", notes="n").notes == "n"  # no owner: anyone's
    assert actions.edit(store, mine, None, name="renamed").name == "renamed"  # None: the terminal
    mallory = login(TestClient(web.app), "mallory")
    assert mallory.delete(f"/jobs/{mine}").status_code == 403
    assert mallory.post(f"/jobs/{mine}/resume").status_code == 403
    assert store.get_job(mine).status == "Aborted"


def test_missing_job_is_404_and_a_cli_error(settings: Settings, store: Store, web: TestClient, kiln: Kiln) -> None:
    with pytest.raises(JobNotFound) as missing:
        actions.delete(store, settings.jobs_dir, "nope", "alice")
    assert missing.value.status == 404
    assert web.post("/jobs/nope/resume").status_code == 404
    out = kiln("jobs", "show", "nope")
    assert out.returncode == 1 and out.stderr.strip() == "error: Job nope not found."


def test_a_dataset_that_models_use_is_not_deleted(
    settings: Settings, store: Store, web: TestClient, kiln: Kiln
) -> None:
    ds = store.create_job("dataset", "digits", {"spec": {}}, "alice")
    store.set_status(ds, "Done")
    store.create_job("model", "lenet", {"config": {}}, "alice", dataset_id=ds)
    with pytest.raises(ActionError) as refused:
        actions.delete(store, settings.jobs_dir, ds, "alice")
    assert refused.value.status == 403 and '1 model depend on it: "lenet"' in refused.value.message
    res = web.delete(f"/datasets/{ds}", headers={"Accept": "application/json"})
    assert res.status_code == 403 and '"lenet"' in res.json()["error"]["message"]
    out = kiln("jobs", "delete", ds)
    assert out.returncode == 1 and '"lenet"' in out.stderr and store.get_job(ds) is not None


def test_delete_many_reports_each_refusal(settings: Settings, store: Store, web: TestClient) -> None:
    ok = store.create_job("dataset", "a", {"spec": {}}, "alice")
    theirs = store.create_job("dataset", "b", {"spec": {}}, "bob")
    for job_id in (ok, theirs):
        store.set_status(job_id, "Done")
    res = web.request("DELETE", "/jobs", data={"job_ids[]": [ok, theirs]}, headers={"Accept": "application/json"})
    assert res.status_code == 400 and f"1 deleted, 1 not: {theirs}: Only bob" in res.json()["error"]["message"]
    assert store.get_job(ok) is None and store.get_job(theirs) is not None


# -- resume -----------------------------------------------------------------------------------------
def test_resume_message_names_a_command_that_exists(settings: Settings, store: Store, kiln: Kiln) -> None:
    from kiln.cli import build_parser

    job_id = store.create_job("dataset", "d", {"spec": {}}, "alice")
    store.set_status(job_id, "Interrupted")
    out = kiln("jobs", "resume", job_id, "--queue")
    assert out.returncode == 0 and store.get_job(job_id).status == "Initialized"
    named = [part.split() for part in out.stdout.split("`")[1::2]]
    assert named == [["kiln", "serve"]]
    build_parser().parse_args(named[0][1:])  # a command the CLI knows
    again = kiln("jobs", "resume", job_id)
    assert again.returncode == 1 and "Job not resumed: it is Initialized." in again.stderr


def test_resume_rewinds_the_charts_to_the_snapshot_it_continues_from(settings: Settings, store: Store) -> None:
    from kiln.jobs.worker import rewind_charts

    job_id = store.create_job("model", "m", {"config": {}}, "alice", dataset_id="x")
    job_dir = settings.jobs_dir / job_id
    job_dir.mkdir(parents=True)
    for epoch in (1.0, 2.0, 3.0):
        store.add_metrics(job_id, epoch, {"loss": 1 / epoch}, "train")
    (job_dir / "resume.pt").write_bytes(b"")
    (job_dir / "resume.json").write_text('{"epoch": 2}')
    rewind_charts(store, store.get_job(job_id), job_dir)
    assert [m["epoch"] for m in store.metrics(job_id)] == [1.0, 2.0]
    (job_dir / "resume.pt").unlink()  # aborted before its first snapshot
    rewind_charts(store, store.get_job(job_id), job_dir)
    assert store.metrics(job_id) == []  # it starts over: so do its charts


# -- edit, group, clone ------------------------------------------------------------------------------
def test_edit_group_and_clone(store: Store) -> None:
    ds = store.create_job("dataset", "pets", {"spec": {"dataset_name": "pets", "resize_width": 8}}, "alice")
    model = store.create_job(
        "model", "lenet", {"config": {}, "form": {"model_name": "lenet", "lr": "0.1"}}, "alice", dataset_id=ds
    )
    with pytest.raises(ActionError) as blank:
        actions.edit(store, ds, "alice", name="  ")
    assert blank.value.status == 400
    job = actions.edit(store, ds, "alice", name=" cats ", notes="n", group=" g ")
    assert (job.name, job.notes, job.group_name) == ("cats", "n", "g")
    actions.group(store, [ds, model], "exp", "alice")
    assert {store.get_job(i).group_name for i in (ds, model)} == {"exp"}
    assert actions.clone(store, ds) == {"dataset_name": "Clone of pets", "resize_width": 8}
    assert actions.clone(store, model, "model") == {"model_name": "Clone of lenet", "lr": "0.1"}
    with pytest.raises(JobNotFound):
        actions.clone(store, ds, "model")


# -- failures carry their message ------------------------------------------------------------------
def test_failure_messages_say_what_to_do(tmp_path: Path) -> None:
    from kiln.config import Settings
    from kiln.datasets.spec import DatasetSpec
    from kiln.jobs.dataset_job import run_dataset
    from kiln.reporting import RecordingReporter
    from kiln.store import Job

    assert failure_message(UserFacingError("Fix it, then clone.")) == "Fix it, then clone."
    assert "Check the path" in failure_message(FileNotFoundError("x.png"))
    assert failure_message(ValueError("boom")).startswith("Unexpected error (ValueError: boom)")
    spec = DatasetSpec(dataset_name="d", folder_train=str(tmp_path / "missing"), resize_width=8, resize_height=8)
    job = Job(id="j", type="dataset", name="d", status="Running", created=0.0, params={"spec": spec.to_dict()})
    with pytest.raises(UserFacingError) as failed:
        run_dataset(job, tmp_path / "job", RecordingReporter(), Settings.from_env(data_dir=tmp_path / "data"))
    assert failed.value.message.startswith("The dataset source is not usable: folder_train: ")
    assert "missing does not exist" in failed.value.message
    assert failed.value.message.endswith("then clone the job.")
