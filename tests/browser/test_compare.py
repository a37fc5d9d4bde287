"""The home page's row actions and Compare in a real browser: tick two finished models, Compare, see
both models' curves and the differing setting highlighted; Group, Abort and Delete from the ticks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.store import Store
from kiln.training.config import TrainConfig
from tests.browser.conftest import TIMEOUT_MS, ThreadServer, login

pytestmark = pytest.mark.browser


def finished_model(store: Store, name: str, dataset_id: str, lr: float, accuracy: list[float]) -> str:
    """A Done model whose chart points are written straight into the store (nothing trains)."""
    config = {**TrainConfig().to_dict(), "train_epochs": len(accuracy), "learning_rate": lr}
    job_id = store.create_job("model", name, {"config": config}, "alice", dataset_id=dataset_id)
    store.set_status(job_id, "Running")
    for epoch, acc in enumerate(accuracy, 1):
        store.add_metrics(job_id, epoch, {"loss": 2.0 / epoch}, "train")
        store.add_metrics(job_id, epoch, {"loss": 2.2 / epoch, "accuracy": acc}, "val")
    store.set_status(job_id, "Done")
    return job_id


def job(store: Store, type_: str, name: str, status: str = "Done") -> str:
    job_id = store.create_job(type_, name, {}, "alice")
    if status != "Initialized":
        store.set_status(job_id, status)
    return job_id


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ThreadServer, dict[str, str]]]:
    """Two finished models on one dataset (learning rates 0.01 and 0.001), a third one, and datasets
    to act on; no scheduler, so a queued job stays Initialized until aborted."""
    data = tmp_path / "data"
    store = Store(data / "kiln.db")
    mnist = job(store, "dataset", "mnist")
    jobs = {
        "mnist": mnist,
        "fast": finished_model(store, "fast", mnist, 0.01, [80.0, 90.0, 95.0]),
        "slow": finished_model(store, "slow", mnist, 0.001, [40.0, 60.0, 70.0]),
        "other": finished_model(store, "other", mnist, 0.01, [50.0]),
        "a": job(store, "dataset", "set a"),
        "b": job(store, "dataset", "set b"),
        "queued": job(store, "dataset", "queued", "Initialized"),
        "pretrained": store.create_job(
            "pretrained_model",
            "lenet digits",
            {"info": {"framework": "pytorch", "has_labels": True}},
            "alice",
            status="Done",
        ),
    }
    store.close()
    srv = ThreadServer(data, scheduler=False)
    yield srv, jobs
    srv.stop()


@pytest.fixture
def tab(browser: Any, server: tuple[ThreadServer, dict[str, str]]) -> Iterator[Any]:
    """A logged-in tab that answers prompts with page.answer and records every dialog."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.dialogs, page.errors, page.answer = [], [], ""

    def on_dialog(dialog: Any) -> None:
        page.dialogs.append((dialog.type, dialog.message))
        dialog.accept(page.answer) if dialog.type == "prompt" else dialog.accept()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    login(page, server[0].url)
    try:
        yield page
    finally:
        context.close()


def tick(page: Any, job_id: str) -> None:
    page.locator(f"tr[data-id='{job_id}'] input.select").check()


def test_tick_two_models_and_compare_them(tab: Any, server: tuple[ThreadServer, dict[str, str]]) -> None:
    from playwright.sync_api import expect

    srv, jobs = server
    tab.goto(f"{srv.url}/")
    expect(tab.locator("#tab-models")).to_be_visible()
    compare = tab.locator("#compare-selected")
    expect(compare).to_be_disabled()
    tick(tab, jobs["fast"])
    expect(compare).to_be_disabled()  # one model: nothing to compare with
    tick(tab, jobs["slow"])
    expect(tab.locator("#n-selected")).to_have_text("2 selected")
    expect(compare).to_be_enabled()
    tab.fill("#filter", "s")  # the table re-renders (as on every event): the ticks stay
    expect(tab.locator(f"#models-table tr[data-id='{jobs['other']}']")).to_have_count(0)
    tab.fill("#filter", "")
    expect(tab.locator(f"#models-table tr[data-id='{jobs['other']}']")).to_have_count(1)
    expect(tab.locator(f"tr[data-id='{jobs['slow']}'] input.select")).to_be_checked()
    compare.click()
    tab.wait_for_url(re.compile(r"/models/compare\?ids="))
    assert set(tab.url.split("ids=")[1].split(",")) == {jobs["fast"], jobs["slow"]}

    chart = tab.locator("#accuracy-chart")
    expect(chart).to_have_attribute("data-traces", "2")  # one validation accuracy curve per model
    traces = tab.evaluate("document.getElementById('accuracy-chart').data.map((t) => [t.name, t.x, t.y])")
    assert sorted(t[0] for t in traces) == ["fast · accuracy (val)", "slow · accuracy (val)"]
    assert {tuple(t[2]) for t in traces} == {(80.0, 90.0, 95.0), (40.0, 60.0, 70.0)}
    assert all(t[1] == [1, 2, 3] for t in traces)
    expect(tab.locator("#loss-chart")).to_have_attribute("data-traces", "4")  # train and val loss each
    expect(tab.locator("#loss-chart .main-svg").first).to_be_visible()  # Plotly drew it

    tab.click("#x-time")  # by wall time: the seconds each model had run at each point
    expect(chart).to_have_attribute("data-x", "seconds")
    xs = tab.evaluate("document.getElementById('accuracy-chart').data.map((t) => t.x)")
    assert all(x == sorted(x) and all(v >= 0 for v in x) for x in xs) and xs != [[1, 2, 3], [1, 2, 3]]

    differs = tab.locator("#config-table tr[data-key='learning_rate']")
    expect(differs).to_have_class("differs")
    shown = tab.url.split("ids=")[1].split(",")  # the page's columns follow the ids' order
    expect(differs.locator("td")).to_have_text([{jobs["fast"]: "0.01", jobs["slow"]: "0.001"}[i] for i in shown])
    highlight = differs.locator("td").first.evaluate("(e) => getComputedStyle(e).backgroundColor")
    plain = tab.locator("#config-table tr[data-key='solver_type'] td").first
    assert highlight != plain.evaluate("(e) => getComputedStyle(e).backgroundColor")
    tab.check("#only-differences")
    expect(tab.locator("#config-table tr[data-key='solver_type']")).to_be_hidden()
    expect(differs).to_be_visible()
    assert not tab.errors, tab.errors


def test_group_abort_and_delete_the_ticked_rows(tab: Any, server: tuple[ThreadServer, dict[str, str]]) -> None:
    from playwright.sync_api import expect

    srv, jobs = server
    tab.goto(f"{srv.url}/?tab=1")
    expect(tab.locator("#tab-datasets")).to_be_visible()
    tick(tab, jobs["a"])
    tick(tab, jobs["b"])
    expect(tab.locator("#compare-selected")).to_be_disabled()  # datasets are not compared
    expect(tab.locator("#abort-selected")).to_be_disabled()  # nothing ticked is running
    tab.answer = "lab"
    tab.click("#group-selected")
    expect(tab.locator("#datasets-table .group-row", has_text="lab")).to_be_visible()
    assert srv.client.get(f"/jobs/{jobs['a']}/table_data.json").json()["job"]["group"] == "lab"

    tick(tab, jobs["queued"])
    tab.locator(f"tr[data-id='{jobs['b']}'] input.select").uncheck()
    tab.locator(f"tr[data-id='{jobs['a']}'] input.select").uncheck()
    tab.click("#abort-selected")
    expect(tab.locator(f"tr[data-id='{jobs['queued']}']")).to_have_attribute("data-status", "Aborted")

    tab.locator("#datasets-table .select-all").check()  # every dataset row; mnist is in use
    expect(tab.locator("#n-selected")).to_have_text("4 selected")
    tab.click("#delete-selected")
    for gone in ("a", "b", "queued"):
        expect(tab.locator(f"tr[data-id='{jobs[gone]}']")).to_have_count(0)
    expect(tab.locator(f"tr[data-id='{jobs['mnist']}']")).to_be_visible()  # refused: models depend on it
    alerts = [m for kind, m in tab.dialogs if kind == "alert"]
    assert len(alerts) == 1 and "3 deleted, 1 not" in alerts[0] and "depend on it" in alerts[0], tab.dialogs
    expect(tab.locator("#n-datasets")).to_have_text("1")
    assert not tab.errors, tab.errors


def test_the_pretrained_tab_lists_and_deletes(tab: Any, server: tuple[ThreadServer, dict[str, str]]) -> None:
    from playwright.sync_api import expect

    srv, jobs = server
    tab.goto(f"{srv.url}/?tab=3")  # DIGITS' tab number
    expect(tab.locator("#tab-pretrained")).to_be_visible()
    expect(tab.locator("#tab-models")).to_be_hidden()
    expect(tab.locator(".tab.active")).to_have_text("Pretrained Models (1)")
    head = tab.locator("#pretrained-table thead th").all_inner_texts()
    assert head[1:] == ["Name", "Framework", "Owner", "Labels", "Status", "Elapsed", "Submitted"]
    row = tab.locator(f"#pretrained-table tr[data-id='{jobs['pretrained']}']")
    expect(row.locator("td")).to_have_text(
        ["", "lenet digits", "pytorch", "alice", "yes", "Done", re.compile("."), re.compile(".")]
    )
    expect(row.locator("a")).to_have_attribute("href", f"/pretrained_models/{jobs['pretrained']}")
    tick(tab, jobs["pretrained"])
    expect(tab.locator("#compare-selected")).to_be_disabled()
    tab.click("#delete-selected")
    expect(row).to_have_count(0)
    expect(tab.locator("#n-pretrained")).to_have_text("0")
    expect(tab.locator("#pretrained-table tbody")).to_have_text("Nothing yet.")
    assert srv.client.get(f"/jobs/{jobs['pretrained']}/status").status_code == 404
    assert not tab.errors, tab.errors
