"""Download and export over real HTTP (in-process app) and `kiln export`: DIGITS' names, the archive's
predict.py agreeing with classify_one.json, and clear 400/404 answers for bad input."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest
import torch

from kiln.cli import main
from tests.conftest import Kiln, write_class_folder
from tests.export.conftest import run_predict


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kiln, dict[str, Any]]]:
    """A Done grey 28x28 dataset (3 classes) and a LeNet trained 1 epoch on it; one model left untrained."""
    root = tmp_path_factory.mktemp("export_routes")
    folder = write_class_folder(root / "imgs", {"one": 8, "three": 8, "two": 8}, size=(28, 28))
    kiln = Kiln(root / "data")
    fields = {"folder_train": str(folder), "resize_channels": "1", "resize_width": "28", "resize_height": "28"}
    ds = kiln.client.post("/datasets/images/classification.json", data={"dataset_name": "d", **fields}).json()["id"]
    assert kiln.run(ds) == "Done"
    form = {"dataset": ds, "model_name": "lenet", "standard_networks": "lenet", "train_epochs": "1", "random_seed": "1"}
    model = kiln.client.post("/models/images/classification.json", data=form).json()["id"]
    assert kiln.run(model) == "Done"
    idle = kiln.client.post("/models/images/classification.json", data=dict(form, model_name="idle")).json()["id"]
    yield kiln, {"model": model, "idle": idle, "images": sorted(folder.rglob("*.png"))[::5], "root": root}
    kiln.close()


def test_download_archive_predict_py_matches_classify_one(trained, tmp_path: Path) -> None:
    kiln, t = trained
    res = kiln.client.get(f"/models/{t['model']}/download.tar.gz", params={"epoch": "1"})
    assert res.status_code == 200, res.text
    assert f'filename="{t["model"]}_epoch_1.tar.gz"' in res.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(res.content)) as tf:
        tf.extractall(tmp_path / "x", filter="data")
    info = json.loads((tmp_path / "x" / "info.json").read_text())
    assert info["id"] == info["job id"] == t["model"] and info["name"] == "lenet" and info["status"] == "Done"
    assert info["labels"] == ["one", "three", "two"] and info["archive version"] == 1
    for flags in ((), ("--onnx",)):
        lines = run_predict(tmp_path / "x", t["images"], *flags)
        for image, line in zip(t["images"], lines):
            served = kiln.client.post(
                "/models/images/classification/classify_one.json",
                data={"job_id": t["model"], "image_path": str(image)},
            ).json()["predictions"]
            assert [p[0] for p in line["predictions"]] == [p[0] for p in served]
            assert np.allclose([p[1] for p in line["predictions"]], [p[1] for p in served], atol=0.011)


def test_plain_download_is_tar_gz_and_post_takes_snapshot_epoch(trained) -> None:
    kiln, t = trained
    res = kiln.client.get(f"/models/{t['model']}/download")
    assert res.status_code == 200 and res.headers["content-disposition"].endswith('_epoch_1.tar.gz"')
    res = kiln.client.post(f"/models/{t['model']}/download.zip", data={"snapshot_epoch": "1"})
    assert res.status_code == 200 and zipfile.ZipFile(io.BytesIO(res.content)).namelist()[0] == "info.json"


def test_export_onnx_and_torchscript(trained) -> None:
    kiln, t = trained
    res = kiln.client.get(f"/models/{t['model']}/export.onnx")
    assert res.status_code == 200 and res.headers["content-disposition"].endswith('_epoch_1.onnx"')
    session = onnxruntime.InferenceSession(res.content, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-100, 100, (4, 1, 28, 28)).astype(np.float32)
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    res = kiln.client.get(f"/models/{t['model']}/export.pt", params={"epoch": "-1"})
    assert res.status_code == 200 and res.headers["content-disposition"].endswith('_epoch_1.pt"')
    traced = torch.jit.load(io.BytesIO(res.content))
    assert np.abs(traced(torch.from_numpy(x)).detach().numpy() - logits).max() < 1e-4


@pytest.mark.parametrize(
    ("path", "params", "code", "field"),
    [
        ("/models/nope/download", {}, 404, "not found"),
        ("/models/{model}/download.rar", {}, 400, "format:"),
        ("/models/{model}/export.h5", {}, 400, "format:"),
        ("/models/{model}/download.zip", {"epoch": "abc"}, 400, "epoch:"),
        ("/models/{model}/download.zip", {"epoch": "7"}, 404, "epoch: no snapshot at epoch 7"),
        ("/models/{model}/export.onnx", {"epoch": "best"}, 404, "epoch: this model keeps no best snapshot"),
        ("/models/{idle}/download.tar", {}, 404, "epoch: model"),
    ],
)
def test_bad_input_is_a_clear_4xx(trained, path: str, params: dict[str, str], code: int, field: str) -> None:
    kiln, t = trained
    res = kiln.client.get(path.format(**t), params=params, headers={"Accept": "application/json"})
    assert res.status_code == code and field in res.json()["error"]["message"], res.text


def test_cli_export(trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kiln, t = trained
    data = str(t["root"] / "data")
    out = tmp_path / "m.zip"
    assert main(["export", "lenet", "--format", "zip", "-o", str(out), "--data-dir", data]) == 0
    assert "predict.py" in zipfile.ZipFile(out).namelist() and capsys.readouterr().out.strip() == str(out)
    assert main(["export", t["model"], "--format", "onnx", "-o", str(tmp_path / "m.onnx"), "--data-dir", data]) == 0
    onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(SystemExit, match="--epoch: no snapshot at epoch 3"):
        main(["export", t["model"], "--epoch", "3", "--data-dir", data])
    with pytest.raises(SystemExit, match="model: no model job"):
        main(["export", "missing", "--data-dir", data])


def test_model_page_download_forms_post_the_chosen_snapshot(trained) -> None:
    kiln, t = trained
    page = kiln.client.get(f"/models/{t['model']}").text
    assert 'id="download"' in page and f'formaction="/models/{t["model"]}/export.onnx"' in page
    res = kiln.client.post(f"/models/{t['model']}/export.pt", data={"snapshot_epoch": "1"})
    assert res.status_code == 200 and res.headers["content-disposition"].endswith('_epoch_1.pt"')
