"""The app factory: settings, scheduler, templates, error shapes, routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

import kiln
from kiln.accounts import SessionSigner, load_secret
from kiln.config import Settings
from kiln.jobs.scheduler import Scheduler
from kiln.login_throttle import LoginThrottle
from kiln.web import formatting, offload, security
from kiln.web.deps import LoginRequired, check_access, current_user, wants_json

HERE = Path(__file__).parent


def create_app(settings: Settings | None = None, run_scheduler: bool = True) -> FastAPI:
    settings = settings or Settings.from_env()
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_scheduler:
            app.state.scheduler.start()
        yield
        offload.shutdown(app)  # the heavy threads: queued calls cancelled, running ones finish
        if run_scheduler:
            app.state.scheduler.stop()

    app = FastAPI(
        title="kiln",
        version=kiln.__version__,
        lifespan=lifespan,
        description="Train image classifiers in the browser. DIGITS 6.1.1-compatible JSON API.",
        docs_url=None,  # kiln.web.security serves /docs: its "Try it out" requests carry the CSRF token
        dependencies=[Depends(check_access)],  # who may do what: kiln.web.deps.check_access
    )
    app.state.settings = settings
    app.state.session_signer = SessionSigner(load_secret(settings.data_dir))  # secret.key, 0600, made on first start
    app.state.scheduler = Scheduler(settings)
    app.state.login_throttle = LoginThrottle()
    app.state.templates = _templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _error_handlers(app)
    _upload_limit(app, settings.max_upload_mb)
    security.install(app, settings)  # outermost, after every other middleware: Host, Origin, CSRF, NUL, headers

    from kiln.web import (
        routes_auth,
        routes_compare,
        routes_datasets,
        routes_evaluations,
        routes_events,
        routes_export,
        routes_home,
        routes_jobs,
        routes_models,
        routes_networks,
        routes_pretrained,
        routes_store,
    )

    modules = (
        routes_auth,
        routes_home,
        routes_jobs,
        routes_events,
        routes_datasets,
        routes_compare,  # before routes_models: /models/compare is not a model id
        routes_models,
        routes_networks,
        routes_evaluations,
        routes_export,
        routes_pretrained,
        routes_store,
    )
    for module in modules:
        app.include_router(module.router)
    return app


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates", context_processors=[_user_context])
    templates.env.globals.update(version=kiln.__version__, **formatting.GLOBALS)
    templates.env.filters.update(formatting.FILTERS)
    return templates


def _user_context(request: Request) -> dict[str, object]:
    """Every page knows who is logged in (the top bar), from the session or token only."""
    try:
        user = current_user(request)
    except LoginRequired:
        user = None
    return {"user": user, "auth_mode": request.app.state.settings.auth_mode}


def _upload_limit(app: FastAPI, max_mb: int) -> None:
    """Refuse bodies over the limit, counted on the bytes received (chunked ones too): kiln's 413."""
    from kiln.web.upload_limit import BodyLimit

    app.add_middleware(BodyLimit, max_mb=max_mb)


def _error_handlers(app: FastAPI) -> None:
    """Every error in kiln's shape (security.error_response), Starlette's own 404/405 included."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":  # Starlette's: no route matched
            message = "Not found: nothing at this address."
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"{request.method} is not allowed here" + (f" (only {allowed})." if allowed else ".")
        return security.error_response(request, exc.status_code, message, headers=dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        """A bug, not the user's input: no traceback in the answer (the server log has it)."""
        message = "Internal error: kiln's log has the details."
        try:
            response = security.error_response(request, 500, message)
        except Exception:  # the error page itself failed
            response = JSONResponse({"error": {"message": message, "type": "InternalError"}}, status_code=500)
        response.headers.update(security.security_headers(request.url.path))  # this answer skips the middleware
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        """A page asked for without a user goes to /login; anything else is kiln's 401 (a form posted
        by a browser whose session ended: the error page, whose top bar links to /login)."""
        if request.method in ("GET", "HEAD") and not exc.api and not wants_json(request):
            return RedirectResponse(f"/login?next={request.url.path}", status_code=302)
        bearer = {"WWW-Authenticate": "Bearer"}
        if exc.api:
            return JSONResponse({"error": {"message": exc.message, "type": "Unauthorized"}}, 401, headers=bearer)
        return security.error_response(request, 401, exc.message, "Unauthorized", headers=bearer)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors: dict[str, list[str]] = {}
        for err in exc.errors():
            field = str(err["loc"][-1]) if err.get("loc") else "request"
            errors.setdefault(field, []).append(err.get("msg", "invalid"))
        return JSONResponse({"errors": errors}, status_code=400)
