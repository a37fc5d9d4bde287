"""GPUs known to the scheduler (a simulated inventory, KILN_FAKE_GPUS): DIGITS' fields on the form and
the API, a job starts only when its GPUs are free, and two jobs never hold one GPU unless both share."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from kiln.config import Settings
from kiln.jobs import gpus
from kiln.jobs.gpus import Inventory, Request, choose, request_from_form
from kiln.jobs.worker import run_job
from tests.conftest import Kiln, write_class_folder

FOUR = Inventory.detect(Settings(fake_gpus=4))


def test_choose_gives_free_gpus_and_never_one_held_alone() -> None:
    held = {0: [False], 2: [True]}  # GPU 0 held alone, GPU 2 by a job that shares
    assert choose(Request(count=2), FOUR, held) == [1, 3]
    assert choose(Request(count=3), FOUR, held) is None  # only two are free: wait
    assert choose(Request(count=3, share=True), FOUR, held) == [1, 2, 3]  # free first, then shared
    assert choose(Request(gpus=(0,)), FOUR, held) is None
    assert choose(Request(gpus=(0,), share=True), FOUR, held) is None  # its holder does not share
    assert choose(Request(gpus=(2,)), FOUR, held) is None  # this job does not share
    assert choose(Request(gpus=(2,), share=True), FOUR, held) == [2]
    assert choose(Request(gpus=(1, 3)), FOUR, held) == [1, 3]
    assert choose(Request(cpu_only=True), FOUR, held) == []
    assert choose(Request(count=1, optional=True), FOUR, {g: [False] for g in range(4)}) == []  # inference: CPU
    assert choose(Request(count=2), Inventory(), {}) == []  # no GPU at all: the CPU (DIGITS)


@pytest.mark.parametrize(
    "form,device,wanted",
    [
        ({}, "auto", Request(count=1)),
        ({"select_gpu_count": "3"}, "auto", Request(count=3)),
        ({"select_gpus": "2,1", "select_gpus_list": "0", "select_gpu": "3"}, "auto", Request(gpus=(1, 2))),
        ({"select_gpus_list": "0, 3", "select_gpu": "1"}, "auto", Request(gpus=(0, 3))),
        ({"select_gpu": "2"}, "auto", Request(gpus=(2,))),
        ({"select_gpu": "next", "select_gpu_count": "2"}, "auto", Request(count=2)),
        ({}, "cuda:1,2", Request(gpus=(1, 2))),
        ({"select_gpus_list": "1", "cpu_processes": "2", "share_gpu": "1"}, "cpu", None),
    ],
)
def test_digits_precedence_of_the_gpu_fields(form: dict, device: str, wanted: Request | None) -> None:
    errors: dict[str, list[str]] = {}
    got = request_from_form(form, device, FOUR, errors)
    assert errors == {}
    if wanted is None:  # device cpu: no GPU, the CPU processes asked for
        assert got.cpu_only and got.processes == 2 and got.share and got.wanted(FOUR) == 0
    else:
        assert got == wanted


@pytest.mark.parametrize(
    "form,device,field",
    [
        ({"select_gpus_list": "0,7"}, "auto", "select_gpus_list"),
        ({"select_gpus": "4"}, "auto", "select_gpus"),
        ({"select_gpu": "9"}, "auto", "select_gpu"),
        ({"select_gpu": "first"}, "auto", "select_gpu"),
        ({"select_gpus_list": "0;1"}, "auto", "select_gpus_list"),
        ({"select_gpu_count": "5"}, "auto", "select_gpu_count"),
        ({"select_gpu_count": "0"}, "auto", "select_gpu_count"),
        ({"cpu_processes": "0"}, "auto", "cpu_processes"),
        ({"cpu_processes": "1.5"}, "auto", "cpu_processes"),
        ({}, "cuda:6", "device"),
    ],
)
def test_requests_this_machine_cannot_meet_name_their_field(form: dict, device: str, field: str) -> None:
    errors: dict[str, list[str]] = {}
    request_from_form(form, device, FOUR, errors)
    assert list(errors) == [field], errors


def test_device_cuda_without_a_gpu_is_refused() -> None:
    errors: dict[str, list[str]] = {}
    request_from_form({}, "cuda", Inventory(), errors)
    assert "no GPU" in errors["device"][0]


# -- over the API, with the scheduler and real workers -------------------------------------------------
@pytest.fixture
def fake_two(tmp_path: Path):
    app = Kiln(tmp_path / "data", scheduler=True, fake_gpus=2, max_running_jobs=3)
    folder = write_class_folder(tmp_path / "imgs", {"a": 6, "b": 6}, size=(28, 28))
    app.dataset_id = app.built_dataset(folder, "d")  # type: ignore[attr-defined]
    yield app
    app.close()


def _model(app: Kiln, name: str, **fields: str):
    form = {
        "dataset": app.dataset_id,  # type: ignore[attr-defined]
        "model_name": name,
        "standard_networks": "lenet",
        "train_epochs": "1",
        "batch_size": "8",
        "random_seed": "1",
        **fields,
    }
    return app.client.post("/models/images/classification.json", data=form)


def _running_interval(app: Kiln, job_id: str) -> tuple[float, float]:
    history = app.store.history(job_id)
    start = next(h["ts"] for h in history if h["status"] == "Running")
    end = next(h["ts"] for h in history if h["status"] == "Done")
    return start, end


def test_two_jobs_asking_for_one_gpu_never_overlap(fake_two: Kiln) -> None:
    app = fake_two
    index = app.client.get("/index.json").json()
    assert index["gpus_available"] == {"total_gpu_count": 2, "remaining_gpu_count": 2}
    for bad, field in (
        ({"select_gpus_list": "2"}, "select_gpus_list"),
        ({"select_gpu_count": "3"}, "select_gpu_count"),
    ):
        res = _model(app, "too many", **bad)
        assert res.status_code == 400 and field in res.json()["errors"], res.text
    first = _model(app, "first", select_gpus="0").json()["id"]
    second = _model(app, "second", select_gpus_list="0").json()["id"]
    other = _model(app, "other", select_gpu_count="1").json()["id"]  # GPU 1 is free: runs beside them
    seen_busy = None
    deadline = time.monotonic() + 180
    while not all(app.status(j)["status"] in ("Done", "Error", "Aborted") for j in (first, second, other)):
        assert time.monotonic() < deadline, [app.status(j) for j in (first, second, other)]
        if app.status(first)["status"] == "Running" and seen_busy is None:
            seen_busy = app.client.get("/index.json").json()["gpus_available"]["remaining_gpu_count"]
        time.sleep(0.1)
    assert [app.status(j)["status"] for j in (first, second, other)] == ["Done"] * 3
    info = {j: app.client.get(f"/models/{j}.json").json() for j in (first, second, other)}
    assert info[first]["gpus"] == [0] and info[second]["gpus"] == [0] and info[other]["gpus"] == [1]
    a, b = _running_interval(app, first), _running_interval(app, second)
    assert a[1] <= b[0] or b[1] <= a[0], (a, b)  # never both Running
    notes = [h["note"] for h in app.store.history(second)]
    assert any("waiting for GPU [0]" in n for n in notes), notes
    c = _running_interval(app, other)
    assert c[0] < b[0], (b, c)  # queued after `second`, it started first: it did not wait for GPU 0
    assert seen_busy is not None and seen_busy < 2
    assert app.client.get("/index.json").json()["gpus_available"]["remaining_gpu_count"] == 2


def test_a_job_run_from_the_cli_waits_for_its_gpu(tmp_path: Path) -> None:
    """No scheduler (kiln train in a terminal): the job takes its GPU itself, once the job holding it ends."""
    app = Kiln(tmp_path / "data", fake_gpus=1)
    try:
        folder = write_class_folder(tmp_path / "imgs", {"a": 6, "b": 6}, size=(28, 28))
        app.dataset_id = app.built_dataset(folder, "d")  # type: ignore[attr-defined]
        holder = _model(app, "holder", train_epochs="1").json()["id"]
        waiter = _model(app, "waiter", train_epochs="1", select_gpu="0").json()["id"]
        app.store.update_fields(holder, params={**app.store.get_job(holder).params, "gpus": [0]})
        assert app.store.set_status(holder, "Running", pid=1)
        seen: list[str] = []

        def release_once_it_waits() -> None:  # run_job itself runs on the main thread (its SIGTERM handler)
            deadline = time.monotonic() + 60
            while not any("Waiting for GPU" in line for line in app.store.logs(waiter)):
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            seen.append(app.store.get_job(waiter).status)
            app.store.set_status(holder, "Done")

        thread = threading.Thread(target=release_once_it_waits)
        thread.start()
        assert run_job(app.settings, waiter) == "Done"
        thread.join()
        assert seen == ["Initialized"]  # it waited, unclaimed, until GPU 0 was free
        assert app.store.get_job(waiter).params["gpus"] == [0]
        # an evaluation takes a free GPU, or goes on at once on the CPU; a simulated one means the CPU
        res = app.client.post("/models/images/classification/evaluate.json", data={"job_id": waiter, "split": "val"})
        assert res.status_code == 200, res.text
        evaluation = res.json()["id"]
        assert run_job(app.settings, evaluation) == "Done"
        params = app.store.get_job(evaluation).params
        assert params["gpus"] == [0] and params["run_device"] == "cpu"
        res = app.client.post(
            "/models/images/classification/classify_one.json",
            data={"job_id": waiter, "image_path": str(next(folder.rglob("*.png")))},
        )
        assert res.status_code == 200 and len(res.json()["predictions"]) == 2, res.text
    finally:
        app.close()


def test_classification_takes_a_free_gpu_or_the_cpu(tmp_path: Path) -> None:
    from kiln.hardware import Gpu
    from kiln.store import Store

    store = Store(tmp_path / "kiln.db")
    real = Inventory((Gpu(0, "A", 1 << 34, nvml=0), Gpu(1, "B", 1 << 34, nvml=1)))
    assert gpus.inference_device(store, real) == "cuda:0"
    holder = store.create_job("model", "m", {"gpus": [0], "resources": {"share": True}}, None)
    store.set_status(holder, "Running", pid=1)
    assert gpus.inference_device(store, real) == "cuda:1"  # a GPU a job holds is left alone, shared or not
    other = store.create_job("model", "n", {"gpus": [1]}, None)
    store.set_status(other, "Running", pid=1)
    assert gpus.inference_device(store, real) == "cpu"  # none free: the CPU, at once
    assert gpus.inference_device(store, Inventory()) == "cpu"
    assert gpus.inference_device(store, FOUR) == "cpu"  # simulated GPUs
    store.close()


def test_form_offers_every_gpu_of_the_inventory(tmp_path: Path) -> None:
    app = Kiln(tmp_path / "data", fake_gpus=3)
    try:
        page = app.client.get("/models/images/classification/new").text
        for g in range(3):
            assert f'value="{g}"' in page and f"#{g} - {gpus.SIMULATED_NAME}" in page
        assert 'name="select_gpu_count"' in page and 'name="cpu_processes"' in page and 'name="share_gpu"' in page
        assert "3/3 GPUs available" in app.client.get("/").text
    finally:
        app.close()
