"""Username login as DIGITS had it (reference 6.2): no password, a cookie, so jobs have owners."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from kiln.web.deps import check_username

router = APIRouter(tags=["auth"])


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return request.app.state.templates.TemplateResponse(request, "login.html", {"next": next, "error": None})


@router.post("/login")
async def login(request: Request) -> Response:
    form = await request.form()
    name = str(form.get("username", "")).strip()
    target = _safe_next(str(form.get("next") or request.query_params.get("next") or "/"))
    problem = check_username(name)
    if problem:
        return request.app.state.templates.TemplateResponse(
            request, "login.html", {"next": target, "error": problem}, status_code=400
        )
    response = RedirectResponse(target, status_code=302)
    response.set_cookie("username", name, httponly=False, samesite="lax")
    return response


@router.api_route("/logout", methods=["GET", "POST"])
def logout(next: str = "/") -> Response:
    response = RedirectResponse(_safe_next(next), status_code=302)
    response.delete_cookie("username")
    return response
