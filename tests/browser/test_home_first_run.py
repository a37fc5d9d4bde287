"""The home page on a first run: it opens the tab that has something and points at the next step."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kiln.config import Settings
from kiln.store import Store
from kiln.web.app import create_app
from tests.browser.conftest import TIMEOUT_MS, login
from tests.conftest import start_server, stop_server


def done_job(
    store: Store, type_: str, name: str, params: dict[str, Any] | None = None, dataset_id: str | None = None
) -> str:
    job_id = store.create_job(type_, name, params or {"config": {"network": "lenet"}}, "alice", dataset_id=dataset_id)
    store.set_status(job_id, "Running")
    store.set_status(job_id, "Done")
    return job_id


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[Store, TestClient]]:
    """An in-process app (no scheduler: jobs made here stay as made) and its store."""
    settings = Settings.from_env(data_dir=tmp_path / "data")
    app = create_app(settings, run_scheduler=False)
    store = Store(settings.db_path)
    with TestClient(app) as client:
        yield store, client
    store.close()


def active_tab(html: str) -> str:
    panes = re.findall(r'<section id="tab-(\w+)" class="tabpane active">', html)
    assert len(panes) == 1, panes
    buttons = re.findall(r'<button class="tab active" data-tab="(\w+)">', html)
    assert buttons == panes
    return panes[0]


def test_nothing_yet_opens_datasets_and_says_create_a_dataset(home: tuple[Store, TestClient]) -> None:
    _, client = home
    html = client.get("/").text
    assert active_tab(html) == "datasets"
    assert 'id="next-step-link" href="/datasets/images/classification/new">Create a dataset</a>' in html


def test_a_dataset_and_no_model_opens_datasets_and_points_at_a_new_model(home: tuple[Store, TestClient]) -> None:
    store, client = home
    older = done_job(store, "dataset", "older")
    mnist = done_job(store, "dataset", "mnist")
    building = store.create_job("dataset", "still building", {}, "alice")  # newest, not finished
    html = client.get("/").text
    assert active_tab(html) == "datasets"
    assert "Next: train a model on <strong>mnist</strong>" in html
    assert f'href="/models/images/classification/new?dataset={mnist}">New model</a>' in html
    assert older != mnist != building


def test_models_open_the_models_tab_without_a_pointer(home: tuple[Store, TestClient]) -> None:
    store, client = home
    ds = done_job(store, "dataset", "mnist")
    done_job(store, "model", "lenet", dataset_id=ds)
    html = client.get("/").text
    assert active_tab(html) == "models"
    assert 'id="next-step"' not in html


def test_an_explicit_tab_is_kept(home: tuple[Store, TestClient]) -> None:
    store, client = home
    ds = done_job(store, "dataset", "mnist")
    assert active_tab(client.get("/?tab=2").text) == "models"
    done_job(store, "model", "lenet", dataset_id=ds)
    assert active_tab(client.get("/?tab=1").text) == "datasets"


def test_first_run_in_the_browser(browser: Any, tmp_path: Path) -> None:
    """With only the demo dataset, the page shows its row (not "Nothing yet.") and the link leads on."""
    from playwright.sync_api import expect

    data = tmp_path / "data"
    data.mkdir()
    store = Store(data / "kiln.db")
    ds = done_job(store, "dataset", "mnist")
    store.close()
    server = start_server(data)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        expect.set_options(timeout=TIMEOUT_MS)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        login(page, server.url)
        page.goto(f"{server.url}/")
        expect(page.locator("#tab-datasets")).to_be_visible()
        expect(page.locator("#tab-models")).to_be_hidden()
        expect(page.locator(f"#datasets-table tr[data-id='{ds}']")).to_be_visible()
        page.click("#next-step-link")
        page.wait_for_url(f"{server.url}/models/images/classification/new?dataset={ds}", wait_until="commit")
        expect(page.locator("#model-form")).to_be_visible()
    finally:
        context.close()
        stop_server(server)
