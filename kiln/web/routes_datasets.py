"""Dataset pages and API: new (form), create, show, explore, summary, stored images."""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from kiln.datasets import packed_format
from kiln.datasets.spec import ENCODINGS, RESIZE_MODES, DatasetSpec
from kiln.forms import FormErrors
from kiln.jobs.dataset_form import UPLOAD_FIELDS, create_dataset_job, discard_uploads, save_uploads, spec_from_form
from kiln.store import new_job_id
from kiln.web import form_docs
from kiln.web.deps import SettingsDep, StoreDep, UserDep, job_or_404, wants_json
from kiln.web.offload import run_heavy
from kiln.web.payloads import dataset_dict, read_manifest
from kiln.web.routes_jobs import job_state

router = APIRouter(tags=["datasets"])


@router.get("/datasets/images/classification/new")
def new_dataset(request: Request, store: StoreDep, user: UserDep, clone: str | None = None) -> Response:
    values = DatasetSpec().to_dict()
    if clone:
        values.update(job_or_404(store, clone, "dataset").params.get("spec", {}))
        values["dataset_name"] = f"Clone of {values.get('dataset_name', '')}"
    return _form_page(request, values, {}, 200)


def _form_page(request: Request, values: dict[str, Any], errors: dict[str, list[str]], status: int) -> Response:
    return request.app.state.templates.TemplateResponse(
        request,
        "dataset_new.html",
        {
            "v": values,
            "errors": errors,
            "resize_modes": list(RESIZE_MODES.items()),
            "encodings": list(ENCODINGS.items()),
        },
        status_code=status,
    )


@router.post("/datasets/images/classification.json", openapi_extra=form_docs.dataset_form())
@router.post("/datasets/images/classification", openapi_extra=form_docs.dataset_form())
async def create_dataset(request: Request, store: StoreDep, settings: SettingsDep, user: UserDep) -> Response:
    form = await request.form()
    job_id = new_job_id()
    upload_dir, uploaded = settings.jobs_dir / job_id, []
    try:
        spec = spec_from_form({k: v for k, v in form.items() if isinstance(v, str)})
        # uploaded lists are copied from Starlette's spooled files a chunk at a time, off the event loop
        uploaded = await run_in_threadpool(save_uploads, _uploaded_lists(form), upload_dir, spec)
        # validation scans the folders (up to thousands of directory reads): off the event loop
        await run_heavy(request, create_dataset_job, store, settings, spec, user.name, job_id)
    except BaseException as exc:
        discard_uploads(upload_dir, uploaded)  # no job, so no orphaned upload either
        if not isinstance(exc, FormErrors):
            raise
        if wants_json(request):
            return JSONResponse({"errors": exc.errors}, status_code=400)
        values = {**DatasetSpec().to_dict(), **{k: v for k, v in form.items() if isinstance(v, str)}}
        return _form_page(request, values, exc.errors, 400)
    if wants_json(request):
        return JSONResponse({"id": job_id, "name": spec.dataset_name, "status": "Initialized"})
    return RedirectResponse(f"/datasets/{job_id}", status_code=302)


def _uploaded_lists(form: Any) -> dict[str, Any]:
    """The text lists sent as files (an empty file input sends a part with no filename), as file objects."""
    return {
        field: item.file for field in UPLOAD_FIELDS if isinstance(item := form.get(field), UploadFile) and item.filename
    }


@router.get("/datasets/summary")
def summary(request: Request, job_id: str, store: StoreDep, settings: SettingsDep) -> Response:
    job = job_or_404(store, job_id, "dataset")
    manifest = read_manifest(settings.jobs_dir, job_id)
    return request.app.state.templates.TemplateResponse(
        request,
        "dataset_summary.html",
        {"job": job, "spec": job.params.get("spec", {}), "manifest": manifest, "imbalance": _imbalance(manifest)},
    )


def _imbalance(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The train split's class sizes when they differ enough to suggest balancing (kiln.training.balance)."""
    from kiln.training.balance import imbalance_hint

    train = (manifest or {}).get("splits", {}).get("train", {})
    return imbalance_hint(manifest.get("labels", []), train.get("per_class", [])) if manifest and train else None


@router.get("/datasets/images/classification/explore")
def explore(
    request: Request,
    job_id: str,
    store: StoreDep,
    settings: SettingsDep,
    db: str = "train",
    page: int = 0,
    size: int = 25,
    label: int | None = None,
) -> Response:
    from kiln.datasets.reader import PackedDataset

    job = job_or_404(store, job_id, "dataset")
    if read_manifest(settings.jobs_dir, job_id) is None:
        raise HTTPException(400, "The dataset is not finished yet: explore it once it is Done.")
    ds = PackedDataset(settings.jobs_dir / job_id)
    if db not in ds.splits:
        raise HTTPException(404, f"db: this dataset has no {db!r} split (it has {', '.join(ds.splits)}).")
    if size not in (10, 25, 50, 100):
        size = 25
    indices = ds.indices(db, label)
    pages = max(1, math.ceil(len(indices) / size))
    page = min(max(page, 0), pages - 1)
    shown = indices[page * size : (page + 1) * size]
    targets = ds.targets(db)
    return request.app.state.templates.TemplateResponse(
        request,
        "dataset_explore.html",
        {
            "job": job,
            "db": db,
            "splits": ds.splits,
            "labels": ds.labels,
            "label": label,
            "size": size,
            "page": page,
            "pages": pages,
            "total": len(indices),
            "items": [(int(i), ds.labels[int(targets[i])]) for i in shown],
            "page_range": range(max(0, page - 5), min(pages, page + 6)),
        },
    )


@router.get("/datasets/{job_id}/images/{split}/{index}.png")
def stored_image(job_id: str, split: str, index: int, store: StoreDep, settings: SettingsDep) -> Response:
    from kiln.datasets.reader import PackedDataset

    job_or_404(store, job_id, "dataset")
    if read_manifest(settings.jobs_dir, job_id) is None:
        raise HTTPException(404, "The dataset is not finished.")
    ds = PackedDataset(settings.jobs_dir / job_id)
    if split not in ds.splits or not 0 <= index < ds.count(split):
        raise HTTPException(404, f"No image {index} in {split}.")
    return Response(ds.image_png(split, index), media_type="image/png", headers={"Cache-Control": "max-age=3600"})


@router.get("/datasets/{job_id}.json")
def dataset_json(job_id: str, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    return dataset_dict(job_or_404(store, job_id, "dataset"), settings.jobs_dir, verbose=True)


@router.get("/datasets/{job_id}")
def show_dataset(request: Request, job_id: str, store: StoreDep, settings: SettingsDep) -> Response:
    job = job_or_404(store, job_id, "dataset")
    if wants_json(request):
        return JSONResponse(dataset_dict(job, settings.jobs_dir, verbose=True))
    manifest = read_manifest(settings.jobs_dir, job_id)
    return request.app.state.templates.TemplateResponse(
        request,
        "dataset_show.html",
        {
            "job": job,
            "spec": job.params.get("spec", {}),
            "manifest": manifest,
            "imbalance": _imbalance(manifest),
            "files": {"mean_png": packed_format.MEAN_PNG, "errors_log": packed_format.ERRORS_LOG},
            "state": job_state(job, store),
            "models": store.models_using(job_id),
            "logs": store.logs(job_id, 30),
            "directory": settings.jobs_dir / job_id,
        },
    )
