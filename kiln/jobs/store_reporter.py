"""The Reporter a job's engine code talks to, wired to the store."""

from __future__ import annotations

import time
from typing import Any

from kiln.store import Store


class StoreReporter:
    """Writes progress (throttled), metrics, snapshots and log lines to SQLite.

    Abort arrives as SIGTERM (sets `stop_flag`) or as the job's abort_requested column,
    polled at most once a second.
    """

    def __init__(self, store: Store, job_id: str, echo: Any = None, on_metrics: Any = None) -> None:
        self.store = store
        self.job_id = job_id
        self.echo = echo  # optional callable(fraction, message) for the CLI's bar
        self.on_metrics = on_metrics  # optional callable(epoch, values, phase) for the CLI
        self.stop_flag = False
        self._last_progress = 0.0
        self._last_poll = 0.0

    def progress(self, fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if self.echo:
            self.echo(fraction, message)
        if now - self._last_progress >= 0.25 or fraction >= 1.0:
            self._last_progress = now
            self.store.set_progress(self.job_id, fraction, message)

    def log(self, line: str) -> None:
        self.store.add_log(self.job_id, line)

    def metrics(self, epoch: float, values: dict[str, float], phase: str = "train") -> None:
        self.store.add_metrics(self.job_id, epoch, values, phase)
        if self.on_metrics:
            self.on_metrics(epoch, values, phase)

    def snapshot(self, epoch: float, path: str, values: dict[str, Any]) -> None:
        self.store.add_snapshot(self.job_id, epoch, path, values)

    def should_stop(self) -> bool:
        if self.stop_flag:
            return True
        now = time.monotonic()
        if now - self._last_poll >= 1.0:
            self._last_poll = now
            job = self.store.get_job(self.job_id)
            self.stop_flag = job is None or bool(job.abort_requested)
        return self.stop_flag
