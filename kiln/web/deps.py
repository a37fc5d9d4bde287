"""Shared request dependencies: settings, a per-thread store, the user, content negotiation."""

from __future__ import annotations

import re
import threading
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from kiln.config import Settings
from kiln.store import Job, Store

USERNAME_RE = re.compile(r"^[a-z][a-z0-9.\-_]*$")
_local = threading.local()


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    """One SQLite connection per thread (FastAPI runs sync routes in a thread pool)."""
    settings: Settings = request.app.state.settings
    cache = getattr(_local, "stores", None)
    if cache is None:
        cache = _local.stores = {}
    store = cache.get(settings.db_path)
    if store is None:
        store = cache[settings.db_path] = Store(settings.db_path)
    return store


def wants_json(request: Request) -> bool:
    """DIGITS' rule: the path ends in .json, or Accept prefers JSON over HTML."""
    if request.url.path.endswith(".json"):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def username_of(request: Request, form: dict[str, Any] | None = None) -> str | None:
    """The cookie, or a `username` query/form field as DIGITS' REST clients pass it."""
    name = (form or {}).get("username") or request.query_params.get("username") or request.cookies.get("username")
    return name or None


def check_username(name: str) -> str | None:
    """The problem with a username, or None if it is valid."""
    if not name:
        return "A username is required."
    if not USERNAME_RE.match(name):
        return "Usernames start with a lowercase letter and contain only a-z, 0-9, '.', '-' and '_'."
    return None


class LoginRequired(Exception):
    """HTML requests are redirected to /login; JSON ones get 401."""


async def require_user(request: Request) -> str:
    form = dict(await request.form()) if request.method in ("POST", "PUT", "DELETE") else {}
    name = username_of(request, form)
    if not name:
        raise LoginRequired()
    problem = check_username(name)
    if problem:
        raise HTTPException(400, problem)
    return name


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
UserDep = Annotated[str, Depends(require_user)]


def job_or_404(store: Store, job_id: str, type_: str | None = None) -> Job:
    job = store.get_job(job_id)
    if job is None or (type_ and job.type != type_):
        raise HTTPException(404, f"Job {job_id} not found.")
    return job


def check_owner(job: Job, user: str) -> None:
    """Only the owner may change a job (DIGITS: a convenience, not security)."""
    if job.username and job.username != user:
        raise HTTPException(403, f"Only {job.username} may change this job.")
