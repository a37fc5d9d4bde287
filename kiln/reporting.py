"""How engine code (dataset packing, training) reports to whoever runs it.

The engine knows nothing of SQLite or HTTP: a worker wires a Reporter to the store,
the CLI to a progress bar, tests to a list.
"""

from __future__ import annotations

from typing import Any, Protocol


class Reporter(Protocol):
    def progress(self, fraction: float, message: str = "") -> None:
        """Overall progress of the job in [0, 1]."""

    def log(self, line: str) -> None:
        """A human-readable line for the job log."""

    def metrics(self, epoch: float, values: dict[str, float], phase: str = "train") -> None:
        """Metric values at a (fractional) epoch; phase is 'train' or 'val'."""

    def snapshot(self, epoch: float, path: str, values: dict[str, Any]) -> None:
        """A snapshot was written (atomically) at path."""

    def should_stop(self) -> bool:
        """True once the job has been asked to stop (abort)."""


class RecordingReporter:
    """Collects everything; used by tests and notebooks."""

    def __init__(self) -> None:
        self.fractions: list[float] = []
        self.lines: list[str] = []
        self.rows: list[tuple[float, dict[str, float], str]] = []
        self.snapshots: list[tuple[float, str, dict[str, Any]]] = []
        self.stop = False

    def progress(self, fraction: float, message: str = "") -> None:
        self.fractions.append(fraction)

    def log(self, line: str) -> None:
        self.lines.append(line)

    def metrics(self, epoch: float, values: dict[str, float], phase: str = "train") -> None:
        self.rows.append((epoch, dict(values), phase))

    def snapshot(self, epoch: float, path: str, values: dict[str, Any]) -> None:
        self.snapshots.append((epoch, path, dict(values)))

    def should_stop(self) -> bool:
        return self.stop


class Stopped(Exception):
    """Raised by engine code when its reporter says should_stop(); the worker marks the job Aborted."""
