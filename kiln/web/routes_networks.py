"""Network texts on the New Model page: Customize (copy a network's text) and Visualize (its layers)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from kiln.jobs.network_choice import ChoiceError, job_network, model_job
from kiln.networks.definition import NetworkDef
from kiln.training import checkpoint
from kiln.web import highlight
from kiln.web.deps import SettingsDep, StoreDep, wants_json
from kiln.web.network_view import visualize

router = APIRouter(tags=["networks"])


def _refusal(
    request: Request, field: str, message: str, where: dict[str, Any] | None = None, status: int = 400
) -> Response:
    """A form problem, as DIGITS' {"errors": {field: [...]}}, plus ``error``: the message, and for a
    network text its line, column, kind and what was expected (to mark in the editor)."""
    detail = {"message": message, "line": 0, "column": 0, **(where or {})}
    if wants_json(request):
        return JSONResponse({"errors": {field: [message]}, "error": detail}, status_code=status)
    return request.app.state.templates.TemplateResponse(
        request, "network_visual.html", {"error": message, "field": field, "line": detail["line"]}, status_code=status
    )


@router.post("/models/customize.json")
@router.post("/models/customize")
async def customize(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    """``{"network": text}`` of a standard network, or of a model (plus ``"snapshot": "<id>:<epoch>"``
    for its weights, which the Custom tab can start from). ``network`` and ``snapshot_epoch`` come in
    the query (DIGITS) or the form."""
    from starlette.concurrency import run_in_threadpool

    form = await request.form()
    values = {**{k: v for k, v in form.items() if isinstance(v, str)}, **request.query_params}
    network, epoch = str(values.get("network") or ""), str(values.get("snapshot_epoch") or "")
    return await run_in_threadpool(_customize, request, store, settings, network, epoch)


def _customize(request: Request, store: Any, settings: Any, network: str, snapshot_epoch: str) -> Response:
    from kiln.networks.registry import list_networks

    names = {n.name for n in list_networks()}
    if network in names:
        source = NetworkDef(network).source
        if source is None:
            return _refusal(request, "network", f"{network} is written in Python inside kiln; it has no text to edit.")
        return JSONResponse({"network": source, "network_language": "prototxt", "name": network})
    try:
        job = model_job(store, network.strip(), "network", pretrained=True)
    except ChoiceError as exc:
        known = ", ".join(sorted(names))
        return _refusal(
            request,
            exc.field,
            f"{exc.message} Give a standard network ({known}), a model's or a pretrained model's id.",
            status=404,
        )
    definition = job_network(job)
    if definition.source is None:
        return _refusal(request, "network", f"Model {job.id} runs {definition.name}, a Python class; no text to edit.")
    epochs = checkpoint.list_snapshots(settings.jobs_dir / job.id)
    out: dict[str, Any] = {"network": definition.source, "network_language": definition.language, "name": job.name}
    if epochs:
        try:
            epoch = checkpoint.resolve_epoch(settings.jobs_dir / job.id, snapshot_epoch or None)
        except (FileNotFoundError, ValueError) as exc:
            return _refusal(request, "snapshot_epoch", str(exc))
        out["snapshot"] = f"{job.id}:{checkpoint.format_epoch(epoch)}"
        out["snapshots"] = epochs
    return JSONResponse(out)


@router.post("/models/visualize-network.json")
@router.post("/models/visualize-network")
async def visualize_network(request: Request, store: StoreDep, settings: SettingsDep) -> Response:
    """Every layer with its output shape and parameters for the dataset's images, and a drawing."""
    from kiln.web.offload import run_heavy

    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
    try:
        view = await run_heavy(request, visualize, form, store, settings)
    except ChoiceError as exc:
        return _refusal(request, exc.field, exc.message)
    except ValueError as exc:  # PrototxtError, PythonNetworkError: with the line to mark
        field = "custom_network" if str(form.get("custom_network") or "").strip() else "network"
        as_dict = getattr(exc, "as_dict", None)
        return _refusal(request, field, str(exc), as_dict() if as_dict else None)
    if wants_json(request):
        return JSONResponse(view)
    return request.app.state.templates.TemplateResponse(request, "network_visual.html", {"view": view})


@router.get("/vendor/highlight.css", include_in_schema=False)
def highlight_css() -> Response:
    return Response(highlight.css(), media_type="text/css", headers={"Cache-Control": "max-age=3600"})
