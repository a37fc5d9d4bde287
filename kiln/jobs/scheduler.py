"""Starts one worker process per job, aborts jobs, and recovers after a restart.

Runs as a thread inside the server. SQLite is the truth: the scheduler only reads job rows,
starts `python -m kiln.jobs.worker`, and cleans up after workers that died.

Each worker starts in a session (and process group) of its own: SIGTERM goes to the worker alone
(it stops cleanly and stops its helpers), SIGKILL to the whole group, so no child of a killed
worker (decoding pool, data loader) is left behind. A job's torchrun group dies with its worker
(kiln.jobs.group: each rank is killed when its parent dies).

GPUs (kiln.jobs.gpus): a job starts only when the GPUs it asks for are free; which ones it got is
written into the job before its worker starts, and what Running jobs hold is what is taken.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from kiln.config import Settings
from kiln.jobs import gpus
from kiln.store import ACTIVE, Job, Store

KILL_AFTER_S = 3.0


def kill_group(pgid: int) -> None:
    """SIGKILL every process of a worker's process group (the worker and all it started)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _exited(proc: subprocess.Popen) -> bool:
    """True once our worker has exited. Its zombie is not reaped here, so its pid, which names its
    process group, cannot be reused before kill_group has cleaned the group up."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return proc.poll() is not None


def _end(proc: subprocess.Popen, timeout: float) -> None:
    """Wait up to `timeout` for our worker to exit, then SIGKILL what is left of its group and reap it."""
    _wait_until(lambda: _exited(proc), timeout)
    kill_group(proc.pid)
    proc.wait()


def worker_alive(job: Job) -> bool:
    """True if the job's recorded worker process still exists (and is the same process)."""
    if not job.pid:
        return False
    try:
        proc = psutil.Process(job.pid)
        same = job.pid_started is None or abs(proc.create_time() - job.pid_started) < 1.0
        return same and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Scheduler:
    def __init__(self, settings: Settings, poll_s: float = 0.3) -> None:
        self.settings = settings
        self.poll_s = poll_s
        self.store = Store(settings.db_path)
        self.inventory = gpus.Inventory.detect(settings)  # NVML: no CUDA context in this process
        self.procs: dict[str, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._run, name="kiln-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Server shutdown: stop workers; their jobs become Interrupted (resumable)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        with self.lock:
            for job_id, proc in list(self.procs.items()):
                if not _exited(proc):
                    # Interrupted first: the worker's own "Aborted" (on SIGTERM) only replaces Running
                    self.store.set_status(job_id, "Interrupted", note="server stopped", expect=ACTIVE)
                    proc.terminate()
            deadline = time.monotonic() + KILL_AFTER_S
            for job_id, proc in list(self.procs.items()):
                _end(proc, max(0.0, deadline - time.monotonic()))
                self.store.set_status(job_id, "Interrupted", note="server stopped", expect=ACTIVE)

    def recover(self) -> None:
        """Jobs left Running by a worker that is gone become Interrupted."""
        for job in self.store.jobs_with_status(["Running"]):
            if not worker_alive(job):
                self.store.set_status(job.id, "Interrupted", note="worker gone at server start")

    # -- the loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.tick()
            except Exception as exc:  # keep scheduling whatever one job did
                print(f"kiln scheduler: {exc!r}", file=sys.stderr, flush=True)

    def tick(self) -> None:
        with self.lock:
            self._reap()
            running = [j for j in self.store.jobs_with_status(["Running"])]
            slots = self.settings.max_running_jobs - len(running)
            held = gpus.holders(self.store, also=self._starting())
            for job in self.store.jobs_with_status(["Initialized", "Waiting"]):
                if slots <= 0:
                    break
                if job.type == "model" and not self._dataset_ready(job):
                    continue
                chosen = self._take_gpus(job, held)
                if chosen is None:
                    continue  # its GPUs are busy: a later job that fits may still start
                if job.type in gpus.GPU_JOBS:
                    job = gpus.record(self.store, job, chosen, self.inventory)
                share = gpus.job_request(job).share
                for g in chosen:
                    held.setdefault(g, []).append(share)
                self._spawn(job, chosen)
                slots -= 1

    def _starting(self) -> list[Job]:
        """Jobs whose worker this scheduler started and that are not Running yet (or any more)."""
        jobs = [self.store.get_job(job_id) for job_id, proc in self.procs.items() if not _exited(proc)]
        return [j for j in jobs if j is not None]

    def _take_gpus(self, job: Job, held: gpus.Holders) -> list[int] | None:
        """The GPUs the job gets now ([] on the CPU); None while it waits for them."""
        request = gpus.job_request(job)
        problem = request.problem(self.inventory)
        if problem is not None:
            self.store.set_status(
                job.id, "Error", error=f"{problem.field}: {problem.message} Clone it with fewer GPUs."
            )
            return None
        chosen = gpus.choose(request, self.inventory, held)
        if chosen is None and job.status == "Initialized":
            wanted = list(request.gpus) or f"{request.wanted(self.inventory)} free"
            self.store.set_status(job.id, "Waiting", note=f"waiting for GPU {wanted}", expect=("Initialized",))
        return chosen

    def gpus_available(self) -> dict[str, int]:
        """DIGITS' 'x/y GPUs available'."""
        return gpus.availability(self.store, self.inventory)

    def _dataset_ready(self, job: Job) -> bool:
        """A model waits for its dataset; if the dataset failed, so does the model."""
        ds = self.store.get_job(job.dataset_id or "")
        if ds is None:
            self.store.set_status(job.id, "Error", error="Its dataset was deleted. Pick another dataset and clone.")
            return False
        if ds.status == "Done":
            return True
        if ds.status in ("Error", "Aborted"):
            self.store.set_status(job.id, "Aborted", note=f"dataset {ds.status}")
            return False
        if job.status == "Initialized":
            self.store.set_status(job.id, "Waiting", note="waiting for its dataset")
        return False

    def _worker_env(self) -> dict[str, str]:
        """The data roots and read caps go along; OpenMP spins again for training (kiln.cli_serve.quiet_openmp)."""
        env = {**os.environ, **self.settings.worker_env(), **gpus.worker_env()}
        if env.pop("KILN_OMP_SET_BY_SERVE", None):
            env.pop("OMP_WAIT_POLICY", None)
        return env

    def _spawn(self, job: Job, chosen: list[int]) -> None:
        job_dir = self.settings.jobs_dir / job.id
        job_dir.mkdir(parents=True, exist_ok=True)
        log = open(job_dir / "worker.log", "ab")  # noqa: SIM115 (the worker keeps writing to it)
        cmd = [sys.executable, "-m", "kiln.jobs.worker", job.id, "--data-dir", str(self.settings.data_dir)]
        cmd += ["--gpus", ",".join(map(str, chosen)) or "none"]
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=self._worker_env(),
        )
        proc.spawned_at = time.time()  # type: ignore[attr-defined]
        self.procs[job.id] = proc
        log.close()
        # the worker claims the job itself; wait briefly so the next tick does not start it twice
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            current = self.store.get_job(job.id)
            if current is None or current.status not in ("Initialized", "Waiting"):
                return
            if self.procs[job.id].poll() is not None:
                break
            time.sleep(0.05)

    def _reap(self) -> None:
        for job_id, proc in list(self.procs.items()):
            if not _exited(proc):
                continue
            _end(proc, 0)  # a child the worker left behind goes with it
            del self.procs[job_id]
            job = self.store.get_job(job_id)
            if job is None or job.status not in ACTIVE:
                continue
            ran_it = job.status == "Running" and job.pid == proc.pid
            spawned_at = getattr(proc, "spawned_at", 0.0)
            never_claimed = job.status != "Running" and self.store.history(job_id)[-1]["ts"] < spawned_at
            if not (ran_it or never_claimed):
                continue  # the job was resumed since: another worker owns it now
            if job.abort_requested:
                self.store.set_status(job_id, "Aborted", note="worker stopped", expect=ACTIVE)
            elif proc.returncode < 0:  # killed by a signal (OOM killer, kill -9): not the job's fault
                note = f"worker killed by signal {-proc.returncode}; resume continues from the last snapshot"
                self.store.set_status(job_id, "Interrupted", note=note, expect=ACTIVE)
            else:
                self.store.set_status(
                    job_id,
                    "Error",
                    expect=ACTIVE,
                    error=(
                        f"The worker process exited with code {proc.returncode} before finishing "
                        f"(see worker.log in the job folder). Resume or clone the job."
                    ),
                )
        # workers started by someone else (the CLI, a previous server) that died
        for job in self.store.jobs_with_status(["Running"]):
            if job.id not in self.procs and not worker_alive(job):
                self.store.set_status(job.id, "Interrupted", note="worker gone")

    # -- actions --------------------------------------------------------------------------------
    def abort(self, job_id: str, wait: bool = False) -> bool:
        """See abort_job; the scheduler reaps its own workers as they exit."""
        return abort_job(self.store, job_id, wait=wait)


def abort_job(store: Store, job_id: str, wait: bool = False) -> bool:
    """Stop a job; False if it is not active. One not started yet is Aborted at once; a running
    worker gets SIGTERM (it stops at its next check and records Aborted), then SIGKILL if it is
    still there after KILL_AFTER_S. With `wait`, return once the worker has stopped; otherwise a
    thread sees it through (a web request answers at once)."""
    # one transaction: a queued job becomes Aborted; a worker claiming it at the same moment sees
    # the flag in its own transaction (Store.claim) and records Aborted instead of running it
    outcome = store.request_abort(job_id)
    if outcome is None:
        return False
    job = store.get_job(job_id)
    if outcome == "Aborted" or job is None or job.status != "Running":
        return True
    _signal(job, signal.SIGTERM)
    if wait:
        _finish_abort(store, job)
    else:
        threading.Thread(target=_finish_abort_later, args=(store.path, job), daemon=True).start()
    return True


def wait_gone(job: Job, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the job's worker process to exit; True once it has."""
    return _wait_until(lambda: not worker_alive(job), timeout)


def _wait_until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _signal(job: Job, sig: int) -> None:
    """SIGTERM to the worker; SIGKILL to its whole process group when it leads a session of its own
    (a worker the scheduler started; a CLI running a job in a terminal is killed alone)."""
    if job.pid and worker_alive(job):  # never signal a recycled pid
        try:
            if sig == signal.SIGKILL and os.getsid(job.pid) == job.pid:
                os.killpg(job.pid, sig)
            else:
                os.kill(job.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _ended(store: Store, job: Job) -> bool:
    """The worker exited, or recorded the end of this run (a CLI running jobs in-process goes on)."""
    if not worker_alive(job):
        return True
    current = store.get_job(job.id)
    return current is None or current.status != "Running" or current.pid != job.pid


def _finish_abort(store: Store, job: Job) -> None:
    """SIGKILL a worker that ignored SIGTERM; record Aborted for a worker that could not."""
    if not _wait_until(lambda: _ended(store, job), KILL_AFTER_S):
        _signal(job, signal.SIGKILL)
    # a worker process exits right after recording its end: wait for that too
    if wait_gone(job, KILL_AFTER_S):
        current = store.get_job(job.id)
        if current and current.status == "Running" and current.pid == job.pid:
            store.set_status(job.id, "Aborted", expect=("Running",), note="worker killed after abort")


def _finish_abort_later(db_path: Path, job: Job) -> None:
    store = Store(db_path)  # this thread's own connection
    try:
        _finish_abort(store, job)
    finally:
        store.close()
