"""kiln.client against a real `kiln serve` over HTTP: every public method, and every refusal raised
as its KilnError subclass with the server's own message.

One server, one tiny dataset (3 classes of 28x28 bands, a test folder) and one 1-epoch LeNet are
made once for the module; each test adds only what it needs.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kiln.client import (
    BadRequest,
    Client,
    Forbidden,
    Job,
    JobFailed,
    KilnError,
    NotFound,
    Prediction,
    Unauthorized,
    Unreachable,
    WaitTimeout,
    labelled_zip,
)
from kiln.client.errors import Busy, ServerError, TooManyRequests, error_for
from kiln.client.progress import TextBar
from tests.conftest import _free_port, start_server, stop_server, write_class_folder

CLASSES = {"one": 16, "three": 16, "two": 16}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("client")
    train = write_class_folder(root / "train", CLASSES, size=(28, 28))
    test = write_class_folder(root / "test", {k: 4 for k in CLASSES}, size=(28, 28), seed=1)
    server = start_server(root / "data")
    kiln = Client(server.url, username="alice", progress=False)
    try:
        dataset = kiln.create_dataset(
            "bands",
            str(train),
            test_folder=str(test),
            resize_channels=1,
            resize_width=28,
            resize_height=28,
            folder_pct_val=25,
            wait=True,
        )
        model = kiln.create_model(
            "lenet", dataset, "lenet", train_epochs=1, random_seed=1, solver_type="ADAM", learning_rate=0.002, wait=True
        )
        yield {"server": server, "kiln": kiln, "dataset": dataset, "model": model, "train": train, "root": root}
    finally:
        kiln.close()
        stop_server(server)


@pytest.fixture
def kiln(lab: dict[str, Any]) -> Client:
    return lab["kiln"]


def _image(lab: dict[str, Any], label: str = "two", index: int = 0) -> Path:
    return lab["train"] / label / f"{index:04d}.png"


# -- connecting and logging in ------------------------------------------------------------------
def test_url_from_the_environment_and_no_server(lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_URL", lab["server"].url + "/")
    with Client() as env_client:
        assert env_client.url == lab["server"].url
        assert env_client.index()["version"]
    monkeypatch.delenv("KILN_URL")
    assert Client().url == "http://127.0.0.1:5000"
    with pytest.raises(Unreachable, match="Is `kiln serve` running"):
        Client(f"http://127.0.0.1:{_free_port()}").index()


def test_nobody_is_refused_with_the_servers_message(lab) -> None:
    with Client(lab["server"].url, progress=False) as nobody:
        with pytest.raises(Unauthorized, match="Log in first") as info:
            nobody.create_dataset("x", "/nowhere")
        assert info.value.status == 401 and info.value.kind == "Unauthorized"
        with pytest.raises(BadRequest, match="Usernames start with a lowercase letter"):
            nobody.login("Not A Name!")


def test_accounts_tokens_logout(lab) -> None:
    from kiln.accounts import Accounts

    accounts = Accounts(lab["server"].data_dir / "kiln.db")
    accounts.add_user("bob", "correct horse battery", False)
    url = lab["server"].url
    with Client(url, progress=False) as bob:
        with pytest.raises(Unauthorized, match="has an account: enter its password"):
            bob.login("bob")
        with pytest.raises(Unauthorized, match="Wrong username or password"):
            bob.login("bob", "wrong password")
        assert bob.login("bob", "correct horse battery") == {"username": "bob", "is_admin": False}
        made = bob.create_token("notebook")
        assert made["token"].startswith("kiln_") and made["label"] == "notebook"
        assert [t["id"] for t in bob.account()["tokens"]] == [made["id"]]
        with Client(url, token=made["token"]) as by_token:
            assert by_token.account()["user"]["name"] == "bob"
            assert 'name: "conv1"' in by_token.customize("lenet")  # a POST, which needs a user
        bob.revoke_token(made["id"])
        with Client(url, token=made["token"]) as revoked, pytest.raises(Unauthorized, match="not valid"):
            revoked.index()
        bob.logout()
        with pytest.raises(Unauthorized):
            bob.create_token()
    with Client(url, username="carol") as carol, pytest.raises(Forbidden, match="carol has no account"):
        carol.create_token()


def test_token_from_the_environment(lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_TOKEN", "kiln_not-a-real-token")
    with Client(lab["server"].url) as c, pytest.raises(Unauthorized, match="This API token is not valid"):
        c.index()


# -- datasets -----------------------------------------------------------------------------------
def test_dataset_from_folders(kiln: Client, lab) -> None:
    info = kiln.dataset(lab["dataset"])
    assert info["status"] == "Done" and info["labels"] == ["one", "three", "two"]
    counts = info["ParseFolderTasks"][0]
    assert (counts["train_count"], counts["val_count"], counts["test_count"]) == (36, 12, 12)
    png = kiln.dataset_image(lab["dataset"], "train", 0)
    assert Image.open(io.BytesIO(png)).size == (28, 28)
    with pytest.raises(NotFound, match="No image 999 in train"):
        kiln.dataset_image(lab["dataset"], "train", 999)


def test_dataset_form_errors_by_field(kiln: Client) -> None:
    with pytest.raises(BadRequest) as info:
        kiln.create_dataset("bad", "relative/path", resize_width=0, resize_channels=1)
    assert info.value.status == 400
    assert "absolute path" in " ".join(info.value.errors["folder_train"])
    assert "resize_width" in info.value.errors
    assert "folder_train" in info.value.message


def test_dataset_from_uploaded_lists(kiln: Client, lab, capsys: pytest.CaptureFixture[str]) -> None:
    train = lab["train"]
    lines = [f"{p} {i}" for i, c in enumerate(sorted(CLASSES)) for p in sorted((train / c).glob("*.png"))]
    job = kiln.create_dataset(
        "lists",
        textfile_train_images="\n".join(lines[::2]).encode(),
        textfile_val_images="\n".join(lines[1::2]).encode(),
        textfile_labels_file=b"one\nthree\ntwo\n",
        resize_channels=1,
        resize_width=28,
        resize_height=28,
        add_inverted=True,
        wait=True,
        progress=True,
    )
    bar = capsys.readouterr().err
    assert "lists" in bar and "100%" in bar and "Done" in bar  # tqdm's bar, named after the job
    assert isinstance(job, Job) and job.type == "dataset"
    counts = kiln.dataset(job)["ParseFolderTasks"][0]
    assert counts["label_count"] == 3 and counts["val_count"] == 24
    kiln.delete(job)
    with pytest.raises(NotFound, match=f"Job {job.id} not found"):
        kiln.dataset(job)


# -- models -------------------------------------------------------------------------------------
def test_model_details_and_metrics(kiln: Client, lab) -> None:
    model = lab["model"]
    info = kiln.model(model)
    assert info["status"] == "Done" and info["snapshots"] == [1.0] and info["network"] == "lenet"
    assert 0 <= info["test_accuracy"] <= 100
    frame = kiln.metrics(model)
    assert list(frame.columns)[0] == "epoch"
    assert {"loss (train)", "loss (val)", "accuracy (val)"} <= set(frame.columns)
    rows = kiln.metrics(model, as_frame=False)
    assert rows[-1]["epoch"] == 1.0 and rows[-1]["accuracy (val)"] is not None
    best = kiln.best_epoch(model)
    assert best is not None and best["epoch"] == 1.0


def test_model_form_errors_by_field(kiln: Client, lab) -> None:
    with pytest.raises(BadRequest) as info:
        kiln.create_model("bad", lab["dataset"], "lenet", learning_rate="fast", momentum=2)
    assert set(info.value.errors) >= {"learning_rate", "momentum"}
    with pytest.raises(BadRequest, match="This field is required") as info:
        kiln.create_model("", "no-such-dataset")
    assert set(info.value.errors) == {"model_name", "dataset"}
    with pytest.raises(ValueError, match="create_models"):
        kiln.create_model("sweep", lab["dataset"], learning_rate=[0.1, 0.2])


def test_custom_network_abort_resume_wait_delete(kiln: Client, lab) -> None:
    text = kiln.customize("lenet")
    assert 'name: "conv1"' in text
    wide = text.replace("num_output: 20\n", "num_output: 30\n", 1)
    layers = kiln.visualize_network(lab["dataset"], wide)["layers"]
    assert any(layer["name"] == "conv1" and layer["params"] for layer in layers)
    with pytest.raises(BadRequest, match="found '{'") as info:
        kiln.visualize_network(lab["dataset"], wide.replace("layer {", "layer {{", 1))
    assert "custom_network" in info.value.errors and info.value.detail["line"] > 0
    with pytest.raises(BadRequest, match="line") as info:
        kiln.create_model("broken", lab["dataset"], custom_network="layer { oops")
    assert "custom_network" in info.value.errors

    job = kiln.create_model("wide", lab["dataset"], custom_network=wide, train_epochs=500, random_seed=2)
    with pytest.raises(WaitTimeout, match="still"):
        kiln.wait(job, timeout=0.5)
    kiln.abort(job)
    with pytest.raises(JobFailed, match="ended Aborted") as failed:
        kiln.wait(job, timeout=60)
    assert failed.value.job["status"] == "Aborted"
    assert kiln.wait(job, check=False)["status"] == "Aborted"
    with pytest.raises(Forbidden, match="not running"):
        kiln.abort(job)
    kiln.resume(job)
    assert kiln.status(job)["status"] in ("Initialized", "Waiting", "Running")
    kiln.delete(job)  # a running job is aborted first
    with pytest.raises(NotFound):
        kiln.status(job)


def test_sweep_previous_compare_edit(kiln: Client, lab) -> None:
    jobs = kiln.create_models("sweep", lab["dataset"], "lenet", learning_rate=[0.01, 0.02], train_epochs=1)
    assert len(jobs) == 2 and all(j.type == "model" for j in jobs)
    again = kiln.create_model("again", lab["dataset"], None, previous=lab["model"], previous_epoch=1, train_epochs=1)
    assert kiln.model(again)["pretrained model"]
    recipe = kiln.create_model("recipe", lab["dataset"], "lenet", recipe="kiln", train_epochs=1)  # a new field
    both = kiln.compare([lab["model"], recipe])
    assert [m["id"] for m in both["models"]] == [lab["model"].id, recipe.id]
    assert "recipe" in both["config_diff"] and both["models"][1]["config"]["lr_policy"] == "cosine"
    assert both["models"][0]["curves"]["loss (train)"]["value"]
    assert both["models"][0]["test_accuracy"] == kiln.model(lab["model"])["test_accuracy"]
    with pytest.raises(BadRequest, match="ids: give at least 2"):
        kiln.compare([lab["model"]])
    for job in [*jobs, again, recipe]:
        kiln.delete(job)
    kiln.edit(lab["model"], name="lenet-renamed", notes="from the client", group="lab")
    assert kiln.model(lab["model"])["name"] == "lenet-renamed"
    row = next(r for r in kiln.jobs("model", as_frame=False) if r["id"] == lab["model"].id)
    assert row["group"] == "lab"
    kiln.edit(lab["model"], name="lenet")


def test_form_fields_from_the_servers_description(kiln: Client) -> None:
    model = kiln.form_fields("model")
    assert {"train_epochs", "custom_network", "solver_type"} <= set(model)
    assert "ADAM" in model["solver_type"]["enum"]
    assert {"add_inverted", "folder_train"} <= set(kiln.form_fields("dataset"))
    assert "split" in kiln.form_fields("evaluate")
    with pytest.raises(ValueError, match="form"):
        kiln.form_fields("nothing")


def test_jobs_index_status_state_log(kiln: Client, lab) -> None:
    ids = {lab["dataset"].id, lab["model"].id}
    assert ids <= set(kiln.jobs()["id"])
    assert {r["type"] for r in kiln.jobs("dataset", as_frame=False)} == {"dataset"}
    index = kiln.index()
    assert lab["model"].id in [m["id"] for m in index["models"]]
    status = kiln.status(lab["model"])
    assert status["status"] == "Done" and status["progress"] == 1
    state = kiln.state(lab["model"])
    assert [h["status"] for h in state["history"]][-1] == "Done"
    assert any("Done" in str(line) for line in kiln.log(lab["model"]))
    with pytest.raises(NotFound, match="Job nothing-here not found"):
        kiln.state("nothing-here")
    with pytest.raises(Forbidden, match="depend on it"):
        kiln.delete(lab["dataset"])


# -- classifying and evaluating -----------------------------------------------------------------
def test_classify_path_bytes_pil_array(kiln: Client, lab) -> None:
    model, path = lab["model"], _image(lab)
    top = kiln.classify(model, path)
    assert len(top) == 3 and isinstance(top[0], Prediction) and top.epoch == 1.0
    assert str(top[0]) == f"{top[0].label} : {top[0].confidence:.2f} %"
    assert str(top).count("\n") == 2 and top.label == top[0].label
    pil = Image.open(path)
    same = [kiln.classify(model, x) for x in (str(path), path.read_bytes(), pil, np.asarray(pil))]
    assert all(s == top for s in same)
    assert kiln.classify_all(model, [path, _image(lab, "one")])[0] == top
    server_side = kiln.classify_one(model, image_path=str(path))
    assert [tuple(p) for p in server_side["predictions"]] == [tuple(p) for p in top]
    looked = kiln.classify_one(model, path, visualizations=True, snapshot_epoch=1)
    assert looked["visualizations"] and "gradcam" in looked


def test_classify_refusals_carry_the_message(kiln: Client, lab) -> None:
    with pytest.raises(BadRequest, match="must provide image_path or image_file"):
        kiln.classify_one(lab["model"])
    with pytest.raises(NotFound, match="Job no-model not found"):
        kiln.classify("no-model", _image(lab))
    with pytest.raises(BadRequest, match="snapshot_epoch") as info:
        kiln.classify(lab["model"], _image(lab), snapshot_epoch="soon")
    assert info.value.status == 400
    with pytest.raises(BadRequest, match="image_file"):
        kiln.classify(lab["model"], b"not an image")


def test_classify_many_on_server_paths(kiln: Client, lab) -> None:
    items = [(str(_image(lab, c, i)), c) for c in CLASSES for i in range(3)]
    answer = kiln.classify_many(lab["model"], items)
    assert len(answer["classifications"]) == 9 and 0 <= answer["top1_accuracy"] <= 100
    plain = kiln.classify_many(lab["model"], [f"{c}/0000.png" for c in CLASSES], image_folder=str(lab["train"]))
    assert len(plain["classifications"]) == 3 and "top1_accuracy" not in plain
    with pytest.raises(BadRequest, match="image_folder"):
        kiln.classify_many(lab["model"], ["a.png"], image_folder="/no/such/folder")


def test_evaluate_split_and_uploaded_images(kiln: Client, lab) -> None:
    model = lab["model"]
    queued = kiln.evaluate(model, split="val", wait=False)  # runs beside the next one
    assert set(queued) == {"id", "status"}
    pil = Image.open(_image(lab, "three"))
    images = [(pil, "three", "plain/a"), (np.asarray(pil), "three", "plain/b"), (_image(lab, "one"), "one")]
    uploaded = kiln.evaluate(model, images=images)
    assert uploaded["status"] == "Done" and uploaded["images"] == 3 and len(uploaded["confusion_matrix"]) == 3
    rows = kiln.evaluation_table(uploaded["id"], as_frame=False)
    assert sorted(r["image"] for r in rows) == ["one/000002.png", "three/plain/a.png", "three/plain/b.png"]
    assert all(isinstance(r["top1_percent"], float) for r in rows)
    kiln.wait(queued["id"])
    on_val = kiln.evaluation(queued["id"])
    assert on_val["images"] == 12 and 0 <= on_val["top1_accuracy"] <= 100
    frame = kiln.evaluation_table(on_val["id"])
    assert len(frame) == 12 and "top1" in frame.columns
    assert {on_val["id"], uploaded["id"]} <= {e["id"] for e in kiln.evaluations(model)}
    with pytest.raises(BadRequest, match="Give one of") as info:
        kiln.evaluate(model)
    assert "split" in info.value.errors
    with pytest.raises(BadRequest, match="at least 1") as info:  # the zip arrived; the count is refused
        kiln.evaluate(model, archive=labelled_zip({"two": [_image(lab)]}), num_test_images=0)
    assert list(info.value.errors) == ["num_test_images"]


# -- models out ---------------------------------------------------------------------------------
def test_download_and_export(kiln: Client, lab, tmp_path: Path) -> None:
    model = lab["model"]
    archive = kiln.download(model, tmp_path)
    assert archive.name == f"{model.id}_epoch_1.tar.gz"
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        info = json.loads(tar.extractfile(next(n for n in names if n.endswith("info.json"))).read())
    assert any(n.endswith("weights.safetensors") for n in names) and info["labels"] == ["one", "three", "two"]
    as_zip = kiln.download(model, tmp_path / "m.zip", format="zip", epoch=1)
    assert zipfile.is_zipfile(as_zip)
    onnx = kiln.export(model, tmp_path, format="onnx")
    script = kiln.export(model, tmp_path / "model.pt", format="torchscript")
    assert onnx.suffix == ".onnx" and onnx.stat().st_size > 1000 and script.stat().st_size > 1000
    assert not list(tmp_path.glob(".*.part"))
    with pytest.raises(NotFound, match="epoch"):
        kiln.export(model, tmp_path, epoch=7)
    with pytest.raises(ValueError, match="format"):
        kiln.download(model, tmp_path, format="rar")


def test_text_bar_without_tqdm() -> None:
    out = io.StringIO()
    bar = TextBar("mnist", out)
    bar.update(0.5, "Running")
    bar.update(0.5, "Running")  # the same line is not written twice
    bar.update(1.0, "Done")
    bar.close()
    lines = out.getvalue().split("\r")[1:]
    assert len(lines) == 2 and "50.0% Running" in lines[0] and "#" * 30 in lines[1]


def test_busy_answers_are_retried_then_raised() -> None:
    """The server's 503 (heavy queue full, with Retry-After) is retried; past `retries` it is Busy."""
    import httpx

    answers: list[int] = []

    def busy(limit: int) -> httpx.MockTransport:
        def answer(request: httpx.Request) -> httpx.Response:
            answers.append(1)
            if len(answers) <= limit:
                body = {"error": {"message": "kiln is busy: retry", "type": "Unavailable"}}
                return httpx.Response(503, json=body, headers={"Retry-After": "0.01"})
            return httpx.Response(200, json={"version": "x"})

        return httpx.MockTransport(answer)

    with Client("http://127.0.0.1:1", transport=busy(2)) as c:
        assert c.index() == {"version": "x"} and len(answers) == 3
    answers.clear()
    with Client("http://127.0.0.1:1", retries=1, transport=busy(10)) as c:
        with pytest.raises(Busy, match=r"kiln is busy: retry \(retried 1 times\)") as info:
            c.index()
        assert info.value.status == 503 and len(answers) == 2


# -- errors, without a server -------------------------------------------------------------------
@pytest.mark.parametrize(
    "status, body, cls, message, errors",
    [
        (400, b'{"errors": {"train_epochs": ["Must be > 0."]}}', BadRequest, "train_epochs: Must be > 0.", True),
        (404, b'{"error": {"message": "Job x not found.", "type": "NotFound"}}', NotFound, "Job x not found.", False),
        (400, b'{"errors": {"f": ["bad"]}, "error": {"message": "bad", "line": 3}}', BadRequest, "bad", True),
        (404, b'{"error": "Job not found."}', NotFound, "Job not found.", False),
        (403, b"Job aborted.", Forbidden, "Job aborted.", False),
        (503, b'{"error": {"message": "busy, retry", "type": "Unavailable"}}', Busy, "busy, retry", False),
        (
            429,
            b'{"error": {"message": "try again in 30 s.", "type": "TooManyRequests"}}',
            TooManyRequests,
            "30 s",
            False,
        ),
        (500, b"<html>oops</html>", ServerError, "HTML page", False),
        (418, b"", KilnError, "HTTP 418", False),
    ],
)
def test_error_shapes(status: int, body: bytes, cls: type, message: str, errors: bool) -> None:
    error = error_for(status, body, "text/html" if body.startswith(b"<") else "application/json")
    assert type(error) is cls and error.status == status
    assert message in error.message and bool(error.errors) == errors
