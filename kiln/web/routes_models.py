"""Model pages and API: new (form), create (sweeps), show, live charts, classify one / many."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from kiln import paths
from kiln.fields import FieldError
from kiln.forms import FormErrors
from kiln.jobs import actions
from kiln.jobs.gpus import FIELDS as GPU_FIELDS
from kiln.jobs.gpus import form_values
from kiln.jobs.model_form import RECIPES, create_model_jobs
from kiln.store import PRETRAINED, Job, Store
from kiln.training.config import TrainConfig
from kiln.web import form_docs
from kiln.web.deps import SettingsDep, StoreDep, UserDep, job_or_404, wants_json
from kiln.web.network_view import model_view
from kiln.web.offload import run_heavy
from kiln.web.payloads import model_dict
from kiln.web.routes_jobs import job_state

router = APIRouter(tags=["models"])


# -- creating -------------------------------------------------------------------------------------
def _datasets(store: Store) -> list[Job]:
    return [d for d in store.list_jobs("dataset") if d.status not in ("Error", "Aborted")]


def _networks() -> list[Any]:
    from kiln.networks.registry import list_networks

    return list_networks()


@router.get("/models/images/classification/new")
def new_model(
    request: Request,
    store: StoreDep,
    user: UserDep,
    clone: str | None = None,
    dataset: str | None = None,
    customize: str | None = None,
    pretrained_networks: str | None = None,
) -> Response:
    values: dict[str, Any] = {
        **TrainConfig().to_dict(),
        "standard_networks": "lenet",
        "method": "standard",
        "learning_rate": "0.01",
        "batch_size": "",
        "random_seed": "",
        "crop_size": "",
        "weight_decay": "",
        "model_name": "",
        "group_name": "",
        "dataset": dataset or "",
    }
    if clone:
        values.update(job_or_404(store, clone, "model").params.get("form", {}))
        values["model_name"] = f"Clone of {values.get('model_name', '')}"
    if customize:
        values.update(_customized(store, customize))
    if pretrained_networks:  # a pretrained model page's "New model from it"
        values.update(method="pretrained", pretrained_networks=pretrained_networks)
    return _form_page(request, store, values, {}, 200)


def _customized(store: Store, key: str) -> dict[str, Any]:
    """The Custom tab filled with a standard network's or a model's text (the model page's Customize)."""
    from kiln.jobs.network_choice import job_network
    from kiln.networks.definition import NetworkDef
    from kiln.networks.registry import list_networks

    if key in {n.name for n in list_networks()}:
        network, extra = NetworkDef(key), {}
    else:
        job = job_or_404(store, key, "model")
        epochs = [s["epoch"] for s in store.snapshots(job.id) if s["info"].get("kind", "epoch") == "epoch"]
        network = job_network(job)
        extra = {
            "dataset": job.dataset_id or "",
            "custom_network_snapshot": f"{job.id}:{epochs[-1]:g}" if epochs else "",
        }
    if network.source is None:
        return {}
    return {"method": "custom", "custom_network": network.source, "network_language": network.language, **extra}


def _form_page(
    request: Request, store: Store, values: dict[str, Any], errors: dict[str, list[str]], status: int
) -> Response:
    from kiln.jobs.network_choice import METHODS
    from kiln.training.options import DEVICES, FIELDS

    datasets = _datasets(store)
    previous = [
        (job, [s["epoch"] for s in store.snapshots(job.id) if s["info"].get("kind", "epoch") == "epoch"])
        for job in store.list_jobs("model")[:200]
    ]
    if not values.get("dataset") and len(datasets) == 1:
        values = {**values, "dataset": datasets[0].id}  # nothing to choose: preselect it
    return request.app.state.templates.TemplateResponse(
        request,
        "model_new.html",
        {
            "v": values,
            "errors": errors,
            "datasets": datasets,
            "networks": _networks(),
            "recipes": RECIPES,
            "F": FIELDS,
            "devices": list(DEVICES.items()),
            "gpus": request.app.state.scheduler.inventory.gpus,  # NVML or KILN_FAKE_GPUS, read once
            "G": GPU_FIELDS,
            "methods": METHODS,
            "previous": previous,
            "pretrained": store.list_jobs(PRETRAINED)[:200],
            "allow_python": request.app.state.settings.allow_python_networks,
        },
        status_code=status,
    )


@router.post("/models/images/classification.json", openapi_extra=form_docs.model_form())
@router.post("/models/images/classification", openapi_extra=form_docs.model_form())
async def create_model(request: Request, store: StoreDep, settings: SettingsDep, user: UserDep) -> Response:
    form = form_values(await request.form())  # select_gpus may come several times
    try:
        ids = await run_heavy(request, create_model_jobs, form, store, settings, user.name)  # a sweep: many rows
    except FormErrors as exc:
        if wants_json(request):
            return JSONResponse({"errors": exc.errors}, status_code=400)
        return _form_page(request, store, {**TrainConfig().to_dict(), **form}, exc.errors, 400)
    if wants_json(request):
        dicts = [model_dict(actions.get_job(store, i), store, settings.jobs_dir) for i in ids]
        return JSONResponse(dicts[0] if len(dicts) == 1 else {"jobs": dicts})
    return RedirectResponse(f"/models/{ids[0]}" if len(ids) == 1 else "/", status_code=302)


@router.post("/models/visualize-lr", openapi_extra=form_docs.lr_preview())
async def visualize_lr(request: Request) -> Response:
    """DIGITS' LR preview: one column of 101 values (0..100 % of training) per learning rate."""
    from kiln.training.lr_policy import preview

    form = dict(await request.form())
    try:
        _check_lr_sizes(form)
        _check_lr_lists(form)
        try:
            columns = await run_heavy(request, preview, form)
        except ArithmeticError:  # a policy's power or exponent overflows
            columns = None
        if columns is None or not all(isinstance(v, (int, float)) and math.isfinite(v) for c in columns for v in c[1:]):
            raise _overflow(form)
    except FieldError as exc:
        return JSONResponse({"errors": {exc.field: [exc.message]}}, status_code=400)
    except (ValueError, KeyError) as exc:
        return JSONResponse({"errors": {"learning_rate": [str(exc)]}}, status_code=400)
    return JSONResponse({"data": {"columns": columns}})


MAX_LR_FIELD = 1024  # characters in one learning-rate field of the preview, checked before any parsing


def _check_lr_sizes(form: dict[str, Any]) -> None:
    for name, value in form.items():
        if (name == "learning_rate" or name.startswith("lr_")) and len(str(value)) > MAX_LR_FIELD:
            raise FieldError(name, f"At most {MAX_LR_FIELD} characters, got {len(str(value))}.")


def _overflow(form: dict[str, Any]) -> FieldError:
    """The preview's curve leaves the floats: name the fields of the chosen policy."""
    policy = str(form.get("lr_policy") or TrainConfig().lr_policy)
    names = [n for n in sorted(form) if n.startswith(f"lr_{policy}_")] or ["learning_rate"]
    return FieldError(names[0], f"The {policy} policy overflows with {', '.join(names)} as given: use smaller values.")


MAX_LR_STEPS = 100  # lr_multistep_values in one preview or model


def _check_lr_lists(form: dict[str, Any]) -> None:
    """The preview's comma lists are bounded (counted before anything is parsed): ValueError."""
    from kiln.jobs.model_form import MAX_SWEEP_JOBS

    for name, most in (("learning_rate", MAX_SWEEP_JOBS), ("lr_multistep_values", MAX_LR_STEPS)):
        count = str(form.get(name) or "").count(",") + 1
        if count > most:
            raise ValueError(f"{name}: at most {most} comma-separated values, got {count}.")


# -- showing --------------------------------------------------------------------------------------
@router.get("/models/{job_id}.json")
def model_json(job_id: str, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    return model_dict(job_or_404(store, job_id, "model"), store, settings.jobs_dir, verbose=True)


def series(store: Store, job_id: str) -> dict[str, Any]:
    """The combined chart's series, `<name> (train|val)`, accuracies in % on the right axis."""
    out: dict[str, dict[str, list[float]]] = {}
    for m in store.metrics(job_id):
        key = "lr" if m["name"] == "lr" else f"{m['name']} ({m['phase']})"
        s = out.setdefault(key, {"x": [], "y": []})
        s["x"].append(m["epoch"])
        s["y"].append(m["value"])
    return out


def best_epoch(store: Store, job_id: str) -> dict[str, Any] | None:
    acc = series(store, job_id).get("accuracy (val)")
    if not acc or not acc["y"]:
        return None
    i = max(range(len(acc["y"])), key=lambda k: (acc["y"][k], -k))
    return {"epoch": acc["x"][i], "accuracy": acc["y"][i]}


@router.get("/models/{job_id}/metrics.json")
def metrics_json(job_id: str, store: StoreDep) -> dict[str, Any]:
    job = job_or_404(store, job_id, "model")
    return {
        "series": series(store, job_id),
        "best": best_epoch(store, job_id),
        "snapshots": [s["epoch"] for s in store.snapshots(job_id) if s["info"].get("kind", "epoch") == "epoch"],
        "train_epochs": job.params["config"].get("train_epochs"),
    }


@router.get("/models/{job_id}/hardware.json")
def hardware(job_id: str, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    """The hardware panel as the job's worker last sampled it (kiln.hardware): its GPUs from NVML
    (utilisation, memory, temperature) and its processes' CPU and memory. The server only reads
    that file: it never touches a GPU."""
    from kiln.hardware import read_panel

    job = job_or_404(store, job_id, "model")
    out: dict[str, Any] = {"pid": job.pid, "running": job.status == "Running", "gpus": [], "processes": []}
    panel = read_panel(settings.jobs_dir / job.id) if out["running"] else None
    if panel:
        out.update(panel)
        out["memory_percent"] = round(100 * panel["rss"] / max(1, panel["memory_total"]), 2)
    return out


@router.get("/models/{job_id}")
def show_model(request: Request, job_id: str, store: StoreDep, settings: SettingsDep) -> Response:
    job = job_or_404(store, job_id, "model")
    if wants_json(request):
        return JSONResponse(model_dict(job, store, settings.jobs_dir, verbose=True))
    dataset = store.get_job(job.dataset_id or "")
    return request.app.state.templates.TemplateResponse(
        request,
        "model_show.html",
        {
            "job": job,
            "config": job.params["config"],
            "state": job_state(job, store),
            "dataset": dataset,
            "snapshots": [s for s in store.snapshots(job_id) if s["info"].get("kind", "epoch") == "epoch"],
            "best": best_epoch(store, job_id),
            "logs": store.logs(job_id, 40),
            "directory": settings.jobs_dir / job_id,
            "network": model_view(job, store, settings),
            "has_best": (settings.jobs_dir / job_id / "best.json").is_file(),
        },
    )


# -- classifying ----------------------------------------------------------------------------------
_predictors: OrderedDict[tuple[str, float | str | None, float, str], Any] = OrderedDict()
_lock = threading.Lock()


def predictor_for(job_dir: Path, epoch: float | str | None, device: str = "cpu") -> Any:
    """Predictors are cached (a few) so repeated classifications don't reload weights.

    epoch: None for the latest, a number, or "best" (the kept best snapshot; FileNotFoundError
    saying so when the model keeps none). device: "cpu", or a free GPU (inference_device)."""
    from kiln.inference.predictor import Predictor
    from kiln.training.checkpoint import format_epoch, list_snapshots, snapshot_paths

    epochs = list_snapshots(job_dir)
    stamps = [snapshot_paths(job_dir, e)[0].stat().st_mtime for e in epochs]
    if epoch == "best":
        best = snapshot_paths(job_dir, "best")[1]
        if not best.exists():
            raise FileNotFoundError(
                "best: this model keeps no best snapshot (it trained without keep_best, 'Keep the best "
                f"snapshot'); snapshots exist at {', '.join(format_epoch(e) for e in epochs)}"
            )
        stamps.append(best.stat().st_mtime)  # rewritten whenever validation improves
    key = (str(job_dir), epoch, max(stamps, default=0.0), device)
    with _lock:
        if key in _predictors:
            _predictors.move_to_end(key)
            return _predictors[key]
    pred = Predictor.from_job_dir(job_dir, epoch=epoch, device=device)
    with _lock:
        _predictors[key] = pred
        while len(_predictors) > 4:
            _predictors.popitem(last=False)
    return pred


def inference_device(request: Request, store: Store) -> str:
    """A GPU no job holds (the scheduler's inventory, NVML), else the CPU; KILN_INFERENCE_GPU=0: the CPU."""
    from kiln.jobs.gpus import inference_device as free_device

    if not request.app.state.settings.inference_gpu:
        return "cpu"
    return free_device(store, request.app.state.scheduler.inventory)


def _epoch(value: Any) -> float | str | None:
    """snapshot_epoch: blank, -1 or 0 mean the latest snapshot (DIGITS); a number; or "best"."""
    text = str(value if value is not None else "").strip()
    if text.lower() == "best":
        return "best"
    if not text:
        return None
    try:
        epoch = float(text)
    except ValueError:
        epoch = math.nan
    if not math.isfinite(epoch):
        raise HTTPException(
            400, f"snapshot_epoch: {text[:40]!r} is not an epoch: give one such as 2, best, or blank for the latest."
        )
    return None if epoch in (-1.0, 0.0) else epoch


def _model_dir(store: Store, settings: Any, job_id: str | None) -> Path:
    if not job_id:
        raise HTTPException(400, "job_id: which model? This field is required.")
    job_or_404(store, job_id, "model")
    job_dir = settings.jobs_dir / job_id
    from kiln.training.checkpoint import list_snapshots

    if not list_snapshots(job_dir):
        raise HTTPException(400, "This model has no snapshot yet: wait for its first epoch.")
    return job_dir


def _readable(path: str, settings: Any, field: str, kind: str = "file") -> str:
    """A user-given server path kiln may read (kiln.paths: inside the data roots after symlinks, a
    regular file or a folder), resolved; else 400 naming the field, the same for every path outside."""
    try:
        return str(paths.check_readable(path, settings.allowed_roots, kind))
    except paths.PathRefused as exc:
        raise HTTPException(400, f"{field}: {path} {exc}") from None


async def _read_upload(upload: UploadFile, max_bytes: int, field: str) -> bytes:
    """An uploaded file's bytes, never more than max_bytes held (413 naming the setting beyond)."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(
            413, f"{field}: over {max_bytes / 2**20:g} MB, the most kiln reads per file ({paths.SIZE_SETTING})."
        )
    return data


@router.post("/models/images/classification/classify_one.json", openapi_extra=form_docs.classify_one())
@router.post("/models/images/classification/classify_one", openapi_extra=form_docs.classify_one())
@router.get("/models/images/classification/classify_one", include_in_schema=False)
async def classify_one(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    form = await request.form()
    job_id = form.get("job_id") or request.query_params.get("job_id")
    job_dir = _model_dir(store, settings, str(job_id) if job_id else None)
    image = form.get("image_file")
    path = form.get("image_path")
    if isinstance(image, UploadFile) and image.filename:
        source: Any = await _read_upload(image, settings.max_file_bytes, "image_file")
        shown, field = image.filename, "image_file"
    elif path:
        source, shown, field = _readable(str(path), settings, "image_path"), str(path), "image_path"
    else:
        raise HTTPException(400, "must provide image_path or image_file")
    show = _flag(form.get("show_visualizations") or request.query_params.get("show_visualizations"))
    epoch = _epoch(form.get("snapshot_epoch"))
    device = inference_device(request, store)

    def answer() -> Response:  # on a heavy thread: loading, classifying, drawing, the answer's JSON or page
        try:
            pred = predictor_for(job_dir, epoch, device)
        except (FileNotFoundError, ValueError) as exc:
            raise HTTPException(400, f"snapshot_epoch: {exc}") from None
        result, vis = _classify_and_look(pred, source, show, settings.max_file_bytes)
        if result.error:
            raise HTTPException(400, f"{field}: {result.error}")
        predictions = [[label, pct] for label, pct in result]
        extra = vis.to_dict() if vis else {}
        if wants_json(request):
            return JSONResponse({"predictions": predictions, "snapshot_epoch": pred.epoch, **extra})
        return request.app.state.templates.TemplateResponse(
            request,
            "classify_one.html",
            {"predictions": predictions, "image": shown, "job_id": job_id, "epoch": pred.epoch, "vis": extra},
        )

    return await run_heavy(request, answer)


def _flag(value: Any) -> bool:
    """DIGITS: any non-empty show_visualizations turns them on; kiln also reads 0/false/off/no as off."""
    return str(value or "").strip().lower() not in ("", "0", "false", "off", "no")


def _classify_and_look(pred: Any, source: Any, show: bool, max_bytes: int) -> tuple[Any, Any]:
    """On a heavy thread: the top-5 and, when asked and the image reads, the look inside the network."""
    result = pred.classify([source], max_bytes=max_bytes)[0]
    if not show or result.error:
        return result, None
    from kiln.inference.visualize import visualize

    batch, _, errors = pred.load([source], max_bytes)
    if errors:  # the file changed since classify read it
        result.error = errors[0]
        return result, None
    return result, visualize(pred, batch)  # Grad-CAM for the top prediction


@router.post("/models/images/classification/classify_many.json", openapi_extra=form_docs.classify_many())
@router.post("/models/images/classification/classify_many", openapi_extra=form_docs.classify_many())
async def classify_many(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    from kiln.inference.many import ListTooLong, classify_list

    form = await request.form()
    job_dir = _model_dir(store, settings, str(form.get("job_id") or request.query_params.get("job_id") or ""))
    upload = form.get("image_list")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise HTTPException(400, "image_list: upload a text file with one 'path [label]' per line.")
    text = (await _read_upload(upload, settings.max_file_bytes, "image_list")).decode("utf-8", errors="replace")
    folder = str(form.get("image_folder") or "")
    if folder:
        folder = _readable(folder, settings, "image_folder", kind="dir")
    try:
        limit = int(str(form["num_test_images"])) if form.get("num_test_images") else None
        if limit is not None and limit < 0:
            raise ValueError(f"must not be negative, got {limit}")
        device = inference_device(request, store)
        pred = await run_heavy(request, predictor_for, job_dir, _epoch(form.get("snapshot_epoch")), device)
    except (FileNotFoundError, ValueError) as exc:
        raise HTTPException(400, f"num_test_images / snapshot_epoch: {exc}") from None

    def answer() -> Response:  # on a heavy thread: classifying, and rendering thousands of rows
        report = classify_list(
            pred,
            text,
            folder or None,
            limit,
            settings.max_classify_images,
            roots=settings.allowed_roots,  # every line inside the data roots
            max_bytes=settings.max_file_bytes,
        )
        if wants_json(request):
            return JSONResponse(report.to_json())
        return request.app.state.templates.TemplateResponse(
            request,
            "classify_many.html",
            {
                "report": report,
                "labels": pred.labels,
                "job_id": form.get("job_id"),
            },
        )

    try:
        return await run_heavy(request, answer)
    except ListTooLong as exc:
        raise HTTPException(400, str(exc)) from None
