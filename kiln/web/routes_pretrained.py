"""Pretrained models over HTTP (DIGITS reference 5.2, 5.3): upload, make from a model, show.

    POST /pretrained_models/upload_archive     archive (+ job_name)        {"status": "success", "id"}
    POST /pretrained_models/new                DIGITS' upload form         302 /?tab=3 or {"id"}
    GET|POST /models/<id>/to_pretrained        ?epoch= / snapshot_epoch    302 /?tab=3 or {"id"}
    GET /pretrained_models/<id>[.json]         the page / its info
    GET /pretrained_models/new                 the upload forms

Downloads sit beside the models' (routes_export); delete, rename and status are the generic job
routes. An upload is streamed to a temporary file, then unpacked and checked on the heavy threads.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from kiln import pretrained
from kiln.jobs import pretrained_job
from kiln.store import PRETRAINED
from kiln.web.deps import SettingsDep, StoreDep, UserDep, job_or_404, wants_json
from kiln.web.offload import run_heavy
from kiln.web.routes_export import epoch_field

router = APIRouter(tags=["pretrained models"])
HOME_TAB = "/?tab=3"
FRAMEWORKS = ("pytorch",)  # DIGITS offered caffe and torch: their weights load by unpickling


def _refused(request: Request, exc: pretrained.PretrainedError, api: bool = False) -> Response:
    """kiln's field errors (DIGITS' upload_archive said {"status": <message>} with a 500: a client
    that checks ``status == "success"`` still sees the failure)."""
    if wants_json(request) or api:
        return JSONResponse({"errors": {exc.field: [exc.message]}}, status_code=400)
    raise HTTPException(400, str(exc))


def _done(request: Request, job_id: str, digits_status: bool = False) -> Response:
    if digits_status or wants_json(request):
        return JSONResponse({"status": "success", "id": job_id} if digits_status else {"id": job_id})
    return RedirectResponse(HOME_TAB, status_code=302)


async def _save_upload(form: Any, field: str, folder: Path) -> Path | None:
    """The upload in ``field`` copied to ``folder`` (its name reduced to a safe base name)."""
    upload = form.get(field)
    if not isinstance(upload, UploadFile) or not upload.filename:
        return None
    name = Path(upload.filename.replace("\\", "/")).name.lstrip(".") or field
    dest = folder / f"{field}-{name}"

    def copy() -> None:
        with open(dest, "xb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)

    await run_in_threadpool(copy)
    return dest


@router.post("/pretrained_models/upload_archive")
async def upload_archive(request: Request, store: StoreDep, settings: SettingsDep, user: UserDep) -> Response:
    """An archive kiln (or DIGITS' layout with safetensors weights) made: ``archive``, optional ``job_name``."""
    form = await request.form()
    with tempfile.TemporaryDirectory(prefix="kiln-upload-", dir=settings.jobs_dir) as tmp:
        archive = await _save_upload(form, "archive", Path(tmp))
        try:
            if archive is None:
                raise pretrained.PretrainedError("archive", "upload an archive (.tar.gz, .tar, .tar.bz2 or .zip).")
            name = str(form.get("job_name") or "").strip()
            job_id = await run_heavy(request, pretrained_job.from_archive, store, settings, archive, name, user.name)
        except pretrained.PretrainedError as exc:  # the weights or the text inside: the archive field's
            field = exc.field if exc.field in ("archive", "job_name") else "archive"
            return _refused(request, pretrained.PretrainedError(field, exc.message), api=True)
    return _done(request, job_id, digits_status=True)


def _whole(form: Any, field: str, default: int, low: int, high: int) -> int:
    text = str(form.get(field) or default).strip()
    try:
        value = int(text)
    except ValueError:
        raise pretrained.PretrainedError(field, f"{text[:20]!r} is not a whole number.") from None
    if not low <= value <= high:
        raise pretrained.PretrainedError(field, f"give a number from {low} to {high}.")
    return value


def _upload_form(form: Any) -> dict[str, Any]:
    name = str(form.get("job_name") or "").strip()
    if not name:
        raise pretrained.PretrainedError("job_name", "This field is required: name the pretrained model.")
    framework = str(form.get("framework") or "pytorch").strip().lower()
    if framework not in FRAMEWORKS:
        raise pretrained.PretrainedError(
            "framework",
            f"{framework!r}: kiln takes PyTorch weights as .safetensors (Caffe and Torch 7 weights unpickle).",
        )
    image_type = str(form.get("image_type") or "3").strip()
    if image_type not in ("1", "3"):
        raise pretrained.PretrainedError("image_type", "3 (colour) or 1 (grayscale).")
    return {
        "name": name,
        "channels": int(image_type),
        "width": _whole(form, "width", 256, 1, 4096),
        "height": _whole(form, "height", 256, 1, 4096),
        "resize_mode": str(form.get("resize_mode") or "squash").strip(),
    }


@router.get("/pretrained_models/new")
def upload_page(request: Request, user: UserDep) -> Response:
    """The upload forms (DIGITS' Load Model > Upload Pretrained Model)."""
    return request.app.state.templates.TemplateResponse(
        request, "pretrained_new.html", {"resize_modes": pretrained.RESIZE_MODES}
    )


@router.post("/pretrained_models/new")
async def upload_files(request: Request, store: StoreDep, settings: SettingsDep, user: UserDep) -> Response:
    """DIGITS' upload: ``job_name``, ``weights_file`` (.safetensors), ``model_def_file`` (.prototxt),
    ``labels_file`` (optional), ``image_type`` (3 colour, 1 grayscale), ``resize_mode``, ``width``, ``height``."""
    form = await request.form()
    with tempfile.TemporaryDirectory(prefix="kiln-upload-", dir=settings.jobs_dir) as tmp:
        files = {f: await _save_upload(form, f, Path(tmp)) for f in ("weights_file", "model_def_file", "labels_file")}
        try:
            fields = _upload_form(form)
            for field in ("weights_file", "model_def_file"):
                if files[field] is None:
                    raise pretrained.PretrainedError(field, "This field is required: upload the file.")
            job_id = await run_heavy(request, _import_files, store, settings, files, fields, user.name)
        except pretrained.PretrainedError as exc:
            return _refused(request, exc)
    return _done(request, job_id)


def _import_files(store: Any, settings: Any, files: dict[str, Path | None], fields: dict[str, Any], user: str) -> str:
    name = fields.pop("name")
    weights, network = files["weights_file"], files["model_def_file"]
    assert weights is not None and network is not None
    source = pretrained.import_files(weights=weights, network_file=network, labels_file=files["labels_file"], **fields)
    return pretrained_job.create(store, settings, source, name, user)


@router.get("/models/{job_id}/to_pretrained")
@router.post("/models/{job_id}/to_pretrained")
async def to_pretrained(
    request: Request, job_id: str, store: StoreDep, settings: SettingsDep, user: UserDep
) -> Response:
    """'Make pretrained model' from the snapshot at ``epoch`` (query) or ``snapshot_epoch`` (form); latest by default."""
    model = job_or_404(store, job_id, "model")
    epoch = epoch_field(request, await request.form() if request.method == "POST" else None)
    try:
        new_id = await run_heavy(request, pretrained_job.from_model, store, settings, model, epoch, user.name)
    except FileNotFoundError as exc:
        raise HTTPException(404, f"epoch: {exc}") from None
    except pretrained.PretrainedError as exc:
        return _refused(request, exc)
    return _done(request, new_id)


def pretrained_dict(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "type": PRETRAINED,
        "status": job.status,
        "username": job.username,
        "creation time": job.created,
        **pretrained_job.info(job),
    }


@router.get("/pretrained_models/{job_id}.json")
def pretrained_json(job_id: str, store: StoreDep) -> dict[str, Any]:
    """The pretrained model's network, labels, image dimensions and where it came from."""
    return pretrained_dict(job_or_404(store, job_id, PRETRAINED))


@router.get("/pretrained_models/{job_id}")
def pretrained_page(request: Request, job_id: str, store: StoreDep, settings: SettingsDep) -> Response:
    job = job_or_404(store, job_id, PRETRAINED)
    if wants_json(request):
        return JSONResponse(pretrained_dict(job))
    try:
        meta = pretrained.read_meta(settings.jobs_dir / job.id)
    except (FileNotFoundError, ValueError):
        meta = {}
    return request.app.state.templates.TemplateResponse(
        request, "pretrained_show.html", {"job": job, "info": pretrained_dict(job), "meta": meta}
    )
