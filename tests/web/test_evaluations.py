"""Evaluations (issue 9): a model on a split, a list (indices or names), a folder, a zip, as a job;
the test split evaluated after training; results, CSV, confusion cells and images over the API."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import Kiln, copy_data_dir, write_class_folder

CLASSES = {"one": 30, "three": 30, "two": 30}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A Done dataset with val and test splits, and a Done LeNet (2 epochs, keep_best)."""
    root = tmp_path_factory.mktemp("evaluations")
    folder = write_class_folder(root / "imgs", CLASSES, size=(28, 28))
    kiln = Kiln(root / "data")
    try:
        res = kiln.client.post(
            "/datasets/images/classification.json",
            data={
                "dataset_name": "digits",
                "folder_train": str(folder),
                "resize_channels": "1",
                "resize_width": "28",
                "resize_height": "28",
                "folder_pct_val": "20",
                "folder_pct_test": "20",
            },
        )
        dataset_id = res.json()["id"]
        assert kiln.run(dataset_id) == "Done"
        fields = {"dataset": dataset_id, "model_name": "lenet", "standard_networks": "lenet", "train_epochs": "2"}
        fields.update(random_seed="1", keep_best="1", solver_type="ADAM", learning_rate="0.001")
        model = kiln.client.post("/models/images/classification.json", data=fields).json()
        assert kiln.run(model["id"]) == "Done"
    finally:
        kiln.close()
    return {"root": root, "folder": folder, "dataset": dataset_id, "model": model["id"]}


@pytest.fixture
def app(template: dict[str, Any], tmp_path: Path) -> Iterator[tuple[Kiln, dict[str, Any]]]:
    kiln = Kiln(copy_data_dir(template["root"] / "data", tmp_path / "data"))
    yield kiln, template
    kiln.close()


def evaluate(kiln: Kiln, files: dict[str, Any] | None = None, **fields: str) -> dict[str, Any]:
    res = kiln.client.post("/models/images/classification/evaluate.json", data=fields, files=files or {})
    assert res.status_code == 200, res.text
    assert kiln.run(res.json()["id"]) == "Done", kiln.status(res.json()["id"])
    return kiln.client.get(f"/evaluations/{res.json()['id']}.json").json()


def test_the_val_split_reproduces_the_val_accuracy_training_reported(app) -> None:
    kiln, t = app
    metrics = kiln.client.get(f"/models/{t['model']}/metrics.json").json()
    reported = metrics["series"]["accuracy (val)"]["y"][-1]
    result = evaluate(kiln, job_id=t["model"], split="val")
    assert result["status"] == "Done" and result["images"] == result["scored"] == 18
    assert result["top1_accuracy"] == pytest.approx(reported, abs=0.01)
    assert sum(map(sum, result["confusion_matrix"])) == 18 and result["labels"] == ["one", "three", "two"]
    assert [c["support"] for c in result["per_class"]] == [6, 6, 6]
    home = kiln.client.get("/completed_jobs.json").json()["evaluations"]  # listed under its model
    assert [(e["id"], e["model_id"], e["top1_accuracy"]) for e in home] == [
        (result["id"], t["model"], result["top1_accuracy"])
    ]
    top = result["top_n"]  # DIGITS' top_n: the 9 images surest to be each class, of all 18
    assert set(top) == {"one", "three", "two"} and all(len(v) == 9 for v in top.values())
    for entries in top.values():
        assert [e["class_percent"] for e in entries] == sorted((e["class_percent"] for e in entries), reverse=True)


def test_training_evaluates_the_test_split(app) -> None:
    kiln, t = app
    model = kiln.client.get(f"/models/{t['model']}.json").json()
    assert model["test_epoch"] == 2 and 0 <= model["test_accuracy"] <= 100
    direct = evaluate(kiln, job_id=t["model"], split="test")
    assert direct["top1_accuracy"] == model["test_accuracy"]
    page = kiln.client.get(f"/models/{t['model']}").text
    assert 'id="test-accuracy"' in page and f"{model['test_accuracy']:.2f}%" in page


def test_a_list_takes_indices_and_names_and_reports_what_it_cannot_use(app) -> None:
    kiln, t = app
    folder = t["folder"]
    text = "\n".join(
        [
            f"{folder}/one/0000.png 0",
            "three/0001.png three",  # a name, relative to image_folder
            "two/0002.png TWO",  # names match in any case
            "one/0003.png 7",  # out of range
            "one/0004.png Trouser",  # not a class
            "one/missing.png 0",
            "two/0005.png",  # no label: classified, not scored
        ]
    )
    result = evaluate(kiln, {"image_list": ("list.txt", text.encode())}, job_id=t["model"], image_folder=str(folder))
    assert result["images"] == 5 and result["scored"] == 3
    errors = {e["line"]: e["error"] for e in result["errors"]}
    assert "out of range: the model has 3 classes" in errors[4]
    assert "'Trouser' is not one of the model's classes" in errors[5]
    assert "file not found" in errors[6]
    rows = list(csv.DictReader(io.StringIO(kiln.client.get(f"/evaluations/{result['id']}/classifications.csv").text)))
    assert [r["image"] for r in rows] == [f"{folder}/one/0000.png", "three/0001.png", "two/0002.png", "two/0005.png"]
    assert [r["truth"] for r in rows] == ["one", "three", "two", ""]


def test_a_zip_of_class_folders_and_its_cells_and_images(app) -> None:
    kiln, t = app
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ("one", "two"):
            for i in range(3):
                zf.write(t["folder"] / name / f"{i:04d}.png", f"digits/{name}/{i}.png")
    result = evaluate(kiln, {"image_archive": ("d.zip", buf.getvalue())}, job_id=t["model"])
    assert result["scored"] == 6
    matrix = result["confusion_matrix"]
    truth, pred = next((i, j) for i in range(3) for j in range(3) if matrix[i][j])
    cell = kiln.client.get(f"/evaluations/{result['id']}/cell.json", params={"truth": truth, "predicted": pred}).json()
    assert cell["count"] == matrix[truth][pred] == len(cell["images"])
    image = kiln.client.get(cell["images"][0]["url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    cam = kiln.client.get(f"/evaluations/{result['id']}/gradcam/{cell['images'][0]['index']}")
    assert cam.status_code == 200 and cam.content.startswith(b"\x89PNG") and cam.content != image.content
    assert kiln.client.get(f"/evaluations/{result['id']}/images/99").status_code == 404
    page = kiln.client.get(f"/evaluations/{result['id']}").text
    assert 'id="confusion-matrix"' in page and f'data-truth="{truth}" data-predicted="{pred}"' in page


def test_a_hostile_zip_is_refused_by_the_job(app) -> None:
    kiln, t = app
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../escape.png", b"x")
    res = kiln.client.post(
        "/models/images/classification/evaluate.json",
        data={"job_id": t["model"]},
        files={"image_archive": ("e.zip", buf.getvalue())},
    )
    assert kiln.run(res.json()["id"]) == "Error"
    assert "would land outside its folder" in kiln.status(res.json()["id"])["error"]
    assert not (kiln.data_dir / "escape.png").exists() and not (kiln.data_dir.parent / "escape.png").exists()


def test_best_snapshot_and_form_errors(app) -> None:
    kiln, t = app
    assert evaluate(kiln, job_id=t["model"], split="val", snapshot_epoch="best")["snapshot_epoch"] == "best"
    post = kiln.client.post
    url = "/models/images/classification/evaluate.json"
    assert post(url, data={"job_id": "nope", "split": "val"}).json()["errors"]["job_id"] == ["No model 'nope'."]
    assert "Give one of" in post(url, data={"job_id": t["model"]}).json()["errors"]["split"][0]
    assert (
        "No snapshot at epoch 7"
        in post(url, data={"job_id": t["model"], "split": "val", "snapshot_epoch": "7"}).json()["errors"][
            "snapshot_epoch"
        ][0]
    )
    assert (
        "num_test_images"
        in post(url, data={"job_id": t["model"], "split": "val", "num_test_images": "-2"}).json()["errors"]
    )
    assert (
        "does not exist"
        in post(url, data={"job_id": t["model"], "image_folder": "/no/such"}).json()["errors"]["image_folder"][0]
    )
    assert (
        kiln.client.get("/models/" + t["model"] + "/evaluations.json").json()["evaluations"][0]["snapshot_epoch"]
        == "best"
    )


def test_label_issues_find_flipped_labels(app, tmp_path: Path) -> None:
    """Images of class "one" listed as "two": confident learning ranks them first."""
    kiln, t = app
    folder = t["folder"]
    lines = [f"{folder}/{name}/{i:04d}.png {name}" for name in CLASSES for i in range(10)]
    lines += [f"{folder}/one/{i:04d}.png two" for i in range(20, 23)]
    result = evaluate(kiln, {"image_list": ("l.txt", "\n".join(lines).encode())}, job_id=t["model"])
    flipped = {f"{folder}/one/{i:04d}.png" for i in range(20, 23)}
    flagged = [x["image"] for x in result["label_issues"]]
    assert len(set(flagged) & flipped) >= 2 and set(flagged[:2]) <= flipped  # ranked first
    assert all(x["truth"] == "two" and x["predicted"] == "one" for x in result["label_issues"] if x["image"] in flipped)


def test_kiln_evaluate_runs_the_same_job_from_the_command_line(app, capsys: pytest.CaptureFixture[str]) -> None:
    from kiln.cli import main

    kiln, t = app
    data = ["--data-dir", str(kiln.data_dir)]
    assert main(["evaluate", "lenet", "--split", "val", "--epoch", "best", *data]) == 0
    out = capsys.readouterr().out
    job_id = out.split("evaluation job ")[1].split()[0]
    result = kiln.client.get(f"/evaluations/{job_id}.json").json()
    assert result["status"] == "Done" and result["snapshot_epoch"] == "best" and result["scored"] == 18
    assert f'"top1_accuracy": {result["top1_accuracy"]}' in out
    assert main(["evaluate", "lenet", "--split", "val", "--epoch", "9", *data]) == 2
    assert "error: snapshot_epoch: No snapshot at epoch 9" in capsys.readouterr().err


def test_one_preprocessing_path_web_cli_and_predictor_agree(
    app, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same images (one resized from 40x33 colour) give the same top-5 over HTTP, from `kiln
    classify` and from the predictor, and the same probabilities from an evaluation of a list."""
    from PIL import Image

    from kiln.cli import main
    from kiln.inference.predictor import Predictor

    kiln, t = app
    big = tmp_path / "big.png"
    Image.open(t["folder"] / "two" / "0007.png").convert("RGB").resize((40, 33)).save(big)
    images = [str(t["folder"] / "one" / "0005.png"), str(big)]
    predictor = Predictor.from_job_dir(kiln.settings.jobs_dir / t["model"])
    direct = [[[label, pct] for label, pct in top] for top in predictor.classify(images)]
    web = []
    for path in images:
        with open(path, "rb") as f:
            res = kiln.client.post(
                "/models/images/classification/classify_one.json",
                data={"job_id": t["model"]},
                files={"image_file": ("x.png", f.read())},
            )
        web.append(res.json()["predictions"])
    assert web == direct
    assert main(["classify", t["model"], *images, "--data-dir", str(kiln.data_dir)]) == 0
    printed = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")]
    assert [[lab, float(pct.rstrip("%"))] for pct, lab in printed] == [p for top in direct for p in top]
    listed = "\n".join(f"{p} one" for p in images)
    result = evaluate(kiln, {"image_list": ("l.txt", listed.encode())}, job_id=t["model"])
    probs = np.load(kiln.settings.jobs_dir / result["id"] / "probs.npy")
    assert probs.tolist() == predictor.probabilities(predictor.load(images)[0]).tolist()
