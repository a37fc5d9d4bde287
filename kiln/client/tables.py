"""Rows as tables: a pandas DataFrame when pandas is installed, else the list of dicts itself."""

from __future__ import annotations

import csv
import io
from typing import Any

Rows = list[dict[str, Any]]


def has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True


def table(rows: Rows, columns: list[str] | None = None, as_frame: bool | None = None) -> Any:
    """``rows`` as a DataFrame (``as_frame`` None: when pandas is installed) or as they are."""
    if as_frame is None:
        as_frame = has_pandas()
    if not as_frame:
        return rows
    import pandas as pd

    return pd.DataFrame(rows, columns=columns)


def metric_rows(series: dict[str, dict[str, list[float]]]) -> Rows:
    """metrics.json's series (``{"loss (train)": {"x": epochs, "y": values}, ...}``) as one row per
    epoch at which anything was measured: ``{"epoch", "loss (train)", "accuracy (val)", "lr"...}``;
    a series not measured at that epoch has None there."""
    by_epoch: dict[float, dict[str, Any]] = {}
    names = list(series)
    for name in names:
        for x, y in zip(series[name].get("x", []), series[name].get("y", [])):
            by_epoch.setdefault(float(x), {})[name] = y
    return [{"epoch": epoch, **{n: values.get(n) for n in names}} for epoch, values in sorted(by_epoch.items())]


def csv_rows(text: str) -> Rows:
    """An evaluation's classifications.csv as rows; percentages as floats."""
    rows: Rows = []
    for row in csv.DictReader(io.StringIO(text)):
        out: dict[str, Any] = dict(row)
        for key, value in row.items():
            if key and key.endswith("_percent") and value not in (None, ""):
                out[key] = float(value)
        rows.append(out)
    return rows
