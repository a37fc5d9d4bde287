"""Evaluations: a model on thousands of images, as a job (create, status, results, CSV, page)."""

from __future__ import annotations

import json
import mimetypes
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from kiln import paths
from kiln.forms import FormErrors
from kiln.jobs.evaluation_form import create_evaluation
from kiln.store import Job
from kiln.web import form_docs
from kiln.web.deps import SettingsDep, StoreDep, UserDep, job_or_404, wants_json
from kiln.web.routes_jobs import job_state

router = APIRouter(tags=["evaluations"])
CELL_IMAGES = 200  # images one confusion-matrix cell lists at most
RESULT = "evaluation.json"


@router.post("/models/images/classification/evaluate.json", openapi_extra=form_docs.evaluate())
@router.post("/models/images/classification/evaluate", openapi_extra=form_docs.evaluate())
async def evaluate(request: Request, store: StoreDep, settings: SettingsDep, user: UserDep) -> Response:
    """`job_id`, `snapshot_epoch`, one of `split` / `image_list` / `image_archive` / `image_folder`,
    `num_test_images` → `{"id": ...}` (the page: a redirect to the evaluation)."""
    from starlette.concurrency import run_in_threadpool

    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    uploads = {k: await v.read() for k, v in form.items() if isinstance(v, UploadFile) and v.filename}
    try:
        job_id = await run_in_threadpool(create_evaluation, fields, uploads, store, settings, user.name)
    except FormErrors as exc:
        return JSONResponse({"errors": exc.errors}, status_code=400)
    if wants_json(request):
        return JSONResponse({"id": job_id, "status": "Initialized"})
    return RedirectResponse(f"/evaluations/{job_id}", status_code=302)


def _result(job: Job, jobs_dir: Path) -> dict[str, Any] | None:
    path = jobs_dir / job.id / RESULT
    return json.loads(path.read_text()) if job.status == "Done" and path.is_file() else None


def evaluation_dict(job: Job, jobs_dir: Path) -> dict[str, Any]:
    params = job.params
    out: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "model_id": params.get("model_id"),
        "snapshot_epoch": params.get("epoch"),
        "source": params.get("source"),
        "progress": job.progress,
        "error": job.error,
    }
    result = _result(job, jobs_dir)
    if result:
        out.update(result)
    return out


@router.get("/evaluations/{job_id}.json")
def evaluation_json(job_id: str, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    """Status, and when Done: top1/top5 accuracy, confusion matrix, per class, worst, top-N, label issues, errors."""
    return evaluation_dict(job_or_404(store, job_id, "evaluation"), settings.jobs_dir)


@router.get("/evaluations/{job_id}/classifications.csv")
def classifications_csv(job_id: str, store: StoreDep, settings: SettingsDep) -> Response:
    job = job_or_404(store, job_id, "evaluation")
    path = settings.jobs_dir / job.id / "classifications.csv"
    if not path.is_file():
        raise HTTPException(404, "The evaluation has not finished yet.")
    return FileResponse(path, media_type="text/csv", filename=f"{job.id}_classifications.csv")


def _arrays(job_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not (job_dir / "truth.npy").is_file():
        raise HTTPException(404, "The evaluation has not finished yet.")
    return np.load(job_dir / "truth.npy"), np.load(job_dir / "pred.npy"), np.load(job_dir / "probs.npy", mmap_mode="r")


@router.get("/evaluations/{job_id}/cell.json")
def cell(job_id: str, truth: int, predicted: int, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    """The images of one confusion-matrix cell (true label row, predicted column), surest first."""
    job = job_or_404(store, job_id, "evaluation")
    job_dir = settings.jobs_dir / job.id
    truths, preds, probs = _arrays(job_dir)
    picked = np.flatnonzero((truths == truth) & (preds == predicted))
    if len(picked):
        picked = picked[np.argsort(-np.asarray(probs[picked, predicted]), kind="stable")][:CELL_IMAGES]
    names = (job_dir / "names.txt").read_text(encoding="utf-8").splitlines()
    return {
        "truth": truth,
        "predicted": predicted,
        "count": int(((truths == truth) & (preds == predicted)).sum()),
        "images": [
            {
                "index": int(i),
                "image": names[i],
                "url": f"/evaluations/{job.id}/images/{int(i)}",
                "confidence": round(100.0 * float(probs[i, predicted]), 2),
            }
            for i in picked
        ],
    }


@router.get("/evaluations/{job_id}/images/{index}")
def image(job_id: str, index: int, store: StoreDep, settings: SettingsDep) -> Response:
    """One evaluated image: from the dataset split, or re-read from its path (inside the data roots)."""
    data, kind = _image_bytes(job_or_404(store, job_id, "evaluation"), index, settings)
    return Response(data, media_type=kind)


def _image_bytes(job: Job, index: int, settings: Any) -> tuple[bytes, str]:
    """One evaluated image's file bytes and type: from the dataset split, or its path (inside the roots)."""
    job_dir = settings.jobs_dir / job.id
    sources_file = job_dir / "sources.txt"
    lines = sources_file.read_text(encoding="utf-8").splitlines() if sources_file.is_file() else []
    if not 0 <= index < len(lines):
        raise HTTPException(404, f"No image {index} in this evaluation.")
    source = job.params["source"]
    if source["kind"] == "split":
        from kiln.datasets.reader import PackedDataset

        dataset = PackedDataset(settings.jobs_dir / job.params["dataset_id"])
        return dataset.image_png(source["split"], int(lines[index])), "image/png"
    roots = [job_dir] if source["kind"] == "archive" else settings.allowed_roots
    try:
        path = paths.check_readable(lines[index], roots)
        data = paths.read_bounded(path, settings.max_file_bytes)
    except (paths.PathRefused, OSError) as exc:
        raise HTTPException(404, f"Image {index} cannot be read now: {exc}.") from None
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return data, kind if kind.startswith("image/") else "application/octet-stream"


@router.get("/evaluations/{job_id}/gradcam/{index}")
def gradcam(job_id: str, index: int, store: StoreDep, settings: SettingsDep) -> Response:
    """Grad-CAM of one evaluated image for the class the model predicted (the mistakes gallery)."""
    import io

    from kiln.inference.visualize import gradcam_png
    from kiln.web.routes_models import predictor_for

    job = job_or_404(store, job_id, "evaluation")
    data, _ = _image_bytes(job, index, settings)
    try:
        predictor = predictor_for(settings.jobs_dir / job.params["model_id"], job.params.get("epoch"))
    except FileNotFoundError as exc:
        raise HTTPException(404, f"The model's snapshot is gone: {exc}.") from None
    batch, _, errors = predictor.load([io.BytesIO(data)])
    png = gradcam_png(predictor, batch) if not errors else None
    if png is None:
        raise HTTPException(404, errors.get(0) or "This network has no convolution layer for Grad-CAM.")
    return Response(png, media_type="image/png")


@router.get("/evaluations/{job_id}")
def evaluation_page(request: Request, job_id: str, store: StoreDep, settings: SettingsDep) -> Response:
    job = job_or_404(store, job_id, "evaluation")
    if wants_json(request):
        return JSONResponse(evaluation_dict(job, settings.jobs_dir))
    return request.app.state.templates.TemplateResponse(
        request,
        "evaluation.html",
        {
            "job": job,
            "state": job_state(job, store),
            "model": store.get_job(job.params.get("model_id", "")),
            "ev": evaluation_dict(job, settings.jobs_dir),
        },
    )


def evaluations_of(store: Any, model_id: str, jobs_dir: Path) -> list[dict[str, Any]]:
    """A model's evaluations, newest first (for its page and the home page)."""
    return [evaluation_dict(j, jobs_dir) for j in store.list_jobs("evaluation") if j.params.get("model_id") == model_id]


@router.get("/models/{job_id}/evaluations.json")
def model_evaluations(job_id: str, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    """``{"evaluations": [{id, name, status, top1_accuracy, top5_accuracy, ...}]}``, newest first."""
    job_or_404(store, job_id, "model")
    rows = []
    for ev in evaluations_of(store, job_id, settings.jobs_dir):
        rows.append({k: ev.get(k) for k in ("id", "name", "status", "snapshot_epoch", "source", "progress")})
        rows[-1].update(top1_accuracy=ev.get("top1_accuracy"), top5_accuracy=ev.get("top5_accuracy"))
    return {"evaluations": rows}
