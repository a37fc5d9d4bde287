"""Runs one job to the end in this process: `python -m kiln.jobs.worker JOB_ID --data-dir D`.

The scheduler starts one such process per job; `kiln dataset create` / `kiln train` call
`run_job` in their own process instead, so the CLI and the web UI share the same jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import psutil

from kiln.config import Settings
from kiln.jobs import gpus as gpus_mod
from kiln.jobs.errors import UserFacingError, failure_message
from kiln.jobs.group import Launch
from kiln.jobs.store_reporter import StoreReporter
from kiln.reporting import Stopped
from kiln.store import Job, Store


def run_job(
    settings: Settings,
    job_id: str,
    echo: Callable[[float, str], None] | None = None,
    on_metrics: Callable[..., None] | None = None,
    gpus: list[int] | None = None,
    launch: Launch | None = None,
) -> str:
    """Claim the job, run it, record the outcome; returns the final status.

    ``gpus``: what the scheduler gave the job ([] = none); None when no scheduler started it (the
    CLI): the GPUs are taken here, waiting for them if they are busy. ``launch``: where the job's
    torchrun group meets the other nodes' (``kiln train --nnodes``).
    """
    store = Store(settings.db_path)
    me = psutil.Process()
    reporter = StoreReporter(store, job_id, echo, on_metrics)
    if gpus is None and not _take_gpus_here(store, job_id, settings, reporter):
        job = store.get_job(job_id)
        store.close()
        return job.status if job else "missing"
    # SIGTERM is caught before the claim, so an abort that signals the moment the job is Running stops it
    previous = signal.signal(signal.SIGTERM, lambda *_: setattr(reporter, "stop_flag", True))
    # the claim honours an abort requested before it (Store.claim records Aborted instead)
    if not store.claim(job_id, pid=os.getpid(), pid_started=me.create_time()):
        signal.signal(signal.SIGTERM, previous)
        job = store.get_job(job_id)
        store.close()
        return job.status if job else "missing"
    try:
        job = store.get_job(job_id)
        assert job is not None
        job_dir = settings.jobs_dir / job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        with _panel(job, job_dir, settings):
            summary = _dispatch(job, job_dir, settings, store, reporter, launch)
        store.update_fields(job_id, summary=summary)
        store.set_status(job_id, "Done")
        return "Done"
    except Stopped:
        # only from Running: a server shutting down marks its jobs Interrupted before SIGTERM
        if store.set_status(job_id, "Aborted", note="aborted by user", expect=("Running",)):
            return "Aborted"
        job = store.get_job(job_id)
        return job.status if job else "missing"
    except Exception as exc:  # the job failed: say what and what to do, keep the traceback in the log
        store.add_log(job_id, traceback.format_exc())
        store.set_status(job_id, "Error", error=failure_message(exc))
        return "Error"
    finally:
        signal.signal(signal.SIGTERM, previous)
        store.close()


def _take_gpus_here(store: Store, job_id: str, settings: Settings, reporter: StoreReporter) -> bool:
    """A job run without a scheduler (the CLI) takes its GPUs itself, waiting while they are busy;
    False when it was aborted meanwhile. Jobs on the CPU go straight on."""
    job = store.get_job(job_id)
    if job is None or job.type not in gpus_mod.GPU_JOBS or job.status not in ("Initialized", "Waiting"):
        return True
    inventory = gpus_mod.Inventory.detect(settings)
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # cuda:<i> is GPU #i (before CUDA starts)
    told = False
    while True:
        job = store.get_job(job_id)
        if job is None or job.abort_requested or job.status not in ("Initialized", "Waiting"):
            return job is not None  # an abort asked meanwhile: the claim records it
        request = gpus_mod.job_request(job)
        problem = request.problem(inventory)
        if problem is not None:
            store.set_status(job_id, "Error", error=f"{problem.field}: {problem.message} Clone it with fewer GPUs.")
            return False
        chosen = gpus_mod.choose(request, inventory, gpus_mod.holders(store))
        if chosen is not None:
            gpus_mod.record(store, job, chosen, inventory)
            return True
        if not told:
            reporter.log(f"Waiting for GPU {list(request.gpus) or request.wanted(inventory)}: other jobs hold them")
            if reporter.echo:
                reporter.echo(0.0, "waiting for GPUs")
            told = True
        time.sleep(1.0)


def _panel(job: Job, job_dir: Path, settings: Settings) -> contextlib.AbstractContextManager:
    """The hardware panel of a model or evaluation job (kiln.hardware.Sampler): its GPUs, its processes."""
    if job.type not in gpus_mod.GPU_JOBS:
        return contextlib.nullcontext()
    from kiln.hardware import Sampler

    mine = [int(g) for g in job.params.get("gpus") or ()]
    inventory = gpus_mod.Inventory.detect(settings)
    by_nvml = {g.nvml: g.index for g in inventory.gpus if g.index in mine}
    return Sampler(job_dir, by_nvml if inventory.real else None)


def _dispatch(
    job: Job, job_dir: Path, settings: Settings, store: Store, reporter: StoreReporter, launch: Launch | None
) -> dict:
    if job.type == "dataset":
        from kiln.jobs.dataset_job import run_dataset

        return run_dataset(job, job_dir, reporter, settings)
    if job.type == "model":
        from kiln.jobs.model_job import run_model

        rewind_charts(store, job, job_dir)
        return run_model(job, job_dir, settings, reporter, launch)
    if job.type == "evaluation":
        from kiln.jobs.evaluation_job import run_evaluation

        return run_evaluation(job, job_dir, settings, reporter)
    raise UserFacingError(f"Unknown job type {job.type!r}.")


def rewind_charts(store: Store, job: Job, job_dir: Path) -> None:
    """Before a model runs again: drop the chart points its run will redo, those after the snapshot
    it continues from (all of them when it starts over), so the charts go on without doubles."""
    from kiln.jobs.model_job import resume_point

    start = resume_point(job_dir)
    store.clear_metrics_after(job.id, start if start is not None else float("-inf"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kiln-worker")
    parser.add_argument("job_id")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--gpus", help="the GPUs the scheduler gave the job: 0,1 or none")
    args = parser.parse_args(argv)
    settings = Settings.from_env(data_dir=args.data_dir)
    started = time.time()
    given = None if args.gpus is None else [int(g) for g in args.gpus.split(",") if g.strip().isdigit()]
    status = run_job(settings, args.job_id, gpus=given)
    print(f"job {args.job_id}: {status} after {time.time() - started:.1f} s", flush=True)
    return 0 if status in ("Done", "Aborted") else 1


if __name__ == "__main__":
    sys.exit(main())
