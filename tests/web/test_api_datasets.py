"""The dataset routes (DIGITS 6.1.1 shapes), in process: each test has its own app and data dir;
jobs run in this process when a test runs them (`kiln.run`), as the CLI runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Kiln, write_class_folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = write_class_folder(tmp_path / "imgs", {"cat": 8, "dog": 8, "hot_dog": 8}, size=(14, 10), mode="RGB")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "cat" / "empty.jpg").write_bytes(b"")
    return root


def create(kiln: Kiln, folder: Path, name: str = "pets", **fields: str):
    return kiln.client.post(
        "/datasets/images/classification.json",
        data={"dataset_name": name, "folder_train": str(folder), "resize_width": "8", "resize_height": "8", **fields},
    )


@pytest.fixture
def dataset_id(kiln: Kiln, folder: Path) -> str:
    res = create(
        kiln,
        folder,
        resize_channels="1",
        resize_width="12",
        resize_height="12",
        folder_pct_val="25",
        folder_pct_test="0",
        add_inverted="1",
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["name"] == "pets" and body["status"] == "Initialized"
    assert kiln.run(body["id"]) == "Done"
    return body["id"]


def test_dataset_json_counts_and_labels(kiln: Kiln, dataset_id: str) -> None:
    info = kiln.client.get(f"/datasets/{dataset_id}.json").json()
    assert info["status"] == "Done"
    assert info["labels"] == ["cat", "dog", "hot dog"]  # sorted, "_" shown as a space
    parse = info["ParseFolderTasks"][0]
    assert (parse["train_count"], parse["val_count"], parse["label_count"]) == (36, 6, 3)  # 18 + 18 inverted
    db = {t["name"]: t for t in info["CreateDbTasks"]}
    assert db["Create DB (train)"]["image_width"] == 12 and db["Create DB (train)"]["image_channels"] == 1
    assert sum(t["errors"] for t in info["CreateDbTasks"]) == 2  # the broken and the empty file, skipped


def test_index_and_completed_jobs(kiln: Kiln, dataset_id: str) -> None:
    index = kiln.client.get("/index.json").json()
    assert index["datasets"] == [{"id": dataset_id, "name": "pets", "status": "Done"}] and index["models"] == []
    assert "version" in index and index["jobs_dir"] == str(kiln.settings.jobs_dir)
    done = kiln.client.get("/completed_jobs.json").json()
    (row,) = done["datasets"]
    assert row["id"] == dataset_id and done["running"] == [] and done["models"] == []
    assert row["progress"] == 100 and row["type"] == "dataset" and row["username"] == "alice"
    assert row["elapsed"] >= 0


def test_a_queued_job_is_listed_as_running(kiln: Kiln, folder: Path) -> None:
    job_id = create(kiln, folder, name="queued").json()["id"]
    done = kiln.client.get("/completed_jobs.json").json()
    assert [r["id"] for r in done["running"]] == [job_id] and done["datasets"] == []
    status = kiln.status(job_id)
    assert status["status"] == "Initialized" and status["progress"] == 0


def test_status_routes(kiln: Kiln, dataset_id: str) -> None:
    for prefix in ("jobs", "datasets"):
        body = kiln.client.get(f"/{prefix}/{dataset_id}/status").json()
        assert body["status"] == "Done" and body["name"] == "pets" and body["error"] is None
    missing = kiln.client.get("/datasets/nope/status")
    assert missing.status_code == 404 and missing.json() == {"error": "Job not found."}


@pytest.mark.parametrize(
    "fields, bad",
    [
        ({"dataset_name": ""}, "dataset_name"),
        ({"folder_train": "/no/such/folder"}, "folder_train"),
        ({"resize_width": "0"}, "resize_width"),
        ({"resize_height": "abc"}, "resize_height"),
        ({"folder_pct_val": "70", "folder_pct_test": "40"}, "folder_pct_val"),
    ],
)
def test_create_errors_name_the_field(kiln: Kiln, folder: Path, fields: dict, bad: str) -> None:
    res = create(kiln, folder, name="x", **fields)
    assert res.status_code == 400
    assert bad in res.json()["errors"], res.json()
    assert kiln.client.get("/index.json").json()["datasets"] == []  # and no job was made


def test_one_class_folder_is_refused(kiln: Kiln, tmp_path: Path) -> None:
    write_class_folder(tmp_path / "one", {"only": 5})
    res = create(kiln, tmp_path / "one", name="x")
    assert res.status_code == 400 and "folder_train" in res.json()["errors"]


def test_html_form_reshows_errors(kiln: Kiln) -> None:
    res = kiln.client.post("/datasets/images/classification", data={"dataset_name": "", "resize_width": "0"})
    assert res.status_code == 400
    assert 'data-field="resize_width"' in res.text and 'data-field="dataset_name"' in res.text


def test_html_form_creates_and_redirects(kiln: Kiln, folder: Path) -> None:
    page = kiln.client.get("/datasets/images/classification/new")
    assert page.status_code == 200 and 'name="folder_train"' in page.text
    res = kiln.client.post(
        "/datasets/images/classification",
        data={"dataset_name": "web", "folder_train": str(folder), "resize_width": "8", "resize_height": "8"},
    )
    assert res.status_code == 302
    job_id = res.headers["location"].rsplit("/", 1)[1]
    assert res.headers["location"] == f"/datasets/{job_id}" and kiln.status(job_id)["name"] == "web"
    shown = kiln.client.get(res.headers["location"])
    assert shown.status_code == 200 and 'id="not-ready"' in shown.text


def test_login_required_and_username_rules(kiln: Kiln, folder: Path) -> None:
    anon = kiln.as_user(None)
    res = anon.post("/datasets/images/classification.json", data={"dataset_name": "x"})
    assert res.status_code == 401 and res.json()["error"]["type"] == "Unauthorized"
    page = anon.get("/datasets/images/classification/new")
    assert page.status_code == 302 and page.headers["location"] == "/login?next=/datasets/images/classification/new"
    bad = anon.post("/login", data={"username": "9bad name"})
    assert bad.status_code == 400 and "lowercase letter" in bad.text
    ok = anon.post("/login", data={"username": "carol", "next": "/"})
    assert ok.status_code == 302 and ok.cookies["kiln_session"]
    form = {"dataset_name": "x", "folder_train": str(folder), "resize_width": "8", "resize_height": "8"}
    by_field = kiln.as_user(None).post("/datasets/images/classification.json", data={**form, "username": "dave"})
    assert by_field.status_code == 401  # the user comes from the session or a token, never from a field
    mine = anon.post("/datasets/images/classification.json", data={**form, "username": "dave"})
    assert mine.status_code == 200 and kiln.store.get_job(mine.json()["id"]).username == "carol"


def test_text_lists_uploaded(kiln: Kiln, folder: Path) -> None:
    lines = []
    for label, name in enumerate(["cat", "dog"]):
        lines += [f"{p} {label}" for p in sorted((folder / name).glob("0*.png"))]
    res = kiln.client.post(
        "/datasets/images/classification.json",
        data={
            "dataset_name": "lists",
            "method": "textfile",
            "resize_width": "8",
            "resize_height": "8",
            "textfile_use_val": "0",
        },
        files={
            "textfile_train_images": ("train.txt", "\n".join(lines).encode()),
            "textfile_labels_file": ("labels.txt", b"cat\ndog\n"),
        },
    )
    assert res.status_code == 200, res.text
    assert kiln.run(res.json()["id"]) == "Done"
    info = kiln.client.get(f"/datasets/{res.json()['id']}.json").json()
    assert info["labels"] == ["cat", "dog"] and info["ParseFolderTasks"][0]["train_count"] == 16


def test_edit_notes_group_and_owner_only(kiln: Kiln, dataset_id: str) -> None:
    res = kiln.client.put(f"/jobs/{dataset_id}", data={"job_name": "pets2", "job_notes": "n", "group_name": "g"})
    assert res.status_code == 200 and res.text == "Dataset updated."
    row = kiln.client.get(f"/jobs/{dataset_id}/table_data.json").json()["job"]
    assert (row["name"], row["group"]) == ("pets2", "g")
    assert kiln.store.get_job(dataset_id).notes == "n"
    other = kiln.as_user("mallory").put(f"/jobs/{dataset_id}", data={"job_name": "x"})
    assert other.status_code == 403 and "alice" in other.json()["error"]["message"]
    blank = kiln.client.put(f"/jobs/{dataset_id}", data={"job_name": " "})
    assert blank.status_code == 400
    assert kiln.store.get_job(dataset_id).name == "pets2"
    assert kiln.client.put("/jobs/nope", data={"job_name": "x"}).status_code == 404


def test_explore_gallery_and_filter(kiln: Kiln, dataset_id: str) -> None:
    page = kiln.client.get(f"/datasets/images/classification/explore?job_id={dataset_id}&db=train&label=2&size=10")
    assert page.status_code == 200
    gallery = page.text.split('id="gallery"')[1]
    assert gallery.count('data-label="hot dog"') == 10 and 'data-label="cat"' not in gallery
    img = kiln.client.get(f"/datasets/{dataset_id}/images/train/0.png")
    assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
    assert kiln.client.get(f"/datasets/{dataset_id}/images/train/36.png").status_code == 404
    assert kiln.client.get(f"/datasets/images/classification/explore?job_id={dataset_id}&db=test").status_code == 404


def test_explore_refuses_an_unfinished_dataset(kiln: Kiln, folder: Path) -> None:
    job_id = create(kiln, folder).json()["id"]
    res = kiln.client.get(
        f"/datasets/images/classification/explore?job_id={job_id}", headers={"Accept": "application/json"}
    )
    assert res.status_code == 400 and "not finished" in res.json()["error"]["message"]


def test_show_page_summary_and_files(kiln: Kiln, dataset_id: str) -> None:
    page = kiln.client.get(f"/datasets/{dataset_id}")
    assert page.status_code == 200 and "Class distribution" in page.text and "failed to load" in page.text
    summary = kiln.client.get(f"/datasets/summary?job_id={dataset_id}")
    assert summary.status_code == 200 and "pets" in summary.text
    assert kiln.client.get(f"/files/{dataset_id}/mean.png").content[:4] == b"\x89PNG"
    assert kiln.client.get(f"/files/{dataset_id}/no-such-file").status_code == 404


def test_clone_redirects_to_prefilled_form(kiln: Kiln, dataset_id: str) -> None:
    res = kiln.client.get(f"/clone/{dataset_id}")
    assert res.status_code == 302 and res.headers["location"].endswith(f"?clone={dataset_id}")
    form = kiln.client.get(res.headers["location"])
    assert 'value="Clone of pets"' in form.text
    assert kiln.client.get("/clone/nope").status_code == 404


def test_delete_and_abort(kiln: Kiln, dataset_id: str) -> None:
    assert kiln.client.post(f"/datasets/{dataset_id}/abort").status_code == 403  # not running
    assert kiln.as_user("mallory").delete(f"/jobs/{dataset_id}").status_code == 403
    assert (kiln.settings.jobs_dir / dataset_id).is_dir()
    res = kiln.client.delete(f"/datasets/{dataset_id}")
    assert res.status_code == 200 and res.text == "Job deleted."
    assert kiln.client.get(f"/datasets/{dataset_id}.json").status_code == 404
    assert not (kiln.settings.jobs_dir / dataset_id).exists()
    assert kiln.client.delete(f"/jobs/{dataset_id}").status_code == 404


def test_abort_a_queued_job(kiln: Kiln, folder: Path) -> None:
    job_id = create(kiln, folder).json()["id"]
    assert kiln.as_user("mallory").post(f"/datasets/{job_id}/abort").status_code == 403
    assert kiln.client.post(f"/datasets/{job_id}/abort").text == "Job aborted."
    assert kiln.status(job_id)["status"] == "Aborted"
    assert kiln.client.post(f"/datasets/{job_id}/resume").status_code == 200
    assert kiln.status(job_id)["status"] == "Initialized"


def test_group_abort_and_delete_many(kiln: Kiln, folder: Path) -> None:
    ids = [create(kiln, folder, name=name).json()["id"] for name in ("m1", "m2")]
    for job_id in ids:
        assert kiln.run(job_id) == "Done"
    form = {"job_ids[]": ids, "group_name": "batch"}
    assert kiln.client.post("/group", data=form).text == "Jobs regrouped."
    rows = [kiln.client.get(f"/jobs/{i}/table_data.json").json()["job"] for i in ids]
    assert {r["group"] for r in rows} == {"batch"}
    nothing_running = kiln.client.post("/abort_jobs", data={"job_ids[]": ids}, headers={"Accept": "application/json"})
    assert nothing_running.status_code == 400 and "0 of 2" in nothing_running.json()["error"]["message"]
    assert kiln.client.request("DELETE", "/jobs", data={"job_ids[]": ids}).text == "Jobs deleted."
    assert all(kiln.client.get(f"/jobs/{i}/status").status_code == 404 for i in ids)
