"""The model routes: create, sweep, errors, metrics, classify, clone, abort/resume.

In process: a trained dataset and model are built once per module (in this process, as the CLI
trains) and every test gets its own copy of that data dir and its own app. Only abort/resume
needs a real worker process: it turns the app's scheduler on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Kiln, copy_data_dir, write_class_folder


def _model(client: Any, dataset_id: str, **fields: str):
    data = {
        "dataset": dataset_id,
        "model_name": "lenet",
        "standard_networks": "lenet",
        "train_epochs": "2",
        "learning_rate": "0.01",
        "random_seed": "1",
        **fields,
    }
    return client.post("/models/images/classification.json", data=data)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A data dir holding a Done dataset ("digits") and a Done model ("lenet", 3 epochs)."""
    root = tmp_path_factory.mktemp("models")
    folder = write_class_folder(root / "imgs", {"one": 60, "two": 60, "three": 60}, size=(28, 28))
    kiln = Kiln(root / "data")
    try:
        dataset_id = kiln.built_dataset(folder, "digits")
        res = _model(
            kiln.client,
            dataset_id,
            train_epochs="3",
            snapshot_interval="0.5",
            solver_type="ADAM",
            batch_size="24",
            learning_rate="0.001",
            lr_policy="fixed",
        )
        assert res.status_code == 200, res.text
        model_id = res.json()["id"]
        assert kiln.run(model_id) == "Done"
    finally:
        kiln.close()
    return {"data": root / "data", "folder": folder, "dataset_id": dataset_id, "model_id": model_id}


@pytest.fixture
def kiln(template: dict[str, Any], tmp_path: Path) -> Iterator[Kiln]:
    """This test's own copy of the template's data dir, served in process (no scheduler)."""
    app = Kiln(copy_data_dir(template["data"], tmp_path / "data"))
    yield app
    app.close()


@pytest.fixture
def folder(template: dict[str, Any]) -> Path:
    return template["folder"]


@pytest.fixture
def dataset_id(template: dict[str, Any]) -> str:
    return template["dataset_id"]


@pytest.fixture
def model_id(template: dict[str, Any]) -> str:
    return template["model_id"]


def test_create_answers_digits_shape(kiln: Kiln, dataset_id: str) -> None:
    res = _model(kiln.client, dataset_id, model_name="new one")
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["status"] == "Initialized" and body["snapshot file"] == "no snapshots" and body["name"] == "new one"
    assert body["dataset_id"] == dataset_id and body["image dimensions"] == [28, 28, 1]
    assert body["username"] == "alice" and body["network"] == "lenet"
    job = kiln.store.get_job(body["id"])
    assert job.params["config"]["train_epochs"] == 2 and job.params["config"]["learning_rate"] == 0.01


def test_html_form_and_redirect(kiln: Kiln, dataset_id: str) -> None:
    page = kiln.client.get(f"/models/images/classification/new?dataset={dataset_id}")
    assert page.status_code == 200 and f'value="{dataset_id}"' in page.text
    res = kiln.client.post(
        "/models/images/classification",
        data={"dataset": dataset_id, "model_name": "web", "standard_networks": "lenet", "train_epochs": "1"},
    )
    assert res.status_code == 302 and res.headers["location"].startswith("/models/")
    shown = kiln.client.get(res.headers["location"])
    assert shown.status_code == 200 and "web" in shown.text and 'id="no-snapshots"' in shown.text


def test_model_json_snapshots_and_metrics(kiln: Kiln, model_id: str) -> None:
    info = kiln.client.get(f"/models/{model_id}.json").json()
    assert info["status"] == "Done" and info["snapshots"] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert info["snapshot file"] == "snapshot_3.safetensors"
    assert info["directory"] == str(kiln.settings.jobs_dir / model_id)
    metrics = kiln.client.get(f"/models/{model_id}/metrics.json").json()
    assert {"loss (train)", "loss (val)", "accuracy (val)", "lr"} <= set(metrics["series"])
    assert metrics["snapshots"] == info["snapshots"] and metrics["train_epochs"] == 3
    acc = metrics["series"]["accuracy (val)"]["y"]
    assert acc[-1] > 60.0  # three well-separated classes: well above chance (33 %)
    best = max(range(len(acc)), key=lambda i: (acc[i], -i))
    assert metrics["best"] == {"epoch": metrics["series"]["accuracy (val)"]["x"][best], "accuracy": acc[best]}
    index = kiln.client.get("/index.json").json()
    assert [m["id"] for m in index["models"]] == [model_id]
    (row,) = kiln.client.get("/completed_jobs.json").json()["models"]
    assert row["id"] == model_id and row["sparkline"] and "accuracy (val) max" in row


def test_classify_one_and_many(kiln: Kiln, model_id: str, folder: Path) -> None:
    image = folder / "two" / "0003.png"
    res = kiln.client.post(
        "/models/images/classification/classify_one.json",
        data={"job_id": model_id},
        files={"image_file": ("x.png", image.read_bytes())},
    )
    preds = res.json()["predictions"]
    assert len(preds) == 3 and preds[0][0] == "two"
    assert abs(sum(p for _, p in preds) - 100) < 0.1 and preds == sorted(preds, key=lambda p: -p[1])
    by_path = kiln.client.post(
        "/models/images/classification/classify_one.json",
        data={"job_id": model_id, "image_path": str(image), "snapshot_epoch": "3"},
    )
    assert by_path.json()["predictions"][0][0] == "two"
    html = kiln.client.post(
        "/models/images/classification/classify_one", data={"job_id": model_id, "image_path": str(image)}
    )
    assert html.status_code == 200 and "list-group-item" in html.text
    lines = f"{folder / 'one' / '0000.png'} 0\n{folder / 'three' / '0000.png'} 2\n{folder / 'two' / '0000.png'} 1\nnot-a-file.png 1\n"
    many = kiln.client.post(
        "/models/images/classification/classify_many.json",
        data={"job_id": model_id},
        files={"image_list": ("list.txt", lines.encode())},
    ).json()
    assert len(many["classifications"]) == 3 and "not-a-file.png" in many["errors"]
    assert many["top1_accuracy"] is not None and len(many["confusion_matrix"]) == 3


def test_classify_errors(kiln: Kiln, model_id: str, dataset_id: str, folder: Path) -> None:
    url = "/models/images/classification/classify_one.json"
    none = kiln.client.post(url, data={"job_id": model_id})
    assert none.status_code == 400 and "image_path or image_file" in none.json()["error"]["message"]
    junk = kiln.client.post(url, data={"job_id": model_id}, files={"image_file": ("x.png", b"not an image")})
    assert junk.status_code == 400 and "image_file" in junk.json()["error"]["message"]
    assert kiln.client.post(url, data={"job_id": "nope", "image_path": "/x"}).status_code == 404
    assert kiln.client.post(url, data={"job_id": dataset_id, "image_path": "/x"}).status_code == 404
    no_file = kiln.client.post(url, data={"job_id": model_id, "image_path": str(folder / "nope.png")})
    assert no_file.status_code == 400 and "image_path" in no_file.json()["error"]["message"]
    epoch = kiln.client.post(
        url, data={"job_id": model_id, "image_path": str(folder / "one" / "0000.png"), "snapshot_epoch": "7"}
    )
    assert epoch.status_code == 400 and "snapshot_epoch" in epoch.json()["error"]["message"]
    no_list = kiln.client.post("/models/images/classification/classify_many.json", data={"job_id": model_id})
    assert no_list.status_code == 400 and "image_list" in no_list.json()["error"]["message"]
    many_epoch = kiln.client.post(  # found by schemathesis: was a 500
        "/models/images/classification/classify_many.json",
        data={"job_id": model_id, "snapshot_epoch": "7"},
        files={"image_list": ("list.txt", f"{folder / 'one' / '0000.png'} 0\n".encode())},
    )
    assert many_epoch.status_code == 400 and "snapshot_epoch" in many_epoch.json()["error"]["message"]
    untrained = _model(kiln.client, dataset_id).json()["id"]
    early = kiln.client.post(url, data={"job_id": untrained, "image_path": str(folder / "one" / "0000.png")})
    assert early.status_code == 400 and "no snapshot yet" in early.json()["error"]["message"]


def test_create_errors_name_fields(kiln: Kiln, dataset_id: str) -> None:
    res = _model(
        kiln.client,
        dataset_id,
        model_name="",
        train_epochs="0",
        learning_rate="x",
        solver_type="NOPE",
        standard_networks="vgg99",
        crop_size="64",
        lr_multistep_values="a,b",
        aug_noise="3",
    )
    assert res.status_code == 400
    errors = res.json()["errors"]
    for field in (
        "model_name",
        "train_epochs",
        "learning_rate",
        "solver_type",
        "standard_networks",
        "lr_multistep_values",
        "aug_noise",
    ):
        assert field in errors, (field, errors)
    missing = _model(kiln.client, "no-such-dataset")
    assert missing.status_code == 400 and "dataset" in missing.json()["errors"]
    html = kiln.client.post("/models/images/classification", data={"model_name": ""})
    assert html.status_code == 400 and 'data-field="model_name"' in html.text
    assert [m["name"] for m in kiln.client.get("/index.json").json()["models"]] == ["lenet"]  # nothing new


def test_sweep_creates_one_job_per_combination(kiln: Kiln, dataset_id: str) -> None:
    res = _model(kiln.client, dataset_id, learning_rate="0.01,0.001", batch_size="16,32", train_epochs="1")
    jobs = res.json()["jobs"]
    assert len(jobs) == 4 and {j["status"] for j in jobs} == {"Initialized"}
    names = sorted(j["name"] for j in jobs)
    assert names[0] == "lenet learning_rate:0.001 batch_size:16"
    configs = {
        (
            kiln.store.get_job(j["id"]).params["config"]["learning_rate"],
            kiln.store.get_job(j["id"]).params["config"]["batch_size"],
        )
        for j in jobs
    }
    assert configs == {(0.01, 16), (0.01, 32), (0.001, 16), (0.001, 32)}
    assert all(kiln.store.get_job(j["id"]).dataset_id == dataset_id for j in jobs)


def test_visualize_lr_matches_digits_shape(kiln: Kiln) -> None:
    res = kiln.client.post(
        "/models/visualize-lr",
        data={"lr_policy": "step", "learning_rate": "0.1,0.01", "lr_step_size": "33", "lr_step_gamma": "0.1"},
    )
    cols = res.json()["data"]["columns"]
    assert [c[0] for c in cols] == ["Learning Rate 0", "Learning Rate 1"] and len(cols[0]) == 102
    assert cols[0][1] == pytest.approx(0.1) and cols[0][1 + 33] == pytest.approx(0.01)


def test_clone_and_delete_rules(kiln: Kiln, dataset_id: str, model_id: str) -> None:
    res = kiln.client.get(f"/clone/{model_id}", follow_redirects=True)
    assert res.status_code == 200 and 'value="Clone of lenet"' in res.text
    refused = kiln.client.delete(f"/datasets/{dataset_id}")
    assert refused.status_code == 403 and "depend on it" in refused.json()["error"]["message"]
    page = kiln.client.get(f"/models/{model_id}")
    assert page.status_code == 200 and "combined-chart" in page.text and "Epoch #3" in page.text
    hw = kiln.client.get(f"/models/{model_id}/hardware.json").json()
    assert hw["running"] is False and isinstance(hw["gpus"], list)
    assert kiln.client.delete(f"/models/{model_id}").text == "Job deleted."
    assert kiln.client.delete(f"/datasets/{dataset_id}").text == "Job deleted."  # nothing depends on it now


def test_abort_resume_continues_the_charts(template: dict[str, Any], tmp_path: Path) -> None:
    """A real worker: abort after two snapshots, resume, and the run goes on from the last one."""
    kiln = Kiln(copy_data_dir(template["data"], tmp_path / "data"), scheduler=True)
    try:
        res = _model(
            kiln.client,
            template["dataset_id"],
            model_name="long",
            train_epochs="500",
            snapshot_interval="1",
            solver_type="SGD",
            lr_policy="fixed",
            device="cpu",
        )
        job_id = res.json()["id"]

        def snapshots() -> list[float]:
            return kiln.client.get(f"/models/{job_id}.json").json()["snapshots"]

        def wait_snapshots(count: int) -> None:
            deadline = time.monotonic() + 120
            while len(snapshots()) < count:
                assert time.monotonic() < deadline, kiln.status(job_id)
                time.sleep(0.1)

        wait_snapshots(2)
        assert kiln.as_user("mallory").post(f"/models/{job_id}/abort").status_code == 403
        assert kiln.client.post(f"/models/{job_id}/abort").text == "Job aborted."
        assert kiln.wait_job(job_id)["status"] == "Aborted"
        before = snapshots()
        assert len(before) >= 2 and before[-1] < 500
        assert kiln.client.post(f"/models/{job_id}/resume").status_code == 200
        wait_snapshots(len(before) + 2)
        assert kiln.client.post(f"/models/{job_id}/abort").text == "Job aborted."
        assert kiln.wait_job(job_id)["status"] == "Aborted"
        after = snapshots()
        assert after[: len(before)] == before and after == sorted(set(after))
        assert any(f"Resuming from epoch {before[-1]:g}" in line for line in kiln.store.logs(job_id))
        series = kiln.client.get(f"/models/{job_id}/metrics.json").json()["series"]
        for name in ("loss (val)", "loss (train)"):
            x = series[name]["x"]
            assert x == sorted(x) and len(x) == len(set(x)), name  # no repeated or out-of-order epochs
        assert max(series["loss (val)"]["x"]) > before[-1]
        states = [h["status"] for h in kiln.client.get(f"/jobs/{job_id}/state.json").json()["history"]]
        assert states == ["Initialized", "Running", "Aborted", "Initialized", "Running", "Aborted"]
    finally:
        kiln.close()
