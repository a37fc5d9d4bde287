"""The home page and its JSON: /, /index.json, /completed_jobs.json."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

import kiln
from kiln.store import ACTIVE, PRETRAINED, Job
from kiln.web.deps import SettingsDep, StoreDep, wants_json
from kiln.web.payloads import dataset_dict, model_dict, row

router = APIRouter(tags=["home"])


def _running_first(jobs: list[Job]) -> list[Job]:
    return sorted(jobs, key=lambda j: (j.status not in ACTIVE, -j.created))


@router.get("/index.json")
def index_json(request: Request, store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    datasets = _running_first(store.list_jobs("dataset"))
    models = _running_first(store.list_jobs("model"))
    return {
        "version": kiln.__version__,
        "jobs_dir": str(settings.jobs_dir),
        "datasets": [dataset_dict(j, settings.jobs_dir) for j in datasets],
        "models": [model_dict(j, store, settings.jobs_dir) for j in models],
        "gpus_available": gpus_available(request, store),  # kiln: DIGITS' "x/y GPUs available"
    }


def gpus_available(request: Request, store: StoreDep) -> dict[str, int]:
    """GPUs of the scheduler's inventory (NVML or KILN_FAKE_GPUS) and how many no job holds."""
    from kiln.jobs.gpus import availability

    return availability(store, request.app.state.scheduler.inventory)


@router.get("/completed_jobs.json")
def completed_jobs(store: StoreDep) -> dict[str, Any]:
    jobs = store.list_jobs()
    rows = [row(j, store) for j in jobs]
    fields = sorted({k for r in rows if r["type"] == "model" for k in r if k.endswith((" last", " min", " max"))})
    return {
        "running": [r for r in rows if r["status"] in ACTIVE],
        "datasets": [r for r in rows if r["type"] == "dataset" and r["status"] not in ACTIVE],
        "models": [r for r in rows if r["type"] == "model" and r["status"] not in ACTIVE],
        "pretrained_models": [r for r in rows if r["type"] == PRETRAINED],
        "evaluations": [r for r in rows if r["type"] == "evaluation" and r["status"] not in ACTIVE],  # kiln
        "model_output_fields": fields,
    }


@router.get("/")
def home(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    if wants_json(request):
        return JSONResponse(index_json(request, store, settings))
    jobs = store.list_jobs()
    rows = [row(j, store) for j in jobs]
    datasets = [r for r in rows if r["type"] == "dataset"]
    models = [r for r in rows if r["type"] == "model"]
    return request.app.state.templates.TemplateResponse(
        request,
        "home.html",
        {
            "datasets": datasets,
            "models": models,
            # DIGITS' tab numbers (1 datasets, 2 models); without one, open the tab that has something
            "tab": request.query_params.get("tab") or ("2" if models else "1"),
            "gpus_available": gpus_available(request, store),
            "next_dataset": _next_dataset(datasets) if not models else None,
        },
    )


def _next_dataset(datasets: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The dataset a first model would train on: the newest finished one, else the newest one."""
    done = [d for d in datasets if d["status"] == "Done"]
    if done:
        return done[0]
    return datasets[0] if datasets else None


@router.get("/vendor/plotly.min.js", include_in_schema=False)
def plotly_js() -> Response:
    """Plotly's bundle as the installed PyPI package ships it (never copied into the repo)."""
    from importlib.resources import files

    from fastapi.responses import FileResponse

    path = files("plotly") / "package_data" / "plotly.min.js"
    return FileResponse(str(path), media_type="application/javascript", headers={"Cache-Control": "max-age=86400"})


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
        '<rect width="16" height="16" rx="3" fill="#c2410c"/><path d="M4 12V4h2v3l3-3h2.5L8 7.5 11.8 12H9.3L6.5 8.8V12z" fill="#fff"/></svg>'
    )
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})
