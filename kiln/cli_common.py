"""What every `kiln` command shares: global options, settings, progress bars, running and
following jobs, and how errors are printed (a line on stderr, a non-zero exit)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from kiln.config import Settings
from kiln.jobs.errors import UserFacingError
from kiln.store import ACTIVE, Store

Progress = Callable[[float, str], None]


def add_global_options(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """Options every command takes, before or after its name (`kiln --data-dir D serve` = `kiln serve --data-dir D`)."""
    parser.add_argument(
        "--data-dir", default=default, help="kiln.db and jobs/ live here (KILN_DATA_DIR, default ./kiln-data)"
    )


class KilnParser(argparse.ArgumentParser):
    """A parser whose sub-commands (and theirs) accept the global options too.

    They default to SUPPRESS there, so a value given before the sub-command is not reset by it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_global_options(self, default=argparse.SUPPRESS)


def settings_of(args: argparse.Namespace, **extra: Any) -> Settings:
    return Settings.from_env(data_dir=getattr(args, "data_dir", None), **extra)


def refused(exc: UserFacingError) -> int:
    """A refusal or failure the user can act on: its message, exit status 1."""
    print(f"error: {exc.message}", file=sys.stderr)
    return 1


def print_form_errors(errors: dict[str, list[str]]) -> int:
    """Per-field messages, one line each, as the web form shows them; exit status 2."""
    for field, messages in errors.items():
        print(f"error: {field}: {' '.join(messages)}", file=sys.stderr)
    return 2


def bar(total: int | None = None, desc: str = "") -> Progress:
    """A tqdm bar driven by fractions (engine progress) or counts."""
    from tqdm import tqdm

    t = tqdm(total=total or 100, desc=desc, unit="%" if total is None else "img", leave=True)

    def update(done: float, message: str = "") -> None:
        value = done * 100 if total is None else done
        t.n = min(t.total, round(value, 1))
        if message:
            t.set_postfix_str(message[:60], refresh=False)
        t.refresh()
        if t.n >= t.total:
            t.close()

    return update


def run_here(
    settings: Settings, store: Store, job_id: str, progress: Progress, on_metrics: Callable[..., None] | None = None
) -> str:
    """Run the job in this process; if a server's worker claimed it first, follow that one."""
    from kiln.jobs.worker import run_job

    status = run_job(settings, job_id, echo=progress, on_metrics=on_metrics)
    return follow(store, job_id, progress) if status in ACTIVE else status


def follow(store: Store, job_id: str, progress: Progress) -> str:
    """Wait for a job run by someone else (the server's worker), mirroring its progress."""
    while True:
        job = store.get_job(job_id)
        if job is None:
            return "missing"
        progress(job.progress, job.message)
        if job.status not in ACTIVE:
            return job.status
        time.sleep(0.5)


def report_end(store: Store, job_id: str, status: str) -> int:
    """The final status, the error (what failed, what to do) and the summary; 0 only for Done."""
    job = store.get_job(job_id)
    print(f"{job_id}: {status}", flush=True)
    if job and job.error:
        print(f"error: {job.error}", file=sys.stderr)
    if job and job.summary:
        print(json.dumps(job.summary, indent=1))
    return 0 if status == "Done" else 1
