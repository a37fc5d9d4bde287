"""Nothing heavy on the event loop, and bounded work.

Each heavy request (classify one / many, the LR preview, a model sweep, a dataset's checks) is held
inside its work by a patched function until the test releases it; meanwhile pages, /index.json and
/events must answer. No clock decides: the page's answer arrives while the heavy request is
provably still inside its work. Then: a full pool answers 503 (retry), and caps answer 400.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiln.web.routes_jobs import MAX_JOB_IDS
from tests.conftest import Kiln, ThreadServer, copy_data_dir, write_class_folder

CLASSIFY = "/models/images/classification"
HOLD_S = 120  # how long a held call waits for its release before giving up (a failing test)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small dataset and a LeNet trained one epoch on it, in this process."""
    root = tmp_path_factory.mktemp("offload")
    folder = write_class_folder(root / "imgs", {"a": 6, "b": 6}, size=(28, 28))
    kiln = Kiln(root / "data")
    try:
        dataset_id = kiln.built_dataset(folder, "ab", pct_val="25")
        res = kiln.client.post(
            f"{CLASSIFY}.json",
            data={
                "dataset": dataset_id,
                "model_name": "ab",
                "standard_networks": "lenet",
                "train_epochs": "1",
                "random_seed": "1",
                "device": "cpu",
            },
        )
        model_id = res.json()["id"]
        assert kiln.run(model_id) == "Done"
    finally:
        kiln.close()
    return {"data": root / "data", "folder": folder, "dataset_id": dataset_id, "model_id": model_id}


class Hold:
    """Patches a function so that its calls wait, inside the heavy thread, until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[str] = []

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def held(*args: Any, **kwargs: Any) -> Any:
            self.threads.append(threading.current_thread().name)
            self.entered.set()
            assert self.release.wait(HOLD_S), "never released"
            return fn(*args, **kwargs)

        return held


@pytest.fixture
def hold() -> Iterator[Hold]:
    h = Hold()
    yield h
    h.release.set()


def _server(template: dict[str, Any], tmp_path: Path, **settings: Any) -> ThreadServer:
    return ThreadServer(copy_data_dir(template["data"], tmp_path / "data"), scheduler=False, **settings)


@pytest.fixture
def server(template: dict[str, Any], tmp_path: Path) -> Iterator[ThreadServer]:
    srv = _server(template, tmp_path)
    yield srv
    srv.stop()


class Background:
    """One request on a thread of its own; `done` tells whether it has answered."""

    def __init__(self, send: Callable[[], httpx.Response]) -> None:
        self.response: httpx.Response | None = None
        self.done = threading.Event()

        def run() -> None:
            try:
                self.response = send()
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self) -> httpx.Response:
        self.thread.join(HOLD_S)
        assert self.response is not None, "the request never answered"
        return self.response


def _png(template: dict[str, Any]) -> bytes:
    return (template["folder"] / "a" / "0000.png").read_bytes()


def _image_list(template: dict[str, Any], count: int) -> bytes:
    images = sorted(template["folder"].glob("*/*.png"))
    return "".join(f"{images[i % len(images)]} {i % 2}\n" for i in range(count)).encode()


# (what to hold, the request) for each kind of heavy request
def _classify_one(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "url": f"{CLASSIFY}/classify_one.json",
        "data": {"job_id": t["model_id"]},
        "files": {"image_file": ("a.png", _png(t), "image/png")},
    }


def _classify_many(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "url": f"{CLASSIFY}/classify_many.json",
        "data": {"job_id": t["model_id"]},
        "files": {"image_list": ("list.txt", _image_list(t, 40), "text/plain")},
    }


def _lr_preview(t: dict[str, Any]) -> dict[str, Any]:
    return {"url": "/models/visualize-lr", "data": {"lr_policy": "step", "learning_rate": "0.1,0.01"}}


def _model_sweep(t: dict[str, Any]) -> dict[str, Any]:
    form = {
        "dataset": t["dataset_id"],
        "model_name": "sweep",
        "standard_networks": "lenet",
        "learning_rate": "0.1,0.01",
        "batch_size": "16,32",
    }
    return {"url": f"{CLASSIFY}.json", "data": form}


def _dataset(t: dict[str, Any]) -> dict[str, Any]:
    form = {"dataset_name": "again", "folder_train": str(t["folder"]), "resize_width": "28", "resize_height": "28"}
    return {"url": "/datasets/images/classification.json", "data": form}


HEAVY = {
    "classify one": ("kiln.inference.predictor.Predictor.classify", _classify_one),
    "classify many": ("kiln.inference.predictor.Predictor.classify", _classify_many),
    "LR preview": ("kiln.training.lr_policy.preview", _lr_preview),
    "model sweep": ("kiln.web.routes_models.create_model_jobs", _model_sweep),
    "dataset checks": ("kiln.web.routes_datasets.create_dataset_job", _dataset),
}


def _patch(monkeypatch: pytest.MonkeyPatch, hold: Hold, target: str) -> None:
    import importlib

    module_name, _, attr = target.rpartition(".")
    try:
        owner: Any = importlib.import_module(module_name)
    except ModuleNotFoundError:  # Class.method
        module_name, _, cls = module_name.rpartition(".")
        owner = getattr(importlib.import_module(module_name), cls)
    monkeypatch.setattr(owner, attr, hold.wrap(getattr(owner, attr)))


def _first_event(client: httpx.Client) -> str:
    with client.stream("GET", "/events", timeout=httpx.Timeout(HOLD_S)) as res:
        for line in res.iter_lines():
            if line.startswith("event: "):
                return line[7:]
    return ""


@pytest.mark.parametrize("kind", list(HEAVY))
def test_pages_and_events_answer_while_heavy_work_runs(
    kind: str, template: dict[str, Any], server: ThreadServer, hold: Hold, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, request = HEAVY[kind]
    _patch(monkeypatch, hold, target)
    req = request(template)
    heavy = Background(lambda: server.client.post(req["url"], data=req["data"], files=req.get("files")))
    assert hold.entered.wait(HOLD_S), f"{kind} never reached its work: {heavy.response and heavy.response.text}"
    # the heavy request is inside its work, on one of kiln's heavy threads, not the event loop's
    assert hold.threads[0].startswith("kiln-heavy")
    assert server.client.get("/index.json").status_code == 200
    assert server.client.get("/").status_code == 200
    assert server.client.get(f"/models/{template['model_id']}").status_code == 200
    assert _first_event(server.client) == "hello"
    assert not heavy.done.is_set(), "the pages answered only after the heavy request"
    hold.release.set()
    res = heavy.result()
    assert res.status_code == 200, res.text


def test_a_full_pool_answers_busy_then_serves_again(
    template: dict[str, Any], tmp_path: Path, hold: Hold, monkeypatch: pytest.MonkeyPatch
) -> None:
    _patch(monkeypatch, hold, "kiln.inference.predictor.Predictor.classify")
    server = _server(template, tmp_path, heavy_threads=1, heavy_queue=0)
    try:
        req = _classify_one(template)
        post = lambda: server.client.post(req["url"], data=req["data"], files=req["files"])  # noqa: E731
        first = Background(post)
        assert hold.entered.wait(HOLD_S)
        busy = post()
        assert busy.status_code == 503 and busy.headers.get("retry-after")
        assert "KILN_HEAVY_THREADS" in busy.json()["error"]["message"]
        assert server.client.get("/index.json").status_code == 200
        hold.release.set()
        assert first.result().status_code == 200
        assert post().status_code == 200  # its place was given back
    finally:
        server.stop()


# -- bounded work ---------------------------------------------------------------------------------
@pytest.fixture
def kiln(template: dict[str, Any], tmp_path: Path) -> Iterator[Kiln]:
    app = Kiln(copy_data_dir(template["data"], tmp_path / "data"), max_classify_images=30)
    yield app
    app.close()


def test_classify_many_list_is_capped(template: dict[str, Any], kiln: Kiln) -> None:
    def send(count: int, **extra: str) -> httpx.Response:
        files = {"image_list": ("list.txt", _image_list(template, count), "text/plain")}
        return kiln.client.post(
            f"{CLASSIFY}/classify_many.json", data={"job_id": template["model_id"], **extra}, files=files
        )

    res = send(31)
    assert res.status_code == 400 and "KILN_MAX_CLASSIFY_IMAGES" in res.text
    assert len(send(30).json()["classifications"]) == 12  # 30 lines naming the 12 images
    res = send(10_000, num_test_images="25")  # the first 25 only: within the cap
    assert res.status_code == 200
    assert send(5, num_test_images="-1").status_code == 400


def test_bulk_job_ids_are_capped(kiln: Kiln) -> None:
    ids = [f"20240101-000000-{i:04x}" for i in range(MAX_JOB_IDS + 1)]
    for method, url in (("POST", "/abort_jobs"), ("DELETE", "/jobs"), ("POST", "/group")):
        res = kiln.client.request(method, url, data={"job_ids[]": ids, "group_name": "g"})
        assert res.status_code == 400, (url, res.status_code)
        assert f"at most {MAX_JOB_IDS}" in res.text, url


def test_lr_preview_lists_are_capped(kiln: Kiln) -> None:
    res = kiln.client.post("/models/visualize-lr", data={"learning_rate": ",".join(["0.1"] * 65)})
    assert res.status_code == 400 and "at most 64" in res.text
    res = kiln.client.post("/models/visualize-lr", data={"learning_rate": "0.1," * 200_000 + "0.1"})
    assert res.status_code == 400
    res = kiln.client.post(
        "/models/visualize-lr",
        data={"lr_policy": "multistep", "learning_rate": "0.1", "lr_multistep_values": ",".join(["50"] * 101)},
    )
    assert res.status_code == 400 and "lr_multistep_values" in res.text
    res = kiln.client.post("/models/visualize-lr", data={"lr_policy": "step", "learning_rate": "0.1,0.01"})
    assert res.status_code == 200 and len(res.json()["data"]["columns"]) == 2
