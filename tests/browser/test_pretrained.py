"""Pretrained models (issue 10) in a real browser, as DIGITS users walked it: Make pretrained model from
a model's page, see it on the home page's third tab and its own page, download it, upload a model's
archive as another, fine-tune one of them on a dataset with another class count; a bad archive is
refused on the page."""

from __future__ import annotations

import json
import os
import re
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import Server, api_dataset

pytestmark = pytest.mark.browser

FIRST = {"circle": 8, "square": 8, "stripe": 8}  # 24 grey 28x28 images: one epoch takes seconds
SECOND = {"dot": 8, "ring": 8}  # another class count: ip2 cannot keep the first one's weights
ID = r"[0-9a-f-]+"


def expect(*args: Any, **kw: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(*args, **kw)


def api_lenet(server: Server, dataset_id: str, name: str) -> str:
    """LeNet, 1 epoch on the CPU, trained by the server's scheduler; returns the model's id."""
    fields = {
        "dataset": dataset_id,
        "model_name": name,
        "standard_networks": "lenet",
        "train_epochs": "1",
        "random_seed": "1",
        "device": "cpu",
    }
    res = server.client.post("/models/images/classification.json", data=fields)
    assert res.status_code == 200, res.text
    model_id = res.json()["id"]
    assert server.wait_job(model_id, timeout=300)["status"] == "Done", server.wait_job(model_id)
    return model_id


def wait_model_done(page: Any, base_url: str, model_id: str, timeout: float = 300) -> dict[str, Any]:
    """Polls /models/<id>.json through the page's own (logged-in) request context."""
    deadline = time.monotonic() + timeout
    while True:
        res = page.request.get(f"{base_url}/models/{model_id}.json")
        assert res.ok, res.text()
        model = res.json()
        assert model["status"] not in ("Error", "Aborted"), model
        if model["status"] == "Done":
            return model
        assert time.monotonic() < deadline, f"model still {model['status']} after {timeout} s"
        time.sleep(0.5)


def make_pretrained(page: Any, base_url: str, model_id: str) -> str:
    """Make pretrained model on the model page: the home page's Pretrained Models tab shows the new row."""
    page.goto(f"{base_url}/models/{model_id}")
    expect(page.locator("#job-status")).to_have_text("Done")
    page.click("#make-pretrained")
    page.wait_for_url(f"{base_url}/?tab=3")
    expect(page.locator("#tab-pretrained")).to_be_visible()
    expect(page.locator("#tab-models")).to_be_hidden()
    row = page.locator("#pretrained-table tbody tr[data-id]")
    expect(row).to_have_count(1)
    expect(row.locator("a")).to_have_text("lenet-base (epoch 1)")
    expect(row.locator("td").nth(2)).to_have_text("pytorch")
    expect(row.locator("td").nth(4)).to_have_text("yes")  # it has labels
    expect(page.locator("#n-pretrained")).to_have_text("1")
    pre_id = row.get_attribute("data-id")
    row.locator("a").click()
    page.wait_for_url(f"{base_url}/pretrained_models/{pre_id}")
    return pre_id


def check_page_and_download(page: Any, tmp_path: Path) -> None:
    """The pretrained model's page: network, classes, labels; Download gives a .tar.gz of the same."""
    expect(page.locator("#title-name")).to_have_text("lenet-base (epoch 1)")
    expect(page.locator("#pretrained-network")).to_have_text("lenet")
    expect(page.locator("#pretrained-classes")).to_have_text("3")
    expect(page.locator("#pretrained-labels")).to_have_text(", ".join(sorted(FIRST)))
    expect(page.locator("#pretrained-text")).to_contain_text('name: "ip2"')
    with page.expect_download() as download:
        page.click("#download-tar-gz")
    name = download.value.suggested_filename
    assert name.endswith(".tar.gz"), name
    saved = tmp_path / name
    download.value.save_as(saved)
    with tarfile.open(saved) as tf:
        info = json.load(tf.extractfile(tf.getmember("info.json")))  # type: ignore[arg-type]
    assert info["labels"] == sorted(FIRST), info


def upload_archive(page: Any, base_url: str, archive: Path, name: str) -> str:
    """The Load page's "Upload an archive" form: lands on the new pretrained model's page."""
    page.goto(f"{base_url}/pretrained_models/new")
    page.set_input_files("#archive", str(archive))
    page.fill("#archive-name", name)
    page.click("#upload-archive-button")
    page.wait_for_url(re.compile(rf"/pretrained_models/{ID}$"))
    expect(page.locator("#title-name")).to_have_text(name)
    expect(page.locator("#pretrained-classes")).to_have_text("3")
    return page.url.rsplit("/", 1)[1]


def finetune(page: Any, base_url: str, dataset_id: str, pre_ids: list[str], pick: str) -> str:
    """New Model, Pretrained tab: both are listed; pick one, train on ``dataset_id``; returns the model's id."""
    page.goto(f"{base_url}/models/images/classification/new")
    page.select_option("#dataset", dataset_id)
    expect(page.locator("#dataset-summary")).not_to_be_empty()
    expect(page.locator("#pane-pretrained")).to_be_hidden()
    page.click("#tab-pretrained")
    expect(page.locator("#tab-pretrained")).to_have_class(re.compile(r"\bactive\b"))
    expect(page.locator("#pane-pretrained")).to_be_visible()
    expect(page.locator("#pane-standard")).to_be_hidden()
    expect(page.locator("#method")).to_have_value("pretrained")
    radios = page.locator("#pretrained-networks input[type=radio]")
    expect(radios).to_have_count(2)
    assert sorted(radios.evaluate_all("rs => rs.map(r => r.value)")) == sorted(pre_ids)
    page.check(f"#pre-{pick}")
    page.fill("#train_epochs", "1")
    page.fill("#random_seed", "1")
    page.select_option("#device", "cpu")
    page.fill("#model_name", "lenet-tuned")
    with page.expect_navigation(timeout=120_000) as nav:
        page.click("#create-model")
    assert nav.value.ok, page.locator("#form-errors, .field-error").all_inner_texts()  # not waiting
    expect(page).to_have_url(re.compile(rf"/models/{ID}$"))
    return page.url.rsplit("/", 1)[1]


def test_make_download_upload_and_finetune_a_pretrained_model(
    page: Any, live_server: Server, make_folder: Callable[..., Path], tmp_path: Path
) -> None:
    url = live_server.url
    first = api_dataset(live_server, make_folder(FIRST), "three")
    second = api_dataset(live_server, make_folder(SECOND, seed=1), "two")
    model_id = api_lenet(live_server, first, "lenet-base")

    made = make_pretrained(page, url, model_id)
    check_page_and_download(page, tmp_path)

    res = live_server.client.get(f"/models/{model_id}/download.tar.gz")
    assert res.status_code == 200, res.text
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(res.content)
    uploaded = upload_archive(page, url, archive, "lenet uploaded")

    tuned = finetune(page, url, second, [made, uploaded], pick=uploaded)
    model = wait_model_done(page, url, tuned)
    assert model["name"] == "lenet-tuned", model
    page.reload()
    expect(page.locator("#job-status")).to_have_text("Done")
    expect(page.locator("#job-log")).to_contain_text(re.compile(r"started fresh: .*ip2\.weight"))
    expect(page.locator("#job-log")).not_to_contain_text("conv1.weight")  # the rest came from the weights
    assert not page.errors, page.errors


def test_a_bad_archive_is_refused_on_the_page(page: Any, live_server: Server) -> None:
    url = live_server.url
    page.goto(f"{url}/pretrained_models/new")
    page.set_input_files(
        "#archive", {"name": "model.tar.gz", "mimeType": "application/gzip", "buffer": os.urandom(4096)}
    )
    page.click("#upload-archive-button")
    result = page.locator("#upload-archive-result")
    expect(result).to_have_class(re.compile(r"\bdanger\b"))
    expect(result).to_contain_text("not a zip or tar archive")
    expect(result).not_to_contain_text(re.compile(r"Traceback|failed \(", re.I))
    assert page.url == f"{url}/pretrained_models/new"
    rows = live_server.client.get("/completed_jobs.json").json()["pretrained_models"]
    assert rows == [], rows
    assert not page.errors, page.errors
