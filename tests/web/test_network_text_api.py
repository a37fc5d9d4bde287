"""Networks as text over the web API (issue 8): Customize, Visualize, line-exact errors before a job
exists, custom prototxt and Python networks trained through the API, fine-tuning and resume.

A template data dir is built once per module: two small grey 28x28 datasets of faint horizontal
bands ("four", four band positions; "three", the first three of them, other images) and a LeNet
trained on "four". Every test gets its own copy and its own app, scheduler off: jobs run here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kiln.jobs.worker import run_job
from kiln.networks.prototxt import build_from_text, standard_text
from kiln.training import checkpoint
from tests.conftest import Kiln, copy_data_dir, edit_text, lab_lenet_text

CREATE = "/models/images/classification.json"
VISUALIZE = "/models/visualize-network.json"


LENET75 = lab_lenet_text()

PYTHON_NET = """from torch import nn


def network(num_classes, input_shape):
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, num_classes)
    )
"""


def _bands(root: Path, count: int, seed: int, keep: int = 4, contrast: int = 40) -> Path:
    """root/<class>/<i>.png: noise with one faint horizontal band out of four positions per class;
    ``keep`` < 4 makes the first ``keep`` classes only (the same bands: what a network learnt transfers)."""
    rng = np.random.default_rng(seed)
    for ci in range(keep):
        folder = root / "abcd"[ci]
        folder.mkdir(parents=True)
        for i in range(count):
            img = rng.integers(0, 256 - contrast, (28, 28)).astype(np.int32)
            img[ci * 7 : (ci + 1) * 7, :] += contrast
            Image.fromarray(img.astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


def _model(client: Any, dataset_id: str, **fields: str) -> Any:
    data = {"dataset": dataset_id, "model_name": "net", "train_epochs": "1", "random_seed": "1", **fields}
    return client.post(CREATE, data=data)


def _val_accuracy(kiln: Kiln, job_id: str) -> float:
    return kiln.client.get(f"/models/{job_id}/metrics.json").json()["series"]["accuracy (val)"]["y"][-1]


def _model_ids(kiln: Kiln) -> list[str]:
    return [m["id"] for m in kiln.client.get("/index.json").json()["models"]]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("networks")
    kiln = Kiln(root / "data")
    try:
        four = kiln.built_dataset(_bands(root / "four", 40, seed=7), "four")  # 128 train, 32 val
        three = kiln.built_dataset(_bands(root / "three", 20, seed=8, keep=3), "three", pct_val="50")  # 30 + 30
        res = _model(
            kiln.client,
            four,
            model_name="bands",
            standard_networks="lenet",
            train_epochs="2",
            solver_type="ADAM",
            learning_rate="0.001",
            batch_size="16",
            lr_policy="fixed",
        )
        assert res.status_code == 200, res.text
        trained = res.json()["id"]
        assert kiln.run(trained) == "Done"
        assert _val_accuracy(kiln, trained) >= 80.0  # it learnt the faint bands: something to transfer
    finally:
        kiln.close()
    return {"data": root / "data", "four": four, "three": three, "trained": trained}


@pytest.fixture
def kiln(template: dict[str, Any], tmp_path: Path) -> Iterator[Kiln]:
    """This test's own copy of the template, Python networks off."""
    app = Kiln(copy_data_dir(template["data"], tmp_path / "data"), allow_python_networks=False)
    yield app
    app.close()


# ------------------------------------------------------------------------------------------------
# Customize
# ------------------------------------------------------------------------------------------------
def test_customize_answers_standard_and_model_texts(kiln: Kiln, template: dict[str, Any]) -> None:
    lenet = kiln.client.post("/models/customize", params={"network": "lenet"})
    assert lenet.status_code == 200 and lenet.json()["network"] == standard_text("lenet")
    assert lenet.json()["network_language"] == "prototxt"
    python_class = kiln.client.post("/models/customize.json", params={"network": "resnet18"})
    assert python_class.status_code == 400 and "resnet18" in python_class.json()["errors"]["network"][0]
    unknown = kiln.client.post("/models/customize.json", params={"network": "vgg99"})
    assert unknown.status_code == 404 and "vgg99" in unknown.json()["error"]["message"]
    trained = template["trained"]
    model = kiln.client.post("/models/customize", params={"network": trained}).json()
    assert model["network"] == standard_text("lenet") and model["snapshot"] == f"{trained}:2"


# ------------------------------------------------------------------------------------------------
# Visualize
# ------------------------------------------------------------------------------------------------
def test_visualize_lists_layers_shapes_and_parameters(kiln: Kiln, template: dict[str, Any]) -> None:
    res = kiln.client.post(VISUALIZE, data={"custom_network": LENET75, "dataset_id": template["four"]})
    assert res.status_code == 200, res.text
    view = res.json()
    assert view["input_shape"] == [1, 28, 28] and view["num_classes"] == 4 and view["assumed"] == ""
    rows = {row["name"]: row for row in view["layers"]}
    assert rows["conv1"]["shapes"] == [[75, 24, 24]] and rows["conv2"]["shapes"] == [[100, 8, 8]]
    assert rows["relu_pool1"]["shapes"] == [[75, 12, 12]] and rows["ip2"]["shapes"] == [[4]]
    assert rows["conv1"]["params"] == 75 * 25 + 75 and rows["conv2"]["params"] == 100 * 75 * 25 + 100
    module, _ = build_from_text(LENET75, 4, (1, 28, 28))
    assert view["total_params"] == sum(p.numel() for p in module.parameters())
    assert view["total_params"] == 1950 + 187_600 + (1600 * 500 + 500) + (500 * 4 + 4)
    assert view["svg"].startswith("<svg") and all(name in view["svg"] for name in ("conv1", "relu_pool1", "ip2"))
    html = kiln.client.post(
        "/models/visualize-network", data={"custom_network": LENET75, "dataset_id": template["four"]}
    )
    assert html.status_code == 200 and 'id="network-layers"' in html.text and "<html" not in html.text
    assert "75×24×24" in html.text and "100×8×8" in html.text
    broken = edit_text(LENET75, "num_output: 100\n", "num_output 100\n")
    error = kiln.client.post("/models/visualize-network", data={"custom_network": broken})
    line = broken.splitlines().index("    num_output 100") + 1
    assert error.status_code == 400 and 'id="network-error"' in error.text and f'data-line="{line}"' in error.text


# One case per class of error: (edit of LENET75, marker of the line, marker of the column, words,
# other form fields). Each must be refused with its line, by Visualize and by model creation alike.
ERRORS: dict[str, tuple[tuple[str, str] | None, str, str, str, dict[str, str]]] = {
    "syntax": (("num_output: 100\n", "num_output 100\n"), "num_output 100", "100", "expected ':' or '{'", {}),
    "unknown_type": (('type: "Pooling"', 'type: "Poolng"'), "Poolng", '"Poolng"', "unknown layer type 'Poolng'", {}),
    "unknown_field": (
        ("kernel_size: 5", "kernel_sise: 5"),
        "kernel_sise",
        "kernel_sise",
        "unknown parameter 'kernel_sise'",
        {},
    ),
    "bottom": (('bottom: "pool2"', 'bottom: "pool9"'), "pool9", '"pool9"', "bottom 'pool9' is not produced", {}),
    "shape": (
        ("pool: MAX kernel_size: 2", "pool: MAX kernel_size: 40"),
        'name: "pool1"',
        "name",
        "pool1 gives 0x0 for 28x28 input",
        {},
    ),
    "shape_for_the_images": (None, 'name: "conv2"', "name", "conv2 gives 0x0 for 12x12 input", {"crop_size": "12"}),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_a_broken_network_is_refused_with_its_line(kiln: Kiln, template: dict[str, Any], case: str) -> None:
    edit, line_marker, column_marker, words, fields = ERRORS[case]
    text = edit_text(LENET75, *edit) if edit else LENET75
    line = next(i for i, row in enumerate(text.splitlines(), 1) if line_marker in row)
    column = text.splitlines()[line - 1].index(column_marker) + 1
    where = f"line {line}, column {column}: "

    shown = kiln.client.post(VISUALIZE, data={"custom_network": text, "dataset_id": template["four"], **fields})
    assert shown.status_code == 400, shown.text
    body = shown.json()
    assert body["errors"]["custom_network"][0].startswith(where) and words in body["errors"]["custom_network"][0]
    assert (body["error"]["line"], body["error"]["column"]) == (line, column) and words in body["error"]["message"]

    created = _model(kiln.client, template["four"], method="custom", custom_network=text, **fields)
    assert created.status_code == 400, created.text
    errors = created.json()["errors"]
    assert list(errors) == ["custom_network"], errors  # the text's field, not crop_size or batch_size
    assert errors["custom_network"][0].startswith(where) and words in errors["custom_network"][0]
    assert _model_ids(kiln) == [template["trained"]]  # no job was created


# ------------------------------------------------------------------------------------------------
# Custom networks that train
# ------------------------------------------------------------------------------------------------
def test_a_custom_prototxt_trains_and_its_page_shows_its_layers(kiln: Kiln, template: dict[str, Any]) -> None:
    res = _model(kiln.client, template["three"], method="custom", custom_network=LENET75, batch_size="10")
    assert res.status_code == 200, res.text
    job_id = res.json()["id"]
    assert res.json()["network"] == "custom" and res.json()["model file"] == "network.prototxt"
    assert kiln.run(job_id) == "Done", kiln.store.logs(job_id)
    info = kiln.client.get(f"/models/{job_id}.json").json()
    assert info["status"] == "Done" and info["model file"] == "network.prototxt" and info["snapshots"] == [1.0]
    job_dir = kiln.settings.jobs_dir / job_id
    assert (job_dir / "network.prototxt").read_text(encoding="utf-8") == LENET75
    assert checkpoint.read_meta(job_dir)["network_text"] == LENET75  # the snapshot rebuilds without the form
    page = kiln.client.get(f"/models/{job_id}")
    assert page.status_code == 200 and 'id="network-layers"' in page.text
    assert "75×24×24" in page.text and "relu_pool1" in page.text
    again = kiln.client.post("/models/customize", params={"network": job_id}).json()
    assert again["network"] == LENET75 and again["snapshot"] == f"{job_id}:1"


def test_pretrained_and_python_networks_are_refused(kiln: Kiln, template: dict[str, Any]) -> None:
    pretrained = _model(kiln.client, template["three"], method="pretrained")  # without pretrained_networks
    assert (
        pretrained.status_code == 400
        and "Pick a pretrained model." in pretrained.json()["errors"]["pretrained_networks"]
    )
    python = {"method": "custom", "network_language": "python", "custom_network": PYTHON_NET}
    created = _model(kiln.client, template["three"], **python)
    assert created.status_code == 400
    assert "KILN_ALLOW_PYTHON_NETWORKS" in created.json()["errors"]["custom_network"][0]
    shown = kiln.client.post(VISUALIZE, data={"dataset_id": template["three"], **python})
    assert shown.status_code == 400 and "KILN_ALLOW_PYTHON_NETWORKS" in shown.json()["error"]["message"]
    assert _model_ids(kiln) == [template["trained"]]


def test_a_python_network_trains_where_allowed(template: dict[str, Any], tmp_path: Path) -> None:
    kiln = Kiln(copy_data_dir(template["data"], tmp_path / "data"), allow_python_networks=True)
    try:
        python = {"method": "custom", "network_language": "python", "custom_network": PYTHON_NET}
        shown = kiln.client.post(VISUALIZE, data={"dataset_id": template["three"], **python}).json()
        assert shown["total_params"] == (4 * 9 + 4) + (64 * 3 + 3)
        res = _model(kiln.client, template["three"], batch_size="10", **python)
        assert res.status_code == 200 and res.json()["model file"] == "network.py", res.text
        job_id = res.json()["id"]
        assert kiln.run(job_id) == "Done", kiln.store.logs(job_id)
        assert (kiln.settings.jobs_dir / job_id / "network.py").read_text(encoding="utf-8") == PYTHON_NET
        assert kiln.client.get(f"/models/{job_id}.json").json()["snapshots"] == [1.0]
    finally:
        kiln.close()


# ------------------------------------------------------------------------------------------------
# Fine-tuning: the "Done means"
# ------------------------------------------------------------------------------------------------
def test_fine_tuning_on_other_classes_beats_a_fresh_start(kiln: Kiln, template: dict[str, Any]) -> None:
    """LeNet learnt four faint band positions; three of them, other images, one short epoch (3 SGD
    steps): its weights, all but ip2, do much better than the same network from scratch, seed by seed."""
    trained, three = template["trained"], template["three"]
    one_epoch = {"solver_type": "SGD", "learning_rate": "0.01", "batch_size": "10", "lr_policy": "fixed"}
    tuned, fresh = [], []
    for seed in ("1", "2", "3"):
        start = {"method": "previous", "previous_networks": trained, f"{trained}-snapshot": ""}
        res = _model(kiln.client, three, model_name=f"tuned {seed}", random_seed=seed, **start, **one_epoch)
        assert res.status_code == 200, res.text
        tuned_id = res.json()["id"]
        scratch_id = _model(
            kiln.client, three, model_name=f"fresh {seed}", random_seed=seed, standard_networks="lenet", **one_epoch
        ).json()["id"]
        assert kiln.run(tuned_id) == "Done" and kiln.run(scratch_id) == "Done"
        tuned.append(_val_accuracy(kiln, tuned_id))
        fresh.append(_val_accuracy(kiln, scratch_id))
    assert all(t > f for t, f in zip(tuned, fresh)), (tuned, fresh)
    assert sum(tuned) / 3 >= 85.0 and sum(tuned) / 3 - sum(fresh) / 3 >= 20.0, (tuned, fresh)

    starting = [line for line in kiln.store.logs(tuned_id) if line.startswith("Starting from the weights of")]
    assert len(starting) == 1 and f"bands ({trained}) epoch 2" in starting[0]
    fresh_layers = starting[0].split("started fresh: ")[1]
    assert "ip2.weight (4x500 in the snapshot, 3x500 here)" in fresh_layers and "ip2.bias" in fresh_layers
    assert "conv1" not in fresh_layers and "ip1" not in fresh_layers
    info = kiln.client.get(f"/models/{tuned_id}.json").json()
    assert info["pretrained model"] == f"bands ({trained}) epoch 2" and info["network"] == "lenet"
    assert kiln.client.get(f"/models/{scratch_id}.json").json()["pretrained model"] is None


def test_previous_network_snapshot_choices(kiln: Kiln, template: dict[str, Any]) -> None:
    trained, three = template["trained"], template["three"]
    previous = {"method": "previous", "previous_networks": trained}
    bare = _model(kiln.client, three, batch_size="10", **previous, **{f"{trained}-snapshot": "0"})
    assert bare.status_code == 200, bare.text
    job_id = bare.json()["id"]
    config = kiln.store.get_job(job_id).params["config"]
    assert config["network"] == "lenet" and config["pretrained_weights"] == "" and config["pretrained_from"] == ""
    assert kiln.run(job_id) == "Done"
    assert not any("Starting from" in line for line in kiln.store.logs(job_id))
    assert kiln.client.get(f"/models/{job_id}.json").json()["pretrained model"] is None
    first = _model(kiln.client, three, **previous, **{f"{trained}-snapshot": "1"})
    assert first.status_code == 200 and first.json()["pretrained model"] == f"bands ({trained}) epoch 1"
    missing = _model(kiln.client, three, **previous, **{f"{trained}-snapshot": "7"})
    assert missing.status_code == 400 and f"{trained}-snapshot" in missing.json()["errors"]
    nobody = _model(kiln.client, three, method="previous", previous_networks="no-such-model")
    assert nobody.status_code == 400 and "previous_networks" in nobody.json()["errors"]


# ------------------------------------------------------------------------------------------------
# Resume
# ------------------------------------------------------------------------------------------------
def test_a_custom_network_resumes_after_an_abort(kiln: Kiln, template: dict[str, Any]) -> None:
    """Aborted right after its first snapshot (in this process, as the worker stops: the job's abort
    flag), it resumes from that snapshot with its own text and runs to Done."""
    res = _model(
        kiln.client,
        template["three"],
        method="custom",
        custom_network=LENET75,
        batch_size="10",
        train_epochs="3",
        snapshot_interval="1",
    )
    job_id = res.json()["id"]

    def abort_after_the_first_validation(epoch: float, values: dict[str, float], phase: str) -> None:
        if phase == "val" and epoch == 1.0:  # the snapshot of epoch 1 is written right after
            assert kiln.store.request_abort(job_id) == "Running"
            time.sleep(1.1)  # the worker polls the flag at most once a second

    assert run_job(kiln.settings, job_id, on_metrics=abort_after_the_first_validation) == "Aborted"
    assert kiln.client.get(f"/models/{job_id}.json").json()["snapshots"] == [1.0]
    assert kiln.client.post(f"/models/{job_id}/resume").text == "Job resumed."
    assert kiln.run(job_id) == "Done", kiln.store.logs(job_id)
    info = kiln.client.get(f"/models/{job_id}.json").json()
    assert info["status"] == "Done" and info["snapshots"] == [1.0, 2.0, 3.0]
    assert any("Resuming from epoch 1" in line for line in kiln.store.logs(job_id))
    x = kiln.client.get(f"/models/{job_id}/metrics.json").json()["series"]["loss (train)"]["x"]
    assert x == sorted(set(x)) and x[-1] == 3.0  # went on from epoch 1: no epoch trained twice
    job_dir = kiln.settings.jobs_dir / job_id
    assert (job_dir / "network.prototxt").read_text(encoding="utf-8") == LENET75
    assert checkpoint.read_meta(job_dir)["network_text"] == LENET75
