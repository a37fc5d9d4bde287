"""Shared request dependencies: settings, a per-thread store, the user (session or token), content negotiation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

from fastapi import Depends, HTTPException, Request

from kiln.accounts import Accounts, SessionSigner, User, load_secret
from kiln.config import Settings
from kiln.store import Job, Store

_local = threading.local()
T = TypeVar("T")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def _per_thread(request: Request, kind: Callable[[Path], T]) -> T:
    """One ``kind`` over the app's kiln.db per thread: one SQLite connection per thread (FastAPI
    runs sync routes in a thread pool)."""
    settings: Settings = request.app.state.settings
    cache: dict[tuple[Any, Path], Any] = _local.__dict__.setdefault("cache", {})
    key = (kind, settings.db_path)
    if key not in cache:
        cache[key] = kind(settings.db_path)
    return cast(T, cache[key])


def get_store(request: Request) -> Store:
    return _per_thread(request, Store)


def wants_json(request: Request) -> bool:
    """DIGITS' rule: the path ends in .json, or Accept prefers JSON over HTML."""
    if request.url.path.endswith(".json"):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


# -- who is asking (kiln.accounts): a signed session cookie or an API token, nothing else ----------
SESSION_COOKIE = "kiln_session"
_NOBODY = object()
PUBLIC_PATHS = ("/login", "/logout", "/favicon.ico")


def get_accounts(request: Request) -> Accounts:
    """The accounts tables over the app's kiln.db."""
    return _per_thread(request, Accounts)


def signer(request: Request) -> SessionSigner:
    app = request.app
    if getattr(app.state, "session_signer", None) is None:
        app.state.session_signer = SessionSigner(load_secret(app.state.settings.data_dir))
    return app.state.session_signer


class LoginRequired(Exception):
    """HTML requests are redirected to /login; JSON ones (and any but GET) get 401."""

    def __init__(self, message: str = "", api: bool = False) -> None:
        super().__init__(message or "Log in first: POST /login, or send an API token (Authorization: Bearer ...).")
        self.message = str(self)
        self.api = api  # a script's request (a bad token): always the JSON 401


def current_user(request: Request) -> User | None:
    """The user of this request, from its session cookie or its bearer token; None for nobody.

    A `username` form field, query parameter or plain cookie is never looked at. A forged or
    tampered cookie, an expired or ended session is nobody; a wrong token is refused (401)."""
    cached = getattr(request.state, "kiln_user", _NOBODY)
    if cached is not _NOBODY:
        return cached  # type: ignore[return-value]
    mode = request.app.state.settings.auth_mode
    user: User | None = None
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        user = get_accounts(request).user_for_token(credentials.strip(), mode)
        if user is None:
            raise LoginRequired("This API token is not valid: revoked, its user deleted, or mistyped.", api=True)
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        session_id = signer(request).loads(cookie) if cookie else None
        if session_id:
            user = get_accounts(request).user_for_session(session_id, mode)
    request.state.kiln_user = user
    return user


def require_user(request: Request) -> User:
    user = current_user(request)
    if user is None:
        raise LoginRequired()
    return user


def require_admin(request: Request) -> User:
    user = require_user(request)
    if not user.is_admin:
        raise HTTPException(403, "Only an admin may do this.")
    return user


def check_access(request: Request) -> None:
    """Every route's first dependency: a change (any method but GET/HEAD) needs a user, and with
    accounts every page does too; /login and /logout are open. New routes are covered too."""
    if request.url.path in PUBLIC_PATHS:
        return
    if request.method in ("GET", "HEAD") and request.app.state.settings.auth_mode == "loopback":
        current_user(request)  # a bad token is still refused
        return
    require_user(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
UserDep = Annotated[User, Depends(require_user)]
AdminDep = Annotated[User, Depends(require_admin)]
AccountsDep = Annotated[Accounts, Depends(get_accounts)]


def job_or_404(store: Store, job_id: str, type_: str | None = None) -> Job:
    job = store.get_job(job_id)
    if job is None or (type_ and job.type != type_):
        raise HTTPException(404, f"Job {job_id} not found.")
    return job
