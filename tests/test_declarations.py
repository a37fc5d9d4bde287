"""Every choice is declared once: the form, `kiln train --help`, docs/api.md and OpenAPI offer exactly
the engine's entries, and every value the engine refuses is refused when the job is created."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kiln.config import Settings
from kiln.fields import Field
from kiln.networks.registry import list_networks
from kiln.store import Store
from kiln.training.config import TrainConfig
from kiln.training.options import FIELDS, NETWORK_FIELDS, check_config
from kiln.web.app import create_app
from tests.conftest import login

ROOT = Path(__file__).resolve().parents[1]
CHOICE_FIELDS = [f for f in FIELDS.values() if f.choices is not None]


def _out_of_range(f: Field) -> list[float]:
    """Values just outside each bound, plus the non-finite ones every number refuses."""
    bad: list[float] = [float("nan"), float("inf")]
    if f.low is not None:
        bad.append(f.low if f.low_open else f.low - (1 if f.type is int else 1e-3))
    if f.high is not None:
        bad.append(f.high if f.high_open else f.high + (1 if f.type is int else 1e-3))
    return bad


RANGE_CASES = [
    (f.name, v)
    for f in FIELDS.values()
    if f.type in (int, float)
    for v in _out_of_range(f)
    if not (f.type is int and v != v)
]  # an int field gets "nan" as text, checked by the parser


@pytest.fixture
def app_client(tmp_path: Path):
    settings = Settings.from_env(data_dir=str(tmp_path / "data"))
    store = Store(settings.db_path)
    spec = {"resize_width": 28, "resize_height": 28, "resize_channels": 1}
    dataset_id = store.create_job("dataset", "digits", {"spec": spec}, None)
    store.set_status(dataset_id, "Done")
    store.close()
    with login(TestClient(create_app(settings, run_scheduler=False)), "alice") as client:
        client.dataset_id = dataset_id  # type: ignore[attr-defined]
        client.settings = settings  # type: ignore[attr-defined]
        yield client


def _model_count(settings: Settings) -> int:
    store = Store(settings.db_path)
    try:
        return len(store.list_jobs("model"))
    finally:
        store.close()


def test_every_trainconfig_field_is_declared() -> None:
    import dataclasses

    names = {f.name for f in dataclasses.fields(TrainConfig)} - {*NETWORK_FIELDS, "extra"}
    assert names == set(FIELDS)


def test_defaults_pass_the_engine_check() -> None:
    check_config(TrainConfig())


@pytest.mark.parametrize("f", CHOICE_FIELDS, ids=lambda f: f.name)
def test_form_offers_exactly_the_declared_choices(app_client: TestClient, f: Field) -> None:
    page = app_client.get("/models/images/classification/new").text
    select = re.search(rf'<select name="{f.name}".*?</select>', page, re.S)
    assert select, f"no <select> for {f.name}"
    assert re.findall(r'<option value="([^"]*)"', select.group(0)) == list(f.choices)


def test_form_offers_exactly_the_registered_networks(app_client: TestClient) -> None:
    page = app_client.get("/models/images/classification/new").text
    offered = re.findall(r'name="standard_networks" value="([^"]+)"', page)
    assert offered == [n.name for n in list_networks()]


def _option_help(help_text: str, flag: str) -> str:
    """The help block of one option (argparse may put its text on the following lines)."""
    blocks = re.split(r"\n(?=  -)", help_text)
    return " ".join(" ".join(b.split()) for b in blocks if flag in re.split(r"[ ,]+", b.split("\n")[0]))


def test_cli_help_and_docs_list_every_choice() -> None:
    help_text = subprocess.run(
        [sys.executable, "-m", "kiln", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "400", "PATH": ""},
    ).stdout
    docs = (ROOT / "docs" / "api.md").read_text()
    for f in CHOICE_FIELDS:
        flag = "--" + f.name.replace("_", "-")
        line = _option_help(help_text, flag)
        assert line, f"kiln train --help has no {flag}"
        doc_line = next((ln for ln in docs.splitlines() if ln.startswith(f"| `{f.name}`")), None)
        assert doc_line is not None, f"docs/api.md does not list {f.name}"
        for value in f.choices:
            assert value in line, f"{flag} help lacks {value}"
            assert f"`{value}`" in doc_line, f"docs/api.md lacks {f.name}={value}"
    for n in list_networks():
        assert n.name in help_text


def test_openapi_describes_the_model_form(app_client: TestClient) -> None:
    spec = app_client.get("/openapi.json").json()
    body = spec["paths"]["/models/images/classification.json"]["post"]["requestBody"]
    props = body["content"]["multipart/form-data"]["schema"]["properties"]
    for f in CHOICE_FIELDS:
        assert props[f.name]["enum"] == list(f.choices)
    assert props["lr_step_size"]["exclusiveMinimum"] == 0
    assert props["standard_networks"]["enum"] == [n.name for n in list_networks()]


@pytest.mark.parametrize("name,value", RANGE_CASES, ids=[f"{n}={v}" for n, v in RANGE_CASES])
def test_out_of_range_refused_at_creation(app_client: TestClient, name: str, value: float) -> None:
    form = {"dataset": app_client.dataset_id, "model_name": "m", "standard_networks": "lenet", name: str(value)}
    res = app_client.post("/models/images/classification.json", data=form)
    assert res.status_code == 400, res.text
    assert name in res.json()["errors"], res.json()
    assert _model_count(app_client.settings) == 0


@pytest.mark.parametrize("f", CHOICE_FIELDS, ids=lambda f: f.name)
def test_unknown_choice_refused_at_creation(app_client: TestClient, f: Field) -> None:
    form = {"dataset": app_client.dataset_id, "model_name": "m", "standard_networks": "lenet", f.name: "bogus"}
    res = app_client.post("/models/images/classification.json", data=form)
    assert res.status_code == 400 and f.name in res.json()["errors"], res.text


def test_lr_step_size_zero_is_refused_on_web_and_cli(app_client: TestClient) -> None:
    """The bug that started it: the job used to be created and fail a second later."""
    form = {
        "dataset": app_client.dataset_id,
        "model_name": "m",
        "standard_networks": "lenet",
        "lr_policy": "step",
        "lr_step_size": "0",
    }
    res = app_client.post("/models/images/classification", data=form, follow_redirects=False)
    assert res.status_code == 400 and 'data-field="lr_step_size"' in res.text
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiln",
            "--data-dir",
            str(app_client.settings.data_dir),
            "train",
            "--dataset",
            app_client.dataset_id,
            "--name",
            "m",
            "--lr-step-size",
            "0",
            "--queue",
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode != 0 and "lr_step_size" in cli.stderr + cli.stdout
    assert _model_count(app_client.settings) == 0


def test_valid_form_creates_a_job(app_client: TestClient) -> None:
    """The other side: the checks do not refuse the form's own defaults."""
    form = {
        "dataset": app_client.dataset_id,
        "model_name": "m",
        "standard_networks": "lenet",
        "lr_policy": "multistep",
        "lr_multistep_values": "30,60",
        "learning_rate": "0.1,0.01",
    }
    res = app_client.post("/models/images/classification.json", data=form)
    assert res.status_code == 200, res.text
    assert _model_count(app_client.settings) == 2


@pytest.mark.parametrize("name", ["resize_mode", "encoding"])
def test_dataset_form_and_cli_offer_the_declared_choices(app_client: TestClient, name: str) -> None:
    from kiln.datasets.spec import ENCODINGS, RESIZE_MODES

    declared = list({"resize_mode": RESIZE_MODES, "encoding": ENCODINGS}[name])
    page = app_client.get("/datasets/images/classification/new").text
    select = re.search(rf'<select name="{name}".*?</select>', page, re.S)
    assert select and re.findall(r'<option value="([^"]*)"', select.group(0)) == declared
    help_text = subprocess.run(
        [sys.executable, "-m", "kiln", "dataset", "create", "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={"COLUMNS": "400", "PATH": ""},
    ).stdout
    block = _option_help(help_text, "--" + name.replace("_", "-"))
    assert all(v in block for v in declared), block


def test_openapi_describes_every_form_route(app_client: TestClient) -> None:
    """Routes that read request.form() by hand still show their fields in /docs."""
    from kiln.datasets.spec import ENCODINGS, RESIZE_MODES

    paths = app_client.get("/openapi.json").json()["paths"]

    def props(path: str) -> dict:
        content = paths[path]["post"]["requestBody"]["content"]
        return content["multipart/form-data"]["schema"]["properties"]

    dataset = props("/datasets/images/classification.json")
    assert dataset["resize_mode"]["enum"] == list(RESIZE_MODES) and dataset["encoding"]["enum"] == list(ENCODINGS)
    assert dataset["folder_pct_val"]["type"] == "integer"
    assert props("/models/images/classification/classify_one.json")["image_file"]["format"] == "binary"
    assert "num_test_images" in props("/models/images/classification/classify_many.json")
    assert "lr_step_size" in props("/models/visualize-lr")
