"""Small display helpers shared by templates and JSON rows."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kiln.store import STATUS_CSS


def duration(seconds: float | None) -> str:
    """'1 minute, 26 seconds' as DIGITS printed ETAs."""
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        n, seconds = divmod(seconds, size)
        if n:
            parts.append(f"{n} {unit}{'s' if n != 1 else ''}")
    return ", ".join(parts[:2]) or "0 seconds"


def timestamp(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def status_css(status: str) -> str:
    return STATUS_CSS.get(status, "default")


FILTERS: dict[str, Any] = {"duration": duration, "timestamp": timestamp, "status_css": status_css}
GLOBALS: dict[str, Any] = {"status_css": status_css}
