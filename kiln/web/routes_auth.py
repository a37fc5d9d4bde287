"""Logging in and out, the admin's users, a user's API tokens (kiln.accounts does the work).

On loopback, DIGITS' login by username alone (`curl localhost:5000/login -c cookie -XPOST -F
username=fred`, then `-b cookie`); with accounts, a password too. Either way the answer is a
signed, HttpOnly, SameSite=Lax session cookie; scripts may instead send an API token.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from kiln.accounts import SESSION_SECONDS, AccountError, Accounts, LoginFailed, User
from kiln.jobs.errors import UserFacingError
from kiln.login_throttle import LoginThrottle
from kiln.web import security
from kiln.web.deps import SESSION_COOKIE, AccountsDep, AdminDep, UserDep, current_user, signer, wants_json

router = APIRouter(tags=["auth"])
FormText = Annotated[str, Form()]


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith(("//", "/\\")) else "/"


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status)


def _login_page(request: Request, accounts: AccountsDep, next: str, error: str | None, status: int) -> Response:
    mode = request.app.state.settings.auth_mode
    context = {"next": next, "error": error, "mode": mode, "has_accounts": accounts.has_users()}
    return _page(request, "login.html", context, status)


@router.get("/login")
def login_page(request: Request, accounts: AccountsDep, next: str = "/") -> Response:
    return _login_page(request, accounts, _safe_next(next), None, 200)


@router.post("/login")
def login(
    request: Request,
    accounts: AccountsDep,
    username: FormText = "",
    password: FormText = "",
    next: FormText = "",
) -> Response:
    """A sync route: the password hash is checked on a worker thread, never on the event loop."""
    target = _safe_next(next or request.query_params.get("next"))
    mode = request.app.state.settings.auth_mode
    try:
        user = _throttled_login(request.app.state.login_throttle, accounts, username, password, mode)
    except LoginFailed as exc:
        if wants_json(request):
            return security.error_response(request, exc.status, exc.message)
        return _login_page(request, accounts, target, exc.message, exc.status)
    _end_current_session(request, accounts)
    session_id = accounts.create_session(user.name, with_password=bool(password))
    if wants_json(request):
        response: Response = JSONResponse({"username": user.name, "is_admin": user.is_admin})
    else:
        response = RedirectResponse(target, status_code=302)
    response.set_cookie(
        SESSION_COOKIE,
        signer(request).dumps(session_id),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",  # behind a TLS proxy (uvicorn's proxy headers)
        path="/",
    )
    return response


def _throttled_login(throttle: LoginThrottle, accounts: Accounts, username: str, password: str, mode: str) -> User:
    """accounts.login behind the failed-login throttle (kiln.login_throttle); raises LoginFailed."""
    wait = throttle.wait_for(username)
    if wait:  # only names that passed check_username have failures counted
        raise LoginFailed(f"Too many failed logins as {username.strip()}: try again in {wait} s.", 429)
    try:
        user = accounts.login(username, password, mode)
    except LoginFailed as exc:
        if exc.status == 401 and password:  # a wrong guess; an empty password guesses nothing
            throttle.failed(username)
        raise
    throttle.succeeded(username)
    return user


def _end_current_session(request: Request, accounts: AccountsDep) -> None:
    cookie = request.cookies.get(SESSION_COOKIE)
    session_id = signer(request).loads(cookie) if cookie else None
    if session_id:
        accounts.end_session(session_id)


@router.get("/logout")
def logout_page(request: Request, next: str = "/") -> Response:
    """DIGITS' link: a page with the button (logging out is a POST, so no other site can do it)."""
    try:
        user = current_user(request)
    except Exception:
        user = None
    if user is None or user.via == "token":
        return RedirectResponse(_safe_next(next), status_code=302)
    return _page(request, "logout.html", {"next": _safe_next(next)})


@router.post("/logout")
def logout(request: Request, accounts: AccountsDep, next: FormText = "") -> Response:
    """Ends the session on the server (its cookie no longer works, even a copy) and clears the cookie."""
    _end_current_session(request, accounts)
    if wants_json(request):
        response: Response = JSONResponse({"username": None})
    else:
        response = RedirectResponse(_safe_next(next or request.query_params.get("next")), status_code=302)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


# -- users (admins) -----------------------------------------------------------------------------
def _refused(exc: UserFacingError) -> HTTPException:
    return HTTPException(exc.status, exc.message)


@router.get("/users.json")
def users_json(accounts: AccountsDep, admin: AdminDep) -> dict[str, Any]:
    return {"users": accounts.list_users()}


@router.get("/users")
def users_page(request: Request, accounts: AccountsDep, admin: AdminDep) -> Response:
    if wants_json(request):
        return JSONResponse({"users": accounts.list_users()})
    return _page(request, "users.html", {"users": accounts.list_users(), "error": None})


@router.post("/users")
def add_user(
    request: Request,
    accounts: AccountsDep,
    admin: AdminDep,
    username: FormText = "",
    password: FormText = "",
    is_admin: FormText = "",
) -> Response:
    """An admin creates an account (`is_admin` = on/true/1 for another admin)."""
    try:
        created = accounts.add_user(username, password, is_admin.lower() in ("on", "true", "1", "yes"))
    except AccountError as exc:
        if wants_json(request):
            return security.error_response(request, exc.status, exc.message)
        return _page(request, "users.html", {"users": accounts.list_users(), "error": exc.message}, exc.status)
    if wants_json(request):
        return JSONResponse(created, status_code=201)
    return RedirectResponse("/users", status_code=302)


@router.delete("/users/{name}")
def delete_user(name: str, accounts: AccountsDep, admin: AdminDep) -> Response:
    """The account, its tokens and sessions; its jobs stay (admins may change them)."""
    try:
        accounts.delete_user(name)
    except AccountError as exc:
        raise _refused(exc) from exc
    return JSONResponse({"deleted": name})


# -- a user's own account: password, API tokens ---------------------------------------------------
def _account_user(user: User, accounts: AccountsDep) -> None:
    if accounts.get_user(user.name) is None:
        raise HTTPException(
            403, f"{user.name} has no account (a username-only login): an admin creates one with kiln users add."
        )


def _account_page(request: Request, user: User, accounts: AccountsDep, **extra: Any) -> Response:
    context = {"account": accounts.get_user(user.name), "tokens": accounts.list_tokens(user.name)}
    return _page(request, "account.html", {**context, "new_token": None, "error": None, **extra})


@router.get("/account")
def account_page(request: Request, user: UserDep, accounts: AccountsDep) -> Response:
    if wants_json(request):
        return JSONResponse({"user": accounts.get_user(user.name), "tokens": accounts.list_tokens(user.name)})
    return _account_page(request, user, accounts)


@router.post("/account/tokens")
def create_token(request: Request, user: UserDep, accounts: AccountsDep, label: FormText = "") -> Response:
    """A new API token for scripts (`Authorization: Bearer <token>`): shown once, only its hash is kept."""
    _account_user(user, accounts)
    token_id, token = accounts.create_token(user.name, label)
    if wants_json(request):
        return JSONResponse({"id": token_id, "token": token, "label": label.strip()}, status_code=201)
    return _account_page(request, user, accounts, new_token=token)


@router.delete("/account/tokens/{token_id}")
def revoke_token(token_id: int, user: UserDep, accounts: AccountsDep) -> Response:
    """Revoke one of your tokens (an admin: anyone's)."""
    if not accounts.revoke_token(token_id, None if user.is_admin else user.name):
        raise HTTPException(404, f"Token {token_id} not found.")
    return JSONResponse({"revoked": token_id})


@router.post("/account/password")
def change_password(
    request: Request,
    user: UserDep,
    accounts: AccountsDep,
    current_password: FormText = "",
    new_password: FormText = "",
) -> Response:
    """A new password, given the current one; every session ends, so you log in again."""
    _account_user(user, accounts)
    if accounts.verify_password(user.name, current_password) is None:
        message = "The current password is wrong."
        if wants_json(request):
            return security.error_response(request, 400, message)
        return _account_page(request, user, accounts, error=message)
    try:
        accounts.set_password(user.name, new_password)
    except AccountError as exc:
        if wants_json(request):
            return security.error_response(request, exc.status, exc.message)
        return _account_page(request, user, accounts, error=exc.message)
    if wants_json(request):
        return JSONResponse({"username": user.name})
    return RedirectResponse("/login?next=/account", status_code=302)
