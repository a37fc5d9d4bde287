"""The dataset routes over real HTTP against a real `kiln serve` (DIGITS 6.1.1 shapes)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Server, write_class_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imgs")
    write_class_folder(root, {"cat": 8, "dog": 8, "hot_dog": 8}, size=(14, 10), mode="RGB")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "cat" / "empty.jpg").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def dataset_id(server: Server, folder: Path) -> str:
    res = server.client.post("/datasets/images/classification.json", data={
        "dataset_name": "pets", "folder_train": str(folder), "resize_channels": "1", "resize_width": "12",
        "resize_height": "12", "folder_pct_val": "25", "folder_pct_test": "0", "add_inverted": "1"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["name"] == "pets" and body["status"] == "Initialized"
    assert server.wait_job(body["id"])["status"] == "Done"
    return body["id"]


def test_dataset_json_counts_and_labels(server: Server, dataset_id: str) -> None:
    info = server.client.get(f"/datasets/{dataset_id}.json").json()
    assert info["status"] == "Done"
    assert info["labels"] == ["cat", "dog", "hot dog"]        # sorted, "_" shown as a space
    parse = info["ParseFolderTasks"][0]
    assert (parse["train_count"], parse["val_count"], parse["label_count"]) == (36, 6, 3)  # 18 + 18 inverted
    db = {t["name"]: t for t in info["CreateDbTasks"]}
    assert db["Create DB (train)"]["image_width"] == 12 and db["Create DB (train)"]["image_channels"] == 1
    assert sum(t["errors"] for t in info["CreateDbTasks"]) == 2   # the broken and the empty file, skipped


def test_index_and_completed_jobs(server: Server, dataset_id: str) -> None:
    index = server.client.get("/index.json").json()
    assert {"id": dataset_id, "name": "pets", "status": "Done"} in index["datasets"]
    assert "version" in index and index["jobs_dir"].endswith("jobs")
    done = server.client.get("/completed_jobs.json").json()
    row = next(r for r in done["datasets"] if r["id"] == dataset_id)
    assert row["progress"] == 100 and row["type"] == "dataset" and row["username"] == "alice"
    assert row["elapsed"] >= 0


def test_status_routes(server: Server, dataset_id: str) -> None:
    for prefix in ("jobs", "datasets"):
        body = server.client.get(f"/{prefix}/{dataset_id}/status").json()
        assert body["status"] == "Done" and body["name"] == "pets" and body["error"] is None
    missing = server.client.get("/datasets/nope/status")
    assert missing.status_code == 404 and missing.json() == {"error": "Job not found."}


@pytest.mark.parametrize("fields, bad", [
    ({"dataset_name": ""}, "dataset_name"),
    ({"folder_train": "/no/such/folder"}, "folder_train"),
    ({"resize_width": "0"}, "resize_width"),
    ({"resize_height": "abc"}, "resize_height"),
    ({"folder_pct_val": "70", "folder_pct_test": "40"}, "folder_pct_val"),
])
def test_create_errors_name_the_field(server: Server, folder: Path, fields: dict, bad: str) -> None:
    data = {"dataset_name": "x", "folder_train": str(folder), "resize_width": "8", "resize_height": "8", **fields}
    res = server.client.post("/datasets/images/classification.json", data=data)
    assert res.status_code == 400
    assert bad in res.json()["errors"], res.json()


def test_one_class_folder_is_refused(server: Server, tmp_path: Path) -> None:
    write_class_folder(tmp_path, {"only": 5})
    res = server.client.post("/datasets/images/classification.json", data={
        "dataset_name": "x", "folder_train": str(tmp_path), "resize_width": "8", "resize_height": "8"})
    assert res.status_code == 400 and "folder_train" in res.json()["errors"]


def test_html_form_reshows_errors(server: Server) -> None:
    res = server.client.post("/datasets/images/classification", data={"dataset_name": "", "resize_width": "0"})
    assert res.status_code == 400
    assert 'data-field="resize_width"' in res.text and 'data-field="dataset_name"' in res.text


def test_login_required_and_username_rules(server: Server, folder: Path) -> None:
    import httpx
    anon = httpx.post(f"{server.url}/datasets/images/classification.json", data={"dataset_name": "x"})
    assert anon.status_code == 401 and anon.json()["error"]["type"] == "Unauthorized"
    page = httpx.get(f"{server.url}/datasets/images/classification/new")
    assert page.status_code == 302 and page.headers["location"].startswith("/login")
    bad = httpx.post(f"{server.url}/login", data={"username": "9bad name"})
    assert bad.status_code == 400
    ok = httpx.post(f"{server.url}/login", data={"username": "carol", "next": "/"})
    assert ok.status_code == 302 and ok.cookies["username"] == "carol"


def test_text_lists_uploaded(server: Server, folder: Path, tmp_path: Path) -> None:
    lines = []
    for label, name in enumerate(["cat", "dog"]):
        lines += [f"{p} {label}" for p in sorted((folder / name).glob("0*.png"))]
    res = server.client.post(
        "/datasets/images/classification.json",
        data={"dataset_name": "lists", "method": "textfile", "resize_width": "8", "resize_height": "8",
              "textfile_use_val": "0"},
        files={"textfile_train_images": ("train.txt", "\n".join(lines).encode()),
               "textfile_labels_file": ("labels.txt", b"cat\ndog\n")})
    assert res.status_code == 200, res.text
    assert server.wait_job(res.json()["id"])["status"] == "Done"
    info = server.client.get(f"/datasets/{res.json()['id']}.json").json()
    assert info["labels"] == ["cat", "dog"] and info["ParseFolderTasks"][0]["train_count"] == 16


def test_edit_notes_group_and_owner_only(server: Server, dataset_id: str) -> None:
    res = server.client.put(f"/jobs/{dataset_id}", data={"job_name": "pets2", "job_notes": "n", "group_name": "g"})
    assert res.status_code == 200 and res.text == "Dataset updated."
    row = server.client.get(f"/jobs/{dataset_id}/table_data.json").json()["job"]
    assert (row["name"], row["group"]) == ("pets2", "g")
    other = server.client.put(f"/jobs/{dataset_id}", data={"job_name": "x"}, cookies={"username": "mallory"})
    assert other.status_code == 403
    blank = server.client.put(f"/jobs/{dataset_id}", data={"job_name": " "})
    assert blank.status_code == 400
    server.client.put(f"/jobs/{dataset_id}", data={"job_name": "pets"})


def test_explore_gallery_and_filter(server: Server, dataset_id: str) -> None:
    page = server.client.get(f"/datasets/images/classification/explore?job_id={dataset_id}&db=train&label=2&size=10")
    assert page.status_code == 200
    assert page.text.count('data-label="hot dog"') >= 10 and 'data-label="cat"' not in page.text.split('id="gallery"')[1]
    img = server.client.get(f"/datasets/{dataset_id}/images/train/0.png")
    assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
    assert server.client.get(f"/datasets/images/classification/explore?job_id={dataset_id}&db=test").status_code == 404


def test_show_page_and_files(server: Server, dataset_id: str) -> None:
    page = server.client.get(f"/datasets/{dataset_id}")
    assert page.status_code == 200 and "Class distribution" in page.text and "failed to load" in page.text
    assert server.client.get(f"/files/{dataset_id}/mean.png").content[:4] == b"\x89PNG"
    assert server.client.get(f"/files/{dataset_id}/../../kiln.db").status_code == 404


def test_clone_redirects_to_prefilled_form(server: Server, dataset_id: str) -> None:
    res = server.client.get(f"/clone/{dataset_id}", follow_redirects=False)
    assert res.status_code == 302 and res.headers["location"].endswith(f"?clone={dataset_id}")
    form = server.client.get(res.headers["location"])
    assert 'value="Clone of pets"' in form.text


def test_delete_and_abort(server: Server, folder: Path) -> None:
    res = server.client.post("/datasets/images/classification.json", data={
        "dataset_name": "gone", "folder_train": str(folder), "resize_width": "8", "resize_height": "8"})
    job_id = res.json()["id"]
    server.wait_job(job_id)
    assert server.client.post(f"/datasets/{job_id}/abort").status_code == 403   # not running
    assert server.client.delete(f"/jobs/{job_id}", cookies={"username": "mallory"}).status_code == 403
    res = server.client.delete(f"/datasets/{job_id}")
    assert res.status_code == 200 and res.text == "Job deleted."
    assert server.client.get(f"/datasets/{job_id}.json").status_code == 404
    assert not (server.data_dir / "jobs" / job_id).exists()
    assert server.client.delete(f"/jobs/{job_id}").status_code == 404


def test_group_abort_and_delete_many(server: Server, folder: Path) -> None:
    ids = []
    for name in ("m1", "m2"):
        res = server.client.post("/datasets/images/classification.json", data={
            "dataset_name": name, "folder_train": str(folder), "resize_width": "8", "resize_height": "8"})
        ids.append(res.json()["id"])
        server.wait_job(ids[-1])
    form = {"job_ids[]": ids, "group_name": "batch"}
    assert server.client.post("/group", data=form).text == "Jobs regrouped."
    rows = [server.client.get(f"/jobs/{i}/table_data.json").json()["job"] for i in ids]
    assert {r["group"] for r in rows} == {"batch"}
    nothing_running = server.client.post("/abort_jobs", data={"job_ids[]": ids},
                                         headers={"Accept": "application/json"})
    assert nothing_running.status_code == 400 and "0 of 2" in nothing_running.json()["error"]["message"]
    assert server.client.request("DELETE", "/jobs", data={"job_ids[]": ids}).text == "Jobs deleted."
    assert all(server.client.get(f"/jobs/{i}/status").status_code == 404 for i in ids)
