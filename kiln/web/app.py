"""The app factory: settings, scheduler, templates, error shapes, routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

import kiln
from kiln.config import Settings
from kiln.jobs.scheduler import Scheduler
from kiln.web import formatting
from kiln.web.deps import LoginRequired, wants_json

HERE = Path(__file__).parent


def create_app(settings: Settings | None = None, run_scheduler: bool = True) -> FastAPI:
    settings = settings or Settings.from_env()
    settings.jobs_dir.mkdir(parents=True, exist_ok=True)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if run_scheduler:
            app.state.scheduler.start()
        yield
        if run_scheduler:
            app.state.scheduler.stop()

    app = FastAPI(
        title="kiln",
        version=kiln.__version__,
        lifespan=lifespan,
        description="Train image classifiers in the browser. DIGITS 6.1.1-compatible JSON API.",
    )
    app.state.settings = settings
    app.state.scheduler = Scheduler(settings)
    app.state.templates = _templates()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _error_handlers(app)
    _upload_limit(app, settings.max_upload_mb)

    from kiln.web import routes_auth, routes_datasets, routes_events, routes_home, routes_jobs, routes_models

    for module in (routes_auth, routes_home, routes_jobs, routes_events, routes_datasets, routes_models):
        app.include_router(module.router)
    return app


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.globals.update(version=kiln.__version__, **formatting.GLOBALS)
    templates.env.filters.update(formatting.FILTERS)
    return templates


def _upload_limit(app: FastAPI, max_mb: int) -> None:
    """Refuse bodies over the limit before reading them (a 413 that names the setting)."""

    @app.middleware("http")
    async def limit(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_mb * 2**20:
            return JSONResponse(
                {"error": {"message": f"Upload too large: over {max_mb} MB (KILN_MAX_UPLOAD_MB).", "type": "TooLarge"}},
                status_code=413,
            )
        return await call_next(request)


def _error_handlers(app: FastAPI) -> None:
    def render(request: Request, status: int, message: str, type_: str) -> Response:
        if wants_json(request) or request.method in ("PUT", "DELETE"):
            return JSONResponse({"error": {"message": message, "type": type_}}, status_code=status)
        return app.state.templates.TemplateResponse(
            request, "error.html", {"status": status, "message": message}, status_code=status
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        names = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 413: "TooLarge"}
        return render(request, exc.status_code, str(exc.detail), names.get(exc.status_code, "HTTPException"))

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if wants_json(request) or request.method != "GET":
            return JSONResponse(
                {
                    "error": {
                        "message": "Log in first (a username cookie, or a username field).",
                        "type": "Unauthorized",
                    }
                },
                status_code=401,
            )
        return RedirectResponse(f"/login?next={request.url.path}", status_code=302)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors: dict[str, list[str]] = {}
        for err in exc.errors():
            field = str(err["loc"][-1]) if err.get("loc") else "request"
            errors.setdefault(field, []).append(err.get("msg", "invalid"))
        return JSONResponse({"errors": errors}, status_code=400)
