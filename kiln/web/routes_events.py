"""The live event stream (server-sent events), replacing DIGITS' Socket.IO.

Workers write to SQLite; every write appends to `changes`. The stream polls that table and
sends, per changed job, its row (home page) and what changed, so pages update without reloading.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from kiln.store import Store
from kiln.web.payloads import row
from kiln.web.routes_jobs import job_state

router = APIRouter(tags=["events"])
POLL_S = 0.4


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _updates(store: Store, seq: int, job_id: str | None) -> tuple[int, list[str]]:
    changes = store.changes_since(seq)
    if not changes:
        return seq, []
    kinds: dict[str, set[str]] = {}
    for c in changes:
        if job_id is None or c["job_id"] == job_id:
            kinds.setdefault(c["job_id"], set()).add(c["kind"])
    out = []
    for jid, what in kinds.items():
        job = store.get_job(jid)
        if job is None:
            out.append(_event("job", {"job_id": jid, "update": "deleted"}))
            continue
        out.append(
            _event(
                "job", {"job_id": jid, "update": sorted(what), "row": row(job, store), "state": job_state(job, store)}
            )
        )
    return changes[-1]["seq"], out


@router.get("/events")
async def events(request: Request, job_id: str | None = None) -> StreamingResponse:
    """`event: job` messages for every job (home) or one job (`?job_id=`)."""
    settings = request.app.state.settings

    async def stream() -> AsyncIterator[str]:
        store = Store(settings.db_path)
        try:
            seq = store.last_change()
            yield "retry: 1000\n\n" + _event("hello", {"seq": seq})
            beat = 0
            while not await request.is_disconnected():
                seq, messages = await asyncio.to_thread(_updates, store, seq, job_id)
                for m in messages:
                    yield m
                beat += 1
                if beat % 25 == 0:
                    yield ": keep-alive\n\n"
                await asyncio.sleep(POLL_S)
        finally:
            store.close()

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
