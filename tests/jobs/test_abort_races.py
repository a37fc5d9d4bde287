"""Abort races and kills: many aborts at once, an abort just before the worker's claim, and SIGKILL
reaching every process of a worker's group (abort, server shutdown, a worker that exits)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from kiln.config import Settings
from kiln.jobs import scheduler as scheduler_module
from kiln.jobs.scheduler import Scheduler, abort_job
from kiln.jobs.store_reporter import StoreReporter
from kiln.jobs.worker import run_job
from kiln.store import Store

# A worker stand-in: claims the job as a real worker does, starts a child of its own (a decoding
# pool, a data loader), prints the child's pid; then ignores SIGTERM ("stubborn") or exits ("exit").
STAND_IN = """
import os, signal, subprocess, sys, time
from pathlib import Path
import psutil
from kiln.store import Store

db, job_id, mode = sys.argv[1:]
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
store = Store(Path(db))
assert store.claim(job_id, pid=os.getpid(), pid_started=psutil.Process().create_time())
print(child.pid, flush=True)
if mode == "exit":
    sys.exit(0)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(data_dir=tmp_path / "data")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    s = Store(settings.db_path)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def quick_kill(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler_module, "KILL_AFTER_S", 0.5)


def _queued(store: Store) -> str:
    return store.create_job("model", "m", {"config": {}}, "alice")


def _together(count: int, work) -> tuple[list, list[BaseException]]:
    start = threading.Barrier(count)
    results: list = [None] * count
    errors: list[BaseException] = []

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def _aborted_count(store: Store, job_id: str) -> int:
    return sum(1 for h in store.history(job_id) if h["status"] == "Aborted")


def _stand_in(settings: Settings, job_id: str, mode: str = "stubborn") -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", STAND_IN, str(settings.db_path), job_id, mode],
        stdout=subprocess.PIPE,
        start_new_session=True,  # as the scheduler starts workers
    )
    proc.spawned_at = time.time() - 1  # type: ignore[attr-defined]
    line = proc.stdout.readline()
    assert line.strip(), "the stand-in worker did not start"
    return proc, int(line)


def _gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def _cleanup(*pids: int) -> None:
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


# -- many aborts at once ---------------------------------------------------------------------------
@pytest.mark.parametrize("shared", [True, False], ids=["one store", "a store per thread"])
def test_concurrent_aborts_of_a_queued_job(settings: Settings, store: Store, shared: bool) -> None:
    job_id = _queued(store)

    def abort(_: int) -> bool:
        if shared:
            return abort_job(store, job_id)
        mine = Store(settings.db_path)
        try:
            return abort_job(mine, job_id)
        finally:
            mine.close()

    results, errors = _together(16, abort)
    assert errors == []
    assert results.count(True) == 1 and results.count(False) == 15  # one abort, the others: not active
    assert store.get_job(job_id).status == "Aborted" and _aborted_count(store, job_id) == 1


def test_concurrent_aborts_of_a_running_job(settings: Settings, store: Store) -> None:
    job_id = _queued(store)
    proc, child = _stand_in(settings, job_id)
    try:
        results, errors = _together(12, lambda _: abort_job(store, job_id, wait=True))
        assert errors == []
        assert results == [True] * 12
        assert store.get_job(job_id).status == "Aborted" and _aborted_count(store, job_id) == 1
        assert proc.wait(10) is not None and _gone(child)
    finally:
        _cleanup(proc.pid, child)


# -- an abort just before the claim ----------------------------------------------------------------
def test_an_abort_flagged_before_the_claim_is_not_lost(settings: Settings, store: Store) -> None:
    """The abort has set its flag but not yet moved the job when the worker claims it: the
    claim sees the flag (before, it cleared the flag and the job ran to the end)."""
    job_id = _queued(store)
    store.update_fields(job_id, abort_requested=1)
    assert run_job(settings, job_id) == "Aborted"
    assert [h["status"] for h in store.history(job_id)] == ["Initialized", "Aborted"]


def test_abort_and_claim_racing_always_agree(settings: Settings) -> None:
    """Whichever wins, the abort holds: the job is Aborted unclaimed, or claimed with its flag set
    (the worker's first check stops it)."""
    stores = [Store(settings.db_path), Store(settings.db_path)]
    try:
        for _ in range(40):
            job_id = _queued(stores[0])
            (outcome, claimed), errors = _together(
                2, lambda i, j=job_id: stores[i].request_abort(j) if i == 0 else stores[i].claim(j)
            )
            assert errors == []
            job = stores[0].get_job(job_id)
            if claimed:
                assert outcome == "Running" and job.status == "Running" and job.abort_requested
                assert StoreReporter(stores[1], job_id).should_stop()
            else:
                assert outcome == "Aborted" and job.status == "Aborted"
    finally:
        for s in stores:
            s.close()


# -- SIGKILL reaches the whole process group --------------------------------------------------------
def test_abort_kills_a_stubborn_worker_and_its_children(settings: Settings, store: Store) -> None:
    job_id = _queued(store)
    proc, child = _stand_in(settings, job_id)
    try:
        assert abort_job(store, job_id, wait=True)
        assert proc.wait(10) == -9
        assert _gone(child), "the worker's child outlived the SIGKILL"
        assert store.get_job(job_id).status == "Aborted"
    finally:
        _cleanup(proc.pid, child)


def test_server_shutdown_kills_each_workers_group(settings: Settings, store: Store) -> None:
    job_id = _queued(store)
    scheduler = Scheduler(settings)
    proc, child = _stand_in(settings, job_id)
    scheduler.procs[job_id] = proc
    try:
        scheduler.stop()
        assert proc.returncode is not None and _gone(child)
        assert store.get_job(job_id).status == "Interrupted"  # resumable, as a shutdown leaves it
    finally:
        _cleanup(proc.pid, child)
        scheduler.store.close()


def test_a_worker_that_exits_leaves_no_child_behind(settings: Settings, store: Store) -> None:
    job_id = _queued(store)
    scheduler = Scheduler(settings)
    proc, child = _stand_in(settings, job_id, mode="exit")
    scheduler.procs[job_id] = proc
    try:
        deadline = time.monotonic() + 15
        while job_id in scheduler.procs and time.monotonic() < deadline:
            scheduler.tick()
            time.sleep(0.05)
        assert job_id not in scheduler.procs, "the exited worker was not reaped"
        assert _gone(child)
    finally:
        _cleanup(proc.pid, child)
        scheduler.store.close()
