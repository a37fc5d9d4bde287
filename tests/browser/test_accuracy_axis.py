"""The model page's accuracy axis follows the data, so a run between 97 and 99.5 % is not a flat line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kiln.store import Store
from kiln.training.config import TrainConfig
from tests.browser.conftest import TIMEOUT_MS
from tests.conftest import Server, start_server, stop_server


def model_with_metrics(store: Store, name: str, val_accuracy: list[float], train_accuracy: list[float]) -> str:
    """A finished model job whose chart points are written straight into the store (nothing trains)."""
    config = {**TrainConfig().to_dict(), "train_epochs": len(val_accuracy)}
    job_id = store.create_job("model", name, {"config": config}, "alice")
    for epoch, acc in enumerate(val_accuracy, 1):
        store.add_metrics(job_id, epoch, {"loss": 0.3 / epoch, "accuracy": acc}, "val")
    for epoch, acc in enumerate(train_accuracy, 1):
        store.add_metrics(job_id, epoch - 0.5, {"loss": 0.4 / epoch, "accuracy": acc}, "train")
    store.set_status(job_id, "Running")
    store.set_status(job_id, "Done")
    return job_id


@pytest.fixture(scope="module")
def charts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, dict[str, str]]]:
    data = tmp_path_factory.mktemp("kiln-axis")
    store = Store(data / "kiln.db")
    jobs = {
        "high": model_with_metrics(store, "high", [97.0, 98.6, 99.5], [97.4, 99.0, 99.2]),
        "wide": model_with_metrics(store, "wide", [12.0, 60.0, 100.0], []),
        "none": model_with_metrics(store, "none", [], []),
    }
    store.close()
    server = start_server(data)  # started after the jobs are Done: its scheduler has nothing to run
    yield server, jobs
    stop_server(server)


def accuracy_range(browser: Any, server: Server, job_id: str) -> list[float]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto(f"{server.url}/models/{job_id}")
        page.wait_for_selector("#combined-chart[data-points]", state="attached")
        return page.evaluate("document.getElementById('combined-chart').layout.yaxis2.range")
    finally:
        context.close()


def test_a_high_accuracy_run_fills_the_axis(browser: Any, charts: tuple[Server, dict[str, str]]) -> None:
    server, jobs = charts
    lo, hi = accuracy_range(browser, server, jobs["high"])
    assert 95.0 <= lo < 97.0 and 99.5 < hi <= 100.0  # padded around 97 .. 99.5, never past 100


def test_the_axis_stays_within_0_and_100(browser: Any, charts: tuple[Server, dict[str, str]]) -> None:
    server, jobs = charts
    lo, hi = accuracy_range(browser, server, jobs["wide"])
    assert 0.0 <= lo < 12.0 and hi == 100.0
    assert accuracy_range(browser, server, jobs["none"]) == [0, 100]  # no points yet: the whole scale
