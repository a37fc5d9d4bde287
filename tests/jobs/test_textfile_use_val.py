"""`textfile_use_val` defaults on, as in DIGITS: a val list posted without the flag is used, not dropped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kiln.config import Settings
from kiln.jobs.worker import run_job
from kiln.web.app import create_app
from tests.conftest import login, write_class_folder


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[Settings, TestClient]]:
    settings = Settings.from_env(data_dir=tmp_path / "data")
    with login(TestClient(create_app(settings, run_scheduler=False)), "alice") as client:
        yield settings, client


@pytest.fixture
def lists(tmp_path: Path) -> dict[str, bytes]:
    root = write_class_folder(tmp_path / "imgs", {"cat": 4, "dog": 4}, size=(8, 8))

    def line(name, i):
        return f"{root / name / f'{i:04d}.png'} {['cat', 'dog'].index(name)}\n"

    return {
        "train": "".join(line(n, i) for n in ("cat", "dog") for i in range(3)).encode(),
        "val": "".join(line(n, 3) for n in ("cat", "dog")).encode(),
        "labels": b"cat\ndog\n",
    }


def post(client: TestClient, lists: dict[str, bytes], **fields: str):
    files = {
        "textfile_train_images": ("train.txt", lists["train"]),
        "textfile_labels_file": ("labels.txt", lists["labels"]),
    }
    if "val" in lists:
        files["textfile_val_images"] = ("val.txt", lists["val"])
    return client.post(
        "/datasets/images/classification.json",
        files=files,
        data={
            "dataset_name": "lists",
            "method": "textfile",
            "resize_width": "8",
            "resize_height": "8",
            "resize_channels": "1",
            **fields,
        },
    )


def test_a_val_list_posted_without_the_flag_is_used(api: tuple[Settings, TestClient], lists: dict[str, bytes]) -> None:
    settings, client = api
    res = post(client, lists)
    assert res.status_code == 200, res.text
    job_id = res.json()["id"]
    assert run_job(settings, job_id) == "Done"
    manifest = json.loads((settings.jobs_dir / job_id / "manifest.json").read_text())
    assert manifest["splits"]["train"]["count"] == 6
    assert manifest["splits"]["val"]["count"] == 2 and manifest["splits"]["val"]["per_class"] == [1, 1]
    info = client.get(f"/datasets/{job_id}.json").json()
    assert info["ParseFolderTasks"][0]["val_count"] == 2


def test_the_flag_still_turns_it_off(api: tuple[Settings, TestClient], lists: dict[str, bytes]) -> None:
    """What an unchecked box on the HTML form sends (its hidden field): the val list is not used."""
    settings, client = api
    job_id = post(client, lists, textfile_use_val="0").json()["id"]
    assert run_job(settings, job_id) == "Done"
    manifest = json.loads((settings.jobs_dir / job_id / "manifest.json").read_text())
    assert "val" not in manifest["splits"] or manifest["splits"]["val"]["count"] == 0


def test_on_without_a_val_list_names_the_field(api: tuple[Settings, TestClient], lists: dict[str, bytes]) -> None:
    """As in DIGITS, on (the default) without a val list is refused, naming the field, and no job is made."""
    _, client = api
    res = post(client, {k: v for k, v in lists.items() if k != "val"})
    assert res.status_code == 400 and "textfile_val_images" in res.json()["errors"]
    assert client.get("/index.json").json()["datasets"] == []


def test_the_new_dataset_form_has_it_checked(api: tuple[Settings, TestClient]) -> None:
    _, client = api
    html = client.get("/datasets/images/classification/new").text
    assert 'id="textfile_use_val" value="1" checked' in html
