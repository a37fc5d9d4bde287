"""The model routes over real HTTP: create, sweep, errors, live metrics, abort/resume, clone, classify."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import Server, write_class_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_class_folder(tmp_path_factory.mktemp("imgs"), {"one": 60, "two": 60, "three": 60}, size=(28, 28))


@pytest.fixture(scope="module")
def dataset_id(server: Server, folder: Path) -> str:
    res = server.client.post("/datasets/images/classification.json", data={
        "dataset_name": "digits", "folder_train": str(folder), "resize_channels": "1",
        "resize_width": "28", "resize_height": "28", "folder_pct_val": "20"})
    job_id = res.json()["id"]
    assert server.wait_job(job_id)["status"] == "Done"
    return job_id


def _model(server: Server, dataset_id: str, **fields: str):
    data = {"dataset": dataset_id, "model_name": "lenet", "standard_networks": "lenet", "train_epochs": "2",
            "learning_rate": "0.01", "random_seed": "1", **fields}
    return server.client.post("/models/images/classification.json", data=data)


@pytest.fixture(scope="module")
def model_id(server: Server, dataset_id: str) -> str:
    res = _model(server, dataset_id, train_epochs="3", snapshot_interval="0.5", solver_type="ADAM", batch_size="24",
                 learning_rate="0.001", lr_policy="fixed")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["status"] == "Initialized" and body["snapshot file"] == "no snapshots"
    assert body["dataset_id"] == dataset_id and body["image dimensions"] == [28, 28, 1]
    assert server.wait_job(body["id"])["status"] == "Done"
    return body["id"]


def test_model_json_snapshots_and_metrics(server: Server, model_id: str) -> None:
    info = server.client.get(f"/models/{model_id}.json").json()
    assert info["status"] == "Done" and info["snapshots"] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert info["snapshot file"] == "snapshot_3.safetensors"
    metrics = server.client.get(f"/models/{model_id}/metrics.json").json()
    assert {"loss (train)", "loss (val)", "accuracy (val)", "lr"} <= set(metrics["series"])
    acc = metrics["series"]["accuracy (val)"]["y"]
    assert acc[-1] > 60.0                         # three well-separated classes: well above chance (33 %)
    assert metrics["best"]["accuracy"] == max(acc)
    index = server.client.get("/index.json").json()
    assert any(m["id"] == model_id for m in index["models"])
    row = next(r for r in server.client.get("/completed_jobs.json").json()["models"] if r["id"] == model_id)
    assert row["sparkline"] and "accuracy (val) max" in row


def test_classify_one_and_many(server: Server, model_id: str, folder: Path) -> None:
    image = folder / "two" / "0003.png"
    res = server.client.post("/models/images/classification/classify_one.json",
                             data={"job_id": model_id}, files={"image_file": ("x.png", image.read_bytes())})
    preds = res.json()["predictions"]
    assert len(preds) == 3 and preds[0][0] == "two"
    assert abs(sum(p for _, p in preds) - 100) < 0.1 and preds == sorted(preds, key=lambda p: -p[1])
    by_path = server.client.post("/models/images/classification/classify_one.json",
                                 data={"job_id": model_id, "image_path": str(image), "snapshot_epoch": "3"})
    assert by_path.json()["predictions"][0][0] == "two"
    html = server.client.post("/models/images/classification/classify_one",
                              data={"job_id": model_id, "image_path": str(image)})
    assert html.status_code == 200 and "list-group-item" in html.text
    lines = f"{folder / 'one' / '0000.png'} 0\n{folder / 'three' / '0000.png'} 2\n{folder / 'two' / '0000.png'} 1\nnot-a-file.png 1\n"
    many = server.client.post("/models/images/classification/classify_many.json", data={"job_id": model_id},
                              files={"image_list": ("list.txt", lines.encode())}).json()
    assert len(many["classifications"]) == 3 and "not-a-file.png" in many["errors"]
    assert many["top1_accuracy"] is not None and len(many["confusion_matrix"]) == 3


def test_classify_errors(server: Server, model_id: str, dataset_id: str) -> None:
    none = server.client.post("/models/images/classification/classify_one.json", data={"job_id": model_id})
    assert none.status_code == 400 and "image_path or image_file" in none.json()["error"]["message"]
    junk = server.client.post("/models/images/classification/classify_one.json", data={"job_id": model_id},
                              files={"image_file": ("x.png", b"not an image")})
    assert junk.status_code == 400
    assert server.client.post("/models/images/classification/classify_one.json",
                              data={"job_id": "nope", "image_path": "/x"}).status_code == 404
    no_list = server.client.post("/models/images/classification/classify_many.json", data={"job_id": model_id})
    assert no_list.status_code == 400 and "image_list" in no_list.json()["error"]["message"]


def test_create_errors_name_fields(server: Server, dataset_id: str) -> None:
    res = _model(server, dataset_id, model_name="", train_epochs="0", learning_rate="x", solver_type="NOPE",
                 standard_networks="vgg99", crop_size="64", lr_multistep_values="a,b", aug_noise="3")
    assert res.status_code == 400
    errors = res.json()["errors"]
    for field in ("model_name", "train_epochs", "learning_rate", "solver_type", "standard_networks",
                  "lr_multistep_values", "aug_noise"):
        assert field in errors, (field, errors)
    missing = _model(server, "no-such-dataset")
    assert missing.status_code == 400 and "dataset" in missing.json()["errors"]
    html = server.client.post("/models/images/classification", data={"model_name": ""})
    assert html.status_code == 400 and 'data-field="model_name"' in html.text


def test_sweep_creates_one_job_per_combination(server: Server, dataset_id: str) -> None:
    res = _model(server, dataset_id, learning_rate="0.01,0.001", batch_size="16,32", train_epochs="1")
    jobs = res.json()["jobs"]
    assert len(jobs) == 4
    names = sorted(j["name"] for j in jobs)
    assert names[0] == "lenet learning_rate:0.001 batch_size:16"
    for job in jobs:
        assert server.wait_job(job["id"])["status"] == "Done"


def test_visualize_lr_matches_digits_shape(server: Server) -> None:
    res = server.client.post("/models/visualize-lr", data={"lr_policy": "step", "learning_rate": "0.1,0.01",
                                                           "lr_step_size": "33", "lr_step_gamma": "0.1"})
    cols = res.json()["data"]["columns"]
    assert [c[0] for c in cols] == ["Learning Rate 0", "Learning Rate 1"] and len(cols[0]) == 102
    assert cols[0][1] == pytest.approx(0.1) and cols[0][1 + 33] == pytest.approx(0.01)


def test_abort_resume_continues_the_charts(server: Server, dataset_id: str) -> None:
    res = _model(server, dataset_id, model_name="long", train_epochs="25", snapshot_interval="1",
                 solver_type="SGD", lr_policy="fixed")
    job_id = res.json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(server.client.get(f"/models/{job_id}.json").json().get("snapshots", [])) < 2:
        time.sleep(0.2)
    assert server.client.post(f"/models/{job_id}/abort", cookies={"username": "mallory"}).status_code == 403
    assert server.client.post(f"/models/{job_id}/abort").text == "Job aborted."
    assert server.wait_job(job_id)["status"] == "Aborted"
    before = server.client.get(f"/models/{job_id}.json").json()["snapshots"]
    assert before and before[-1] < 25
    assert server.client.post(f"/models/{job_id}/resume").status_code == 200
    assert server.wait_job(job_id, timeout=300)["status"] == "Done"
    after = server.client.get(f"/models/{job_id}.json").json()["snapshots"]
    assert after[: len(before)] == before and after[-1] == 25
    val = server.client.get(f"/models/{job_id}/metrics.json").json()["series"]["loss (val)"]["x"]
    assert val == sorted(val) and len(val) == len(set(val))   # no repeated or missing-order epochs
    states = [h["status"] for h in server.client.get(f"/jobs/{job_id}/state.json").json()["history"]]
    assert "Aborted" in states and states[-1] == "Done"


def test_clone_and_delete_rules(server: Server, dataset_id: str, model_id: str) -> None:
    res = server.client.get(f"/clone/{model_id}", follow_redirects=True)
    assert res.status_code == 200 and 'value="Clone of lenet"' in res.text
    refused = server.client.delete(f"/datasets/{dataset_id}")
    assert refused.status_code == 403 and "depend on it" in refused.json()["error"]["message"]
    page = server.client.get(f"/models/{model_id}")
    assert page.status_code == 200 and "combined-chart" in page.text and "Epoch #3" in page.text
    hw = server.client.get(f"/models/{model_id}/hardware.json").json()
    assert hw["running"] is False and isinstance(hw["gpus"], list)
