"""Routes common to every job: status, edit, abort, resume, delete, clone, group, files."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from kiln.store import ACTIVE, Job, Store, elapsed, eta
from kiln.web.deps import SettingsDep, StoreDep, UserDep, check_owner, job_or_404
from kiln.web.formatting import duration
from kiln.web.shapes import TYPE_NAMES, row

router = APIRouter(tags=["jobs"])
PAGES = {"dataset": "/datasets/{}", "model": "/models/{}"}
NEW_PAGES = {"dataset": "/datasets/images/classification/new", "model": "/models/images/classification/new"}


def job_state(job: Job, store: Store) -> dict[str, Any]:
    """Everything a job page shows about status, progress and timing."""
    history = store.history(job.id)
    for i, h in enumerate(history):
        end = history[i + 1]["ts"] if i + 1 < len(history) else None
        h["seconds"] = (end - h["ts"]) if end else None
    remaining = eta(job)
    return {"id": job.id, "status": job.status, "progress": job.progress, "message": job.message,
            "error": job.error, "elapsed": elapsed(job), "eta": remaining, "eta_text": duration(remaining),
            "running": job.status in ACTIVE, "history": history, "name": job.name}


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
    job = job_or_404(store, job_id)
    check_owner(job, user)
    form = await request.form()
    updates: dict[str, str] = {}
    if "job_name" in form:
        name = str(form["job_name"]).strip()
        if not name:
            raise HTTPException(400, "job_name: a name is required.")
        updates["name"] = name
    if "job_notes" in form:
        updates["notes"] = str(form["job_notes"])
    if "group_name" in form:
        updates["group_name"] = str(form["group_name"]).strip()
    if updates:
        store.update_fields(job_id, **updates)
    kind = "Dataset" if job.type == "dataset" else "Model"
    return PlainTextResponse(f"{kind} updated.")


for prefix in ("jobs", "datasets", "models"):
    @router.get(f"/{prefix}/{{job_id}}/status", name=f"{prefix}_status")
    def status(job_id: str, store: StoreDep) -> Response:
        job = store.get_job(job_id)
        if job is None:  # DIGITS answered 200 here; a missing job is a 404
            return JSONResponse({"error": "Job not found."}, status_code=404)
        return JSONResponse({"status": job.status, "type": TYPE_NAMES[job.type], "name": job.name,
                             "error": job.error, "progress": job.progress})

    @router.post(f"/{prefix}/{{job_id}}/abort", name=f"{prefix}_abort")
    def abort(job_id: str, request: Request, store: StoreDep, user: UserDep) -> Response:
        job = job_or_404(store, job_id)
        check_owner(job, user)
        if job.status not in ACTIVE or not request.app.state.scheduler.abort(job_id):
            raise HTTPException(403, "Job not aborted: it is not running.")
        return PlainTextResponse("Job aborted.")

    @router.post(f"/{prefix}/{{job_id}}/resume", name=f"{prefix}_resume")
    def resume(job_id: str, store: StoreDep, user: UserDep) -> Response:
        """kiln: an Aborted, Interrupted or failed job starts again (a model from its last snapshot)."""
        job = job_or_404(store, job_id)
        check_owner(job, user)
        if not store.set_status(job_id, "Initialized", expect=("Aborted", "Interrupted", "Error"), note="resumed"):
            raise HTTPException(403, f"Job not resumed: it is {job.status}.")
        return PlainTextResponse("Job resumed.")

    @router.delete(f"/{prefix}/{{job_id}}", name=f"{prefix}_delete")
    def delete(job_id: str, request: Request, store: StoreDep, settings: SettingsDep, user: UserDep) -> Response:
        delete_job(request, store, settings.jobs_dir, job_or_404(store, job_id), user)
        return PlainTextResponse("Job deleted.")


def delete_job(request: Request, store: Store, jobs_dir: Path, job: Job, user: str) -> None:
    check_owner(job, user)
    if job.type == "dataset":
        users = store.models_using(job.id)
        if users:
            names = ", ".join(f'"{m.name}"' for m in users)
            raise HTTPException(403, f'Cannot delete "{job.name}" because {len(users)} model'
                                     f'{"s" if len(users) > 1 else ""} depend on it: {names}')
    if job.status in ACTIVE:
        request.app.state.scheduler.abort(job.id)
    store.delete_job(job.id)
    shutil.rmtree(jobs_dir / job.id, ignore_errors=True)


@router.delete("/jobs")
async def delete_many(request: Request, store: StoreDep, settings: SettingsDep, user: UserDep) -> Response:
    ids = (await request.form()).getlist("job_ids[]")
    failed = []
    for job_id in ids:
        try:
            delete_job(request, store, settings.jobs_dir, job_or_404(store, str(job_id)), user)
        except HTTPException as exc:
            failed.append(f"{job_id}: {exc.detail}")
    if failed or not ids:
        raise HTTPException(400, f"{len(ids) - len(failed)} deleted, {len(failed)} not: " + "; ".join(failed))
    return PlainTextResponse("Jobs deleted.")


@router.post("/abort_jobs")
async def abort_many(request: Request, store: StoreDep, user: UserDep) -> Response:
    ids = (await request.form()).getlist("job_ids[]")
    done = 0
    for job_id in ids:
        job = store.get_job(str(job_id))
        if job and (not job.username or job.username == user) and request.app.state.scheduler.abort(job.id):
            done += 1
    if done != len(ids) or not ids:
        raise HTTPException(400, f"{done} of {len(ids)} jobs aborted.")
    return PlainTextResponse("Jobs aborted.")


@router.api_route("/group", methods=["GET", "POST"])
async def group(request: Request, store: StoreDep, user: UserDep) -> Response:
    form = await request.form()
    ids = form.getlist("job_ids[]") or request.query_params.getlist("job_ids[]")
    name = str(form.get("group_name", request.query_params.get("group_name", ""))).strip()
    if not ids:
        raise HTTPException(400, "job_ids[]: no jobs given.")
    for job_id in ids:
        job = job_or_404(store, str(job_id))
        check_owner(job, user)
        store.update_fields(job.id, group_name=name)
    return PlainTextResponse("Jobs regrouped.")


@router.api_route("/clone/{job_id}", methods=["GET", "POST"])
def clone(job_id: str, store: StoreDep, user: UserDep) -> Response:
    job = job_or_404(store, job_id)
    return RedirectResponse(f"{NEW_PAGES[job.type]}?clone={job_id}", status_code=302)


@router.get("/files/{path:path}")
def files(path: str, settings: SettingsDep) -> Response:
    """Files of a job folder (logs, labels.txt, mean.png, snapshots), never outside it."""
    root = settings.jobs_dir.resolve()
    target = (root / path).resolve()
    if root not in target.parents or not target.is_file():
        raise HTTPException(404, f"File {path} not found.")
    return FileResponse(target)


@router.get("/jobs/{job_id}/log.json")
def log_lines(job_id: str, store: StoreDep, limit: int = 200) -> dict[str, Any]:
    """kiln: the last lines of a job's log (the job pages refresh it live)."""
    job_or_404(store, job_id)
    return {"lines": store.logs(job_id, min(max(limit, 1), 2000))}
