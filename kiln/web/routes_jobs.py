"""Routes common to every job: status, edit, abort, resume, delete, clone, group, files."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from kiln.jobs import actions
from kiln.jobs.errors import ActionError, UserFacingError
from kiln.store import ACTIVE, PRETRAINED, Job, Store, elapsed, eta
from kiln.web.deps import SettingsDep, StoreDep, UserDep, job_or_404
from kiln.web.formatting import duration
from kiln.web.payloads import TYPE_NAMES, row
from kiln.web.security import FILES_CSP

router = APIRouter(tags=["jobs"])
PAGES = {
    "dataset": "/datasets/{}",
    "model": "/models/{}",
    "evaluation": "/evaluations/{}",
    "pretrained_model": "/pretrained_models/{}",
}
NEW_PAGES = {"dataset": "/datasets/images/classification/new", "model": "/models/images/classification/new"}
JobIds = Annotated[list[str] | None, Form(alias="job_ids[]")]
MAX_JOB_IDS = 500  # job_ids[] in one bulk request (delete, abort, group)


def bounded(ids: list[str]) -> list[str]:
    """The ids of a bulk request, or a 400 when there are more than MAX_JOB_IDS."""
    if len(ids) > MAX_JOB_IDS:
        raise HTTPException(400, f"job_ids[]: at most {MAX_JOB_IDS} jobs in one request, got {len(ids)}.")
    return ids


@contextmanager
def refusals() -> Iterator[None]:
    """A refused action becomes the web's error answer (JSON or page) with the action's status."""
    try:
        yield
    except UserFacingError as exc:
        raise HTTPException(exc.status, exc.message) from exc


def job_state(job: Job, store: Store) -> dict[str, Any]:
    """Everything a job page shows about status, progress and timing."""
    history = store.history(job.id)
    for i, h in enumerate(history):
        end = history[i + 1]["ts"] if i + 1 < len(history) else None
        h["seconds"] = (end - h["ts"]) if end else None
    remaining = eta(job)
    return {
        "id": job.id,
        "status": job.status,
        "progress": job.progress,
        "message": job.message,
        "error": job.error,
        "elapsed": elapsed(job),
        "eta": remaining,
        "eta_text": duration(remaining),
        "running": job.status in ACTIVE,
        "history": history,
        "name": job.name,
    }


@router.get("/jobs/{job_id}")
def job_page(job_id: str, store: StoreDep) -> Response:
    job = job_or_404(store, job_id)
    return RedirectResponse(PAGES[job.type].format(job_id), status_code=302)


@router.get("/jobs/{job_id}/table_data.json")
def table_data(job_id: str, store: StoreDep) -> dict[str, Any]:
    return {"job": row(job_or_404(store, job_id), store)}


@router.get("/jobs/{job_id}/state.json")
def state(job_id: str, store: StoreDep) -> dict[str, Any]:
    """kiln: status history, progress and ETA of one job (the job pages poll nothing: SSE says when)."""
    return job_state(job_or_404(store, job_id), store)


@router.put("/jobs/{job_id}")
async def edit_job(job_id: str, request: Request, store: StoreDep, user: UserDep) -> Response:
    form = await request.form()

    def text(field: str) -> str | None:
        return str(form[field]) if field in form else None

    with refusals():
        job = actions.edit(
            store, job_id, user, name=text("job_name"), notes=text("job_notes"), group=text("group_name")
        )
    kind = "Dataset" if job.type == "dataset" else "Model"
    return PlainTextResponse(f"{kind} updated.")


for prefix in ("jobs", "datasets", "models", "evaluations", "pretrained_models"):

    @router.get(f"/{prefix}/{{job_id}}/status", name=f"{prefix}_status")
    def status(job_id: str, store: StoreDep) -> Response:
        job = store.get_job(job_id)
        if job is None:  # DIGITS answered 200 here; a missing job is a 404
            return JSONResponse({"error": "Job not found."}, status_code=404)
        return JSONResponse(
            {
                "status": job.status,
                "type": TYPE_NAMES[job.type],
                "name": job.name,
                "error": job.error,
                "progress": job.progress,
            }
        )

    @router.post(f"/{prefix}/{{job_id}}/abort", name=f"{prefix}_abort")
    def abort(job_id: str, store: StoreDep, user: UserDep) -> Response:
        with refusals():
            actions.abort(store, job_id, user)  # the worker stops in the background
        return PlainTextResponse("Job aborted.")

    @router.post(f"/{prefix}/{{job_id}}/resume", name=f"{prefix}_resume")
    def resume(job_id: str, store: StoreDep, user: UserDep) -> Response:
        """kiln: an Aborted, Interrupted or failed job starts again (a model from its last snapshot)."""
        with refusals():
            actions.resume(store, job_id, user)
        return PlainTextResponse("Job resumed.")

    @router.delete(f"/{prefix}/{{job_id}}", name=f"{prefix}_delete")
    def delete(job_id: str, store: StoreDep, settings: SettingsDep, user: UserDep) -> Response:
        """A running job is aborted first; the answer comes once its worker is gone."""
        with refusals():
            actions.delete(store, settings.jobs_dir, job_id, user)
        return PlainTextResponse("Job deleted.")


@router.delete("/jobs")
def delete_many(store: StoreDep, settings: SettingsDep, user: UserDep, ids: JobIds = None) -> Response:
    ids = bounded(ids or [])
    failed = []
    for job_id in ids:
        try:
            actions.delete(store, settings.jobs_dir, job_id, user)
        except ActionError as exc:
            failed.append(f"{job_id}: {exc.message}")
    if failed or not ids:
        raise HTTPException(400, f"{len(ids) - len(failed)} deleted, {len(failed)} not: " + "; ".join(failed))
    return PlainTextResponse("Jobs deleted.")


@router.post("/abort_jobs")
def abort_many(store: StoreDep, user: UserDep, ids: JobIds = None) -> Response:
    ids = bounded(ids or [])
    failed = []
    for job_id in ids:
        try:
            actions.abort(store, job_id, user)
        except ActionError as exc:
            failed.append(f"{job_id}: {exc.message}")
    if failed or not ids:  # DIGITS' counts, then why each one was not aborted
        raise HTTPException(
            400, f"{len(ids) - len(failed)} of {len(ids)} jobs aborted." + "".join(f" {f}" for f in failed)
        )
    return PlainTextResponse("Jobs aborted.")


@router.post("/group")  # a change: never a GET (DIGITS took both)
async def group(request: Request, store: StoreDep, user: UserDep) -> Response:
    form = await request.form()
    ids = bounded([str(v) for v in form.getlist("job_ids[]")] or request.query_params.getlist("job_ids[]"))
    name = str(form.get("group_name", request.query_params.get("group_name", "")))
    with refusals():
        # one write per job: on a thread, as the plain `def` routes run
        await run_in_threadpool(actions.group, store, [str(i) for i in ids], name, user)
    return PlainTextResponse("Jobs regrouped.")


@router.get("/clone/{job_id}", operation_id="clone_get")  # one id per method: OpenAPI ids are unique
@router.post("/clone/{job_id}", operation_id="clone_post")
def clone(job_id: str, store: StoreDep, user: UserDep) -> Response:
    with refusals():
        job = actions.get_job(store, job_id)
    if job.type == PRETRAINED:  # DIGITS could not clone one: start a new model from it instead
        return RedirectResponse(f"{NEW_PAGES['model']}?pretrained_networks={job_id}", status_code=302)
    if job.type not in NEW_PAGES:  # an evaluation: evaluate again from its model's page
        return RedirectResponse(f"/models/{job.params.get('model_id', '')}#evaluate", status_code=302)
    return RedirectResponse(f"{NEW_PAGES[job.type]}?clone={job_id}", status_code=302)


@router.get("/files/{path:path}")
def files(path: str, store: StoreDep, settings: SettingsDep) -> Response:
    """A file of one job's folder (logs, labels.txt, mean.png, snapshots), as `<job_id>/<path>`: a
    job that exists, a regular file inside its folder once symlinks are resolved, no hidden (temporary)
    file. Every refusal is the same 404, naming no server path; what is served runs nothing."""
    job_id, _, relative = path.partition("/")
    parts = relative.split("/")
    if not relative or any(not p or p.startswith(".") for p in parts) or store.get_job(job_id) is None:
        raise HTTPException(404, "File not found.")
    folder = (settings.jobs_dir / job_id).resolve()
    try:
        target = (folder / relative).resolve(strict=True)
        regular = folder in target.parents and stat.S_ISREG(target.stat().st_mode)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, an unreadable name
        regular = False
    if not regular:
        raise HTTPException(404, "File not found.")
    kind = FILE_TYPES.get(target.suffix.lower())
    headers = {"Content-Security-Policy": FILES_CSP}
    if kind is None:  # snapshots, arrays, archives: downloaded, never shown as text (Starlette's guess)
        return FileResponse(target, media_type="application/octet-stream", filename=target.name, headers=headers)
    return FileResponse(target, media_type=kind, headers=headers)


TEXT = "text/plain; charset=utf-8"
IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".bmp": "image/bmp"}
FILE_TYPES = {
    **IMAGES,
    ".json": "application/json",
    **dict.fromkeys((".txt", ".log", ".csv", ".prototxt", ".py"), TEXT),
}


@router.get("/jobs/{job_id}/log.json")
def log_lines(job_id: str, store: StoreDep, limit: int = 200) -> dict[str, Any]:
    """kiln: the last lines of a job's log (the job pages refresh it live)."""
    job_or_404(store, job_id)
    return {"lines": store.logs(job_id, min(max(limit, 1), 2000))}
