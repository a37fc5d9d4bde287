"""classify_one with show_visualizations (JSON and HTML), and snapshot_epoch=best, over the API.

One data dir per module: a dataset and two LeNets, one keeping its best snapshot; the tests only
classify, so they share the app.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import Kiln, write_class_folder

URL = "/models/images/classification/classify_one.json"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("classify-vis")
    folder = write_class_folder(root / "imgs", {"one": 10, "two": 10, "three": 10}, size=(28, 28))
    kiln = Kiln(root / "data")
    try:
        dataset_id = kiln.built_dataset(folder, "digits")
        ids = {}
        for name, extra in (("kept", {"keep_best": "1"}), ("plain", {})):
            form = {"dataset": dataset_id, "model_name": name, "standard_networks": "lenet", "train_epochs": "2"}
            res = kiln.client.post("/models/images/classification.json", data={**form, "random_seed": "1", **extra})
            assert res.status_code == 200, res.text
            ids[name] = res.json()["id"]
            assert kiln.run(ids[name]) == "Done"
        yield {"kiln": kiln, "folder": folder, **ids}
    finally:
        kiln.close()


def _post(lab: dict[str, Any], url: str = URL, **data: str) -> Any:
    image = lab["folder"] / "two" / "0003.png"
    form = {"job_id": lab["kept"], **data}
    return lab["kiln"].client.post(url, data=form, files={"image_file": ("two.png", image.read_bytes(), "image/png")})


def _png(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_json_with_visualizations(lab: dict[str, Any]) -> None:
    res = _post(lab, show_visualizations="1")
    assert res.status_code == 200, res.text
    body = res.json()
    plain = _post(lab).json()
    assert body["predictions"] == plain["predictions"] and "visualizations" not in plain
    layers = body["visualizations"]
    assert [v["name"] for v in layers] == ["scale", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2"]
    conv1 = layers[1]
    assert (conv1["type"], conv1["shape"], conv1["params"]) == ("Convolution", [20, 24, 24], 520)
    assert conv1["weights"]["shape"] == [20, 1, 5, 5] and len(conv1["activations"]["histogram"]["counts"]) == 20
    assert sum(conv1["activations"]["histogram"]["counts"]) == 20 * 24 * 24
    assert _png(conv1["activations"]["image"]).size == (5 * 25 - 1, 4 * 25 - 1)
    assert body["total_params"] == sum(v["params"] for v in layers) == 520 + 25050 + 400500 + 1503
    assert _png(body["input"]["image"]).size == (28, 28) and body["input"]["shape"] == [1, 28, 28]
    assert _png(body["gradcam"]).size == (224, 224)
    assert body["gradcam_label"] == body["predictions"][0][0] and body["gradcam_layer"] == "conv2"


def test_html_with_visualizations(lab: dict[str, Any]) -> None:
    res = _post(lab, "/models/images/classification/classify_one", show_visualizations="on")
    assert res.status_code == 200, res.text
    html = res.text
    assert 'id="visualizations"' in html and 'data-layer="conv1"' in html and 'data-layer="ip2"' in html
    assert 'Total learned parameters: <b id="vis-total">427,573</b>' in html
    assert html.count("data:image/png;base64,") >= 12 and 'id="gradcam"' in html
    assert "/static/visualize.css" in html and "list-group-item" in html
    off = _post(lab, "/models/images/classification/classify_one", show_visualizations="0")
    assert off.status_code == 200 and 'id="visualizations"' not in off.text


def test_best_gives_the_kept_best_snapshot(lab: dict[str, Any]) -> None:
    kiln = lab["kiln"]
    best = json.loads((kiln.settings.jobs_dir / lab["kept"] / "best.json").read_text())["epoch"]
    res = _post(lab, snapshot_epoch="best")
    assert res.status_code == 200, res.text
    assert res.json()["snapshot_epoch"] == best
    same = _post(lab, snapshot_epoch=str(best)).json()
    assert res.json()["predictions"] == same["predictions"]
    assert _post(lab, snapshot_epoch="").json()["snapshot_epoch"] == 2  # blank: the latest


def test_best_without_a_kept_best_snapshot_is_a_400(lab: dict[str, Any]) -> None:
    res = _post(lab, job_id=lab["plain"], snapshot_epoch="best")
    assert res.status_code == 400
    message = res.json()["error"]["message"]
    assert message.startswith("snapshot_epoch: best:") and "keep_best" in message and "1, 2" in message
    assert str(lab["kiln"].settings.jobs_dir) not in message  # no server path


@pytest.mark.parametrize("bad", ["two", "nan", "inf", "1e999"])
def test_a_bad_epoch_is_a_400_naming_the_field(lab: dict[str, Any], bad: str) -> None:
    res = _post(lab, snapshot_epoch=bad)
    assert res.status_code == 400 and res.json()["error"]["message"].startswith("snapshot_epoch:"), res.text
    many = lab["kiln"].client.post(
        "/models/images/classification/classify_many.json",
        data={"job_id": lab["kept"], "snapshot_epoch": bad},
        files={"image_list": ("list.txt", b"x.png\n", "text/plain")},
    )
    assert many.status_code == 400 and "snapshot_epoch" in many.json()["error"]["message"]


def test_missing_epoch_and_bad_image_with_visualizations(lab: dict[str, Any]) -> None:
    res = _post(lab, snapshot_epoch="7", show_visualizations="1")
    assert res.status_code == 400 and "no snapshot at epoch 7" in res.json()["error"]["message"]
    junk = lab["kiln"].client.post(
        URL, data={"job_id": lab["kept"], "show_visualizations": "1"}, files={"image_file": ("x.png", b"junk")}
    )
    assert junk.status_code == 400 and junk.json()["error"]["message"].startswith("image_file:")


def test_cli_classify_epoch_best_and_visualize(lab: dict[str, Any], tmp_path: Path, capsys: Any) -> None:
    from kiln.cli import main

    kiln, image = lab["kiln"], lab["folder"] / "two" / "0003.png"
    data_dir = str(kiln.settings.data_dir)
    out = tmp_path / "vis"
    code = main(
        ["--data-dir", data_dir, "classify", lab["kept"], str(image), "--epoch", "best", "--visualize", str(out)]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    want = _post(lab, snapshot_epoch="best").json()["predictions"][0]
    assert f"{want[1]:6.2f}%  {want[0]}" in printed
    folder = out / "0-0003"
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["visualizations"][1]["activations"]["image"] == "01-conv1-activations.png"
    assert (folder / "01-conv1-weights.png").exists() and (folder / "gradcam.png").exists()
    assert main(["--data-dir", data_dir, "classify", lab["plain"], str(image), "--epoch", "best"]) == 1
    assert "keeps no best snapshot" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data-dir", data_dir, "classify", lab["plain"], str(image), "--epoch", "last"])
    assert "--epoch" in capsys.readouterr().err
