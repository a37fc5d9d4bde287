"""Models side by side (issue 11): /models/compare?ids=a,b,... (page) and /models/compare.json.

Per model: its curves by epoch and by running time, final and best metrics, test accuracy, and the
per-class accuracy and confusion matrix of one evaluation (its test split when it has one, else its
newest finished evaluation). Across models: the configuration keys whose values differ.
Registered before routes_models, whose `/models/{job_id}` would otherwise take `compare`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from kiln.inference.evaluate import RESULT
from kiln.jobs.evaluation_job import TEST_DIR
from kiln.store import Job, Store, elapsed
from kiln.web.deps import SettingsDep, StoreDep, wants_json
from kiln.web.offload import run_heavy

router = APIRouter(tags=["models"])
IdsQuery = Annotated[
    list[str] | None, Query(description="model ids, comma-separated (ids=a,b) or the parameter repeated")
]
MIN_MODELS = 2
MAX_MODELS = 10
MAX_MATRIX_CLASSES = 100  # past this, a confusion matrix stays on its evaluation's page


def parse_ids(values: list[str]) -> list[str]:
    """`ids=a,b,c` (or `ids` repeated): distinct ids in order; a 400 naming `ids` unless 2..10."""
    text = ",".join(values)
    if text.count(",") > 4 * MAX_MODELS:  # counted before anything is split
        raise HTTPException(400, f"ids: at most {MAX_MODELS} models in one comparison.")
    ids = list(dict.fromkeys(i.strip() for i in text.split(",") if i.strip()))
    if len(ids) < MIN_MODELS:
        raise HTTPException(
            400, f"ids: give at least {MIN_MODELS} model ids, comma-separated (ids=a,b), got {len(ids)}."
        )
    if len(ids) > MAX_MODELS:
        raise HTTPException(400, f"ids: at most {MAX_MODELS} models in one comparison, got {len(ids)}.")
    return ids


def running_clock(store: Store, job: Job) -> Callable[[float], float]:
    """Seconds the job had spent Running at a moment (time queued or between runs not counted)."""
    history = store.history(job.id)
    now = time.time()
    spans = [
        (h["ts"], history[i + 1]["ts"] if i + 1 < len(history) else now)
        for i, h in enumerate(history)
        if h["status"] == "Running"
    ] or [(job.created, now)]
    return lambda ts: round(sum(max(0.0, min(ts, end) - start) for start, end in spans), 3)


def curves(store: Store, job: Job) -> dict[str, dict[str, list[Any]]]:
    """`<name> (<phase>)` -> {"epoch": [...], "seconds": [...], "value": [...]} (the learning rate as "lr")."""
    clock = running_clock(store, job)
    out: dict[str, dict[str, list[Any]]] = {}
    for m in store.metrics(job.id):
        key = "lr" if m["name"] == "lr" else f"{m['name']} ({m['phase']})"
        s = out.setdefault(key, {"epoch": [], "seconds": [], "value": []})
        s["epoch"].append(m["epoch"])
        s["seconds"].append(clock(m["ts"]))
        s["value"].append(m["value"])
    return out


def final_and_best(series: dict[str, dict[str, list[Any]]]) -> tuple[dict[str, float], dict[str, Any]]:
    """The last value of every curve; the best loss (lowest) and accuracy (highest), and the epoch
    of the best validation accuracy (the model page's "best")."""
    final: dict[str, float] = {}
    best: dict[str, Any] = {}
    for key, s in series.items():
        points = [(v, e) for v, e in zip(s["value"], s["epoch"]) if v is not None]
        if not points:
            continue
        final[key] = points[-1][0]
        if "accuracy" in key:
            best[key] = max(v for v, _ in points)
        elif "loss" in key:
            best[key] = min(v for v, _ in points)
    val = series.get("accuracy (val)")
    if val and "accuracy (val)" in best:
        best["epoch"] = next(e for v, e in zip(val["value"], val["epoch"]) if v == best["accuracy (val)"])
    return final, best


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or being replaced
        return None
    return result if isinstance(result, dict) and result.get("labels") else None


def evaluation_of(jobs_dir: Path, job: Job, evaluations: list[Job]) -> dict[str, Any] | None:
    """Per-class accuracy and confusion matrix of the model's test split evaluation (the same images
    for models of one dataset), else of its newest finished one of `evaluations`; None when neither."""
    candidates: list[tuple[str, str | None, Path]] = [("test split", None, jobs_dir / job.id / TEST_DIR / RESULT)]
    for ev in evaluations:  # newest first
        if ev.params.get("model_id") == job.id and ev.status == "Done":
            candidates.append((f"evaluation {ev.name}", ev.id, jobs_dir / ev.id / RESULT))
    for source, evaluation_id, path in candidates:
        result = _read_result(path)
        if result is None:
            continue
        labels = list(result["labels"])
        matrix = result.get("confusion_matrix") if len(labels) <= MAX_MATRIX_CLASSES else None
        return {
            "source": source,
            "evaluation_id": evaluation_id,
            "scored": result.get("scored"),
            "top1_accuracy": result.get("top1_accuracy"),
            "top5_accuracy": result.get("top5_accuracy"),
            "labels": labels,
            "per_class": result.get("per_class", []),
            "confusion_matrix": matrix,
        }
    return None


def model_entry(store: Store, jobs_dir: Path, job: Job, evaluations: list[Job]) -> dict[str, Any]:
    config = job.params.get("config", {})
    series = curves(store, job)
    final, best = final_and_best(series)
    test = (job.summary or {}).get("test") or {}
    dataset = store.get_job(job.dataset_id or "")
    return {
        "id": job.id,
        "name": job.name,
        "network": config.get("network"),
        "dataset_id": job.dataset_id,
        "dataset": dataset.name if dataset else None,
        "status": job.status,
        "username": job.username,
        "group": job.group_name,
        "elapsed": round(elapsed(job), 1),
        "config": config,
        "curves": series,
        "final": final,
        "best": best,
        "test_accuracy": test.get("top1_accuracy"),
        "test_top5_accuracy": test.get("top5_accuracy"),
        "test_epoch": test.get("epoch"),
        "evaluation": evaluation_of(jobs_dir, job, evaluations),
    }


def config_diff(configs: list[dict[str, Any]]) -> list[str]:
    """The configuration keys whose values are not the same in every model (a key one lacks counts)."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    canon = [{k: json.dumps(c.get(k), sort_keys=True, default=str) for k in keys} for c in configs]
    return [k for k in keys if len({c[k] for c in canon}) > 1]


def per_class_table(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per label: each model's accuracy (None where it has no evaluation or no such images) and the spread."""
    evaluations = [m["evaluation"] or {} for m in models]
    labels = list(dict.fromkeys(label for ev in evaluations for label in ev.get("labels", [])))
    by_model = [{c["label"]: c["accuracy"] for c in ev.get("per_class", [])} for ev in evaluations]
    rows = []
    for label in labels:
        values = [accs.get(label) for accs in by_model]
        known = [v for v in values if v is not None]
        spread = round(max(known) - min(known), 2) if len(known) > 1 else None
        rows.append({"label": label, "accuracy": values, "spread": spread})
    return rows


def comparison(store: Store, jobs_dir: Path, jobs: list[Job]) -> dict[str, Any]:
    """/models/compare.json's answer (on a heavy thread: evaluation files and every metrics row)."""
    evaluations = store.list_jobs("evaluation")
    models = [model_entry(store, jobs_dir, job, evaluations) for job in jobs]
    return {
        "models": models,
        "config_diff": config_diff([m["config"] for m in models]),
        "per_class_accuracy": per_class_table(models),
    }


def _model(store: Store, job_id: str) -> Job:
    job = store.get_job(job_id)
    if job is None or job.type != "model":
        raise HTTPException(404, f"ids: model {job_id[:80]} not found.")
    return job


@router.get("/models/compare.json")
@router.get("/models/compare")
async def compare(request: Request, store: StoreDep, settings: SettingsDep, ids: IdsQuery = None) -> Response:
    """Two to ten models side by side: `ids=a,b,...`. Whoever may see their model pages may compare them."""
    ids = parse_ids(ids or [])
    jobs = [_model(store, job_id) for job_id in ids]

    def answer() -> Response:  # on a heavy thread: the files, and the JSON or the page (up to 10 matrices)
        data = comparison(store, settings.jobs_dir, jobs)
        if wants_json(request):
            return JSONResponse(data)
        chart = {"models": [{k: m[k] for k in ("id", "name", "curves")} for m in data["models"]]}  # compare.js
        return request.app.state.templates.TemplateResponse(request, "compare.html", {"data": data, "chart": chart})

    return await run_heavy(request, answer)
