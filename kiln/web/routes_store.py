"""The model store over HTTP (DIGITS 5.4): list the stores' models and import one.

    GET /store/list                 the page
    GET /store/models[?refresh=1]   {base: {base_url, welcome_msg, model_list: [{dir_name, id, info, aux}]}}
    POST /store/push?id=<id>        imports it as a pretrained model; answers its job id as text (DIGITS)

DIGITS' push was a GET; here it is a POST, so that another web page cannot make a signed-in
browser import models. Reading a store (a folder or the network) runs on the heavy threads.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from kiln import model_store
from kiln.pretrained import PretrainedError
from kiln.web.deps import SettingsDep, StoreDep, UserDep, wants_json
from kiln.web.offload import run_heavy

router = APIRouter(tags=["model store"])
CACHE_S = 300.0  # DIGITS cached the listing too; ?refresh=1 reads the stores again


async def _listing(request: Request, setting: str, refresh: bool) -> dict[str, Any]:
    cache = request.app.state.__dict__.setdefault("model_store_cache", {})
    hit = cache.get(setting)
    if hit and not refresh and time.monotonic() - hit[0] < CACHE_S:
        return hit[1]
    listing = await run_heavy(request, model_store.list_store, setting)
    cache[setting] = (time.monotonic(), listing)
    return listing


@router.get("/store/models")
async def store_models(request: Request, settings: SettingsDep, refresh: str = "") -> dict[str, Any]:
    """Every store's models; a store that cannot be read says why in its ``error``."""
    return await _listing(request, settings.model_store_url, refresh not in ("", "0"))


@router.get("/store/list")
async def store_page(request: Request, settings: SettingsDep, refresh: str = "") -> Response:
    listing = await _listing(request, settings.model_store_url, refresh not in ("", "0"))
    return request.app.state.templates.TemplateResponse(
        request, "store.html", {"stores": listing, "configured": bool(model_store.bases(settings.model_store_url))}
    )


@router.post("/store/push")
async def store_push(request: Request, store: StoreDep, settings: SettingsDep, user: UserDep, id: str = "") -> Response:
    """Import the store's model ``id`` as a pretrained model; its new job id as text (JSON: ``{"id"}``)."""
    from kiln.jobs import pretrained_job

    model_id = id or str((await request.form()).get("id") or "")
    try:
        job_id = await run_heavy(request, pretrained_job.from_store, store, settings, model_id.strip(), user.name)
    except model_store.StoreError as exc:
        status = 404 if exc.message.startswith("No model") else 400
        raise HTTPException(status, f"id: {exc.message}") from None
    except PretrainedError as exc:
        raise HTTPException(400, str(exc)) from None
    return JSONResponse({"id": job_id}) if wants_json(request) else PlainTextResponse(job_id)
