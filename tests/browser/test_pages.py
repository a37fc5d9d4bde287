"""The pages in a real browser (Chromium via Playwright) against a real `kiln serve`.

Every wait is an auto-waiting `expect(...)` with a generous timeout; nothing asserts a duration.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import Server, api_dataset

pytestmark = pytest.mark.browser

CLASSES = {"circle": 20, "hot_dog": 20, "square": 20}  # "hot_dog" is shown as "hot dog"


def expect(*args: Any, **kw: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(*args, **kw)


def mark_page(page: Any) -> None:
    """Tag the loaded document; a reload or navigation would lose the tag."""
    page.wait_for_load_state("load")
    page.evaluate("window.__marker = 1")


def assert_not_reloaded(page: Any) -> None:
    assert page.evaluate("window.__marker") == 1, "the page was reloaded"


def chart_points(page: Any) -> int:
    return int(page.get_attribute("#combined-chart", "data-points") or 0)


def test_dataset_end_to_end(page: Any, live_server: Server, make_folder: Callable[..., Path]) -> None:
    folder = make_folder(CLASSES)
    page.goto(f"{live_server.url}/datasets/images/classification/new")
    page.select_option("#resize_channels", "1")
    page.fill("#resize_width", "28")
    page.fill("#resize_height", "28")
    page.check("input[name=method][value=folder]")
    page.fill("#folder_train", str(folder))
    page.fill("#folder_pct_val", "25")
    page.fill("#dataset_name", "shapes")
    with page.expect_response(re.compile(r"/datasets/[0-9a-f-]+$")) as first_render:
        page.click("#create-dataset")
    page.wait_for_url(re.compile(r"/datasets/[0-9a-f-]+$"))
    mark_page(page)
    # The page was rendered while the job was still queued (a worker process cannot have read 60
    # images between the redirect and this GET), so what follows is the live update at work.
    assert 'id="not-ready"' in first_render.value.text()

    expect(page.locator("#title-name")).to_have_text("shapes")
    expect(page.locator("#job-status")).to_have_text("Done", timeout=120_000)
    counts = page.locator("#dataset-counts")
    expect(counts).to_be_visible()
    expect(counts).to_contain_text("3 classes")
    train = page.locator("#dataset-counts .count[data-split=train]")
    val = page.locator("#dataset-counts .count[data-split=val]")
    expect(train).to_have_text("45")
    expect(val).to_have_text("15")
    expect(page.locator("#job-progress-text")).to_have_text("100%")
    expect(page.locator("#mean-image")).to_be_visible()
    expect(page.locator("#not-ready")).to_have_count(0)
    explore = page.locator(".explore-link[data-split=train]")
    expect(explore).to_be_visible()
    assert_not_reloaded(page)
    assert not page.errors, page.errors

    explore.click()
    page.wait_for_url(re.compile(r"/explore\?"))
    total = page.locator("#explore-total")
    expect(total).to_contain_text("45 images")
    figures = page.locator("#gallery figure.thumb")
    expect(figures).to_have_count(25)  # the default page size
    assert set(figures.evaluate_all("els => els.map(e => e.dataset.label)")) == {"circle", "hot dog", "square"}
    before = total.inner_text()

    page.click("#label-filter .label-link[data-label='hot dog']")
    page.wait_for_url(re.compile(r"label=1"))
    expect(total).not_to_have_text(before)
    expect(total).to_contain_text("15 images labelled hot dog")
    expect(figures).to_have_count(15)
    labels = figures.evaluate_all("els => els.map(e => e.dataset.label)")
    assert labels and all(label == "hot dog" for label in labels), labels
    expect(page.locator("#label-filter .label-link[data-label='hot dog']")).to_have_class(re.compile(r"\bactive\b"))
    for img in page.locator("#gallery figure.thumb img").all()[:3]:  # the thumbnails really load
        img.scroll_into_view_if_needed()
        expect(img).to_have_js_property("complete", True)
        assert img.evaluate("e => e.naturalWidth") == 28


def test_dataset_form_errors_shown_next_to_fields(page: Any, live_server: Server) -> None:
    page.goto(f"{live_server.url}/datasets/images/classification/new")
    page.fill("#resize_width", "0")
    page.fill("#folder_train", "")
    page.fill("#dataset_name", "broken")
    with page.expect_navigation() as nav:
        page.click("#create-dataset")
    assert nav.value.status == 400
    expect(page.locator("#form-errors")).to_be_visible()
    width_error = page.locator("label.field:has(#resize_width) .field-error[data-field=resize_width]")
    folder_error = page.locator("label.field:has(#folder_train) .field-error[data-field=folder_train]")
    expect(width_error).to_be_visible()
    expect(width_error).not_to_be_empty()
    expect(folder_error).to_be_visible()
    expect(folder_error).not_to_be_empty()
    expect(page.locator("label.field:has(#resize_width)")).to_have_class(re.compile(r"\bhas-error\b"))
    # what was typed comes back, so nothing has to be typed again
    expect(page.locator("#dataset_name")).to_have_value("broken")
    expect(page.locator("#resize_width")).to_have_value("0")
    # and fields that were fine carry no error
    expect(page.locator(".field-error[data-field=dataset_name]")).to_have_count(0)
    # and no job was queued
    names = [d["name"] for d in live_server.client.get("/index.json").json()["datasets"]]
    assert "broken" not in names, names


def train_x(server: Server, model_id: str) -> list[float]:
    return server.client.get(f"/models/{model_id}/metrics.json").json()["series"]["loss (train)"]["x"]


def test_model_train_abort_resume_classify(page: Any, live_server: Server, make_folder: Callable[..., Path]) -> None:
    """A model far too long to finish during the test, so each abort finds it running on any machine."""
    folder = make_folder({"circle": 60, "hot_dog": 60, "square": 60})
    dataset_id = api_dataset(live_server, folder, "bands")

    page.goto(f"{live_server.url}/models/images/classification/new")
    page.select_option("#dataset", dataset_id)
    expect(page.locator("#dataset-summary")).not_to_be_empty()
    page.check("#net-lenet")
    page.fill("#train_epochs", "1000")
    page.fill("#snapshot_interval", "1")
    page.fill("#val_interval", "1")
    page.fill("#random_seed", "1")
    page.select_option("#device", "cpu")
    page.fill("#model_name", "lenet-bands")
    page.click("#create-model")
    page.wait_for_url(re.compile(r"/models/[0-9a-f-]+$"), timeout=120_000)
    model_id = page.url.rsplit("/", 1)[1]
    mark_page(page)

    status = page.locator("#job-status")
    chart = page.locator("#combined-chart")
    # the loss chart gains points while it trains, without a reload
    expect(status).to_have_text("Running", timeout=120_000)
    expect(chart).to_have_attribute("data-points", re.compile(r"^[1-9]\d*$"), timeout=120_000)
    first = chart_points(page)
    expect(chart).not_to_have_attribute("data-points", str(first))
    second = chart_points(page)
    assert second > first
    expect(chart.locator(".main-svg").first).to_be_visible()
    expect(page.locator("#snapshot_epoch option").first).to_be_attached(timeout=120_000)  # a first snapshot

    page.click("#abort-job")
    expect(status).to_have_text("Aborted")
    expect(page.locator("#resume-job")).to_be_visible()
    expect(page.locator("#abort-job")).to_be_hidden()
    before = chart_points(page)
    assert before >= second
    stopped_at = max(train_x(live_server, model_id))
    assert stopped_at < 1000
    assert_not_reloaded(page)

    page.click("#resume-job")
    expect(status).to_have_text("Running", timeout=120_000)
    page.wait_for_function(  # the chart goes on growing after the resume, live
        "n => +document.querySelector('#combined-chart').dataset.points > n", arg=before, timeout=120_000
    )
    deadline = time.monotonic() + 120
    while max(train_x(live_server, model_id)) <= stopped_at:  # and training goes past where it stopped
        assert time.monotonic() < deadline, "no progress after resuming"
        time.sleep(0.2)
    expect(page.locator("#abort-job")).to_be_visible()
    page.click("#abort-job")
    expect(status).to_have_text("Aborted")
    history = page.locator("#job-history td:first-child").all_inner_texts()
    assert history == ["Initialized", "Running", "Aborted", "Initialized", "Running", "Aborted"], history
    train = train_x(live_server, model_id)
    assert train == sorted(set(train)) and max(train) > stopped_at
    assert_not_reloaded(page)

    # test a single image: the body was swapped in live, with the snapshots and the form
    image = folder / "hot_dog" / "0003.png"
    epoch = page.locator("#snapshot_epoch").input_value()
    page.set_input_files("#image_file", str(image))
    page.click("#classify-one-button")
    predictions = page.locator("#predictions li")
    expect(predictions.first).to_be_visible()
    texts = predictions.all_inner_texts()
    want = live_server.client.post(
        "/models/images/classification/classify_one.json",
        data={"job_id": model_id, "image_path": str(image), "snapshot_epoch": epoch},
    ).json()["predictions"]
    assert len(texts) == len(want) == 3, (texts, want)
    for text, (label, pct) in zip(texts, want):  # what the page shows is what the API answers
        assert re.fullmatch(r"\d+(\.\d+)?% \S.*", text), texts
        assert text.endswith(label) and float(text.split("%")[0]) == pytest.approx(pct, abs=0.01), (texts, want)
    assert_not_reloaded(page)
    assert [d for d in page.dialogs if d[0] == "alert"] == [], page.dialogs
    assert not page.errors, page.errors


def test_home_page_rows_appear_live(page: Any, live_server: Server, make_folder: Callable[..., Path]) -> None:
    folder = make_folder({"a": 5, "b": 5})
    page.goto(f"{live_server.url}/")
    mark_page(page)
    page.click(".tab[data-tab=datasets]")
    expect(page.locator("#tab-datasets")).to_have_class(re.compile(r"\bactive\b"))
    rows = page.locator("#datasets-table tbody tr[data-id]")
    expect(page.locator("#datasets-table tbody tr").first).to_be_attached()  # the first load is done
    start = rows.count()

    name = f"live-{int(time.time() * 1000) % 100000}"
    job_id = api_dataset(live_server, folder, name, wait=False)
    row = page.locator(f"#datasets-table tbody tr[data-id='{job_id}']")
    expect(row).to_be_visible()
    expect(row.locator("a")).to_have_text(name)
    expect(row.locator("a")).to_have_attribute("href", f"/datasets/{job_id}")
    expect(row).to_have_attribute("data-status", "Done", timeout=120_000)
    expect(rows).to_have_count(start + 1)
    expect(page.locator("#n-datasets")).to_have_text(str(start + 1))
    assert_not_reloaded(page)
    assert not page.errors, page.errors
