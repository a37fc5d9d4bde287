"""Another site cannot drive kiln: allowed Host names, same-origin state changes, CSRF tokens on
browser requests, no NUL characters in what a request names, security headers on every answer,
and one error shape for every refusal.

The rules, in the order the middleware applies them to each HTTP request:

1. Host. The Host header must name kiln: a loopback name (localhost, 127.0.0.1, [::1]), any IP
   address, the address given to ``--host``, or a name in KILN_ALLOWED_HOSTS (``*``: any). Ports are
   ignored. Anything else is a 400. A DNS-rebinding page always arrives with its own host name, so it
   cannot read kiln's answers through the user's browser.
2. Origin. A state change (POST, PUT, PATCH, DELETE) that says where it comes from must come from
   kiln's own origin: ``Origin`` (else ``Referer``) names the Host the request was sent to, or a name
   listed in KILN_ALLOWED_HOSTS (a reverse proxy that rewrites Host); ``Sec-Fetch-Site: cross-site``
   or ``same-site`` without either is refused too. 403 otherwise. A request with none of these
   headers (curl, scripts, kiln.client) is not a browser's and passes.
3. CSRF. A state change from a browser (it sends Origin, Referer or Sec-Fetch-Site) must carry the
   CSRF token of its ``kiln_csrf`` cookie: the ``X-CSRF-Token`` header (kiln.js sends it) or the
   ``csrf_token`` form field (``{{ csrf_field() }}`` puts it first in every form; it must lie in the
   first 64 KB of the body). The token is an HMAC of the cookie under a key kept in the data dir
   (``csrf.key``, 0600), so another site can neither read nor forge it. Requests with an
   ``Authorization: Bearer`` token carry no ambient credential and are exempt. 403 otherwise.
4. NUL. A NUL character in the path, the query or a form field (its name or value; never an
   uploaded file's bytes) is a 400, found while the body streams to the route.
5. Headers. Every answer gets nosniff, a Content-Security-Policy with ``frame-ancestors 'none'``,
   ``X-Frame-Options: DENY`` and ``Referrer-Policy: same-origin`` (unless the route set its own).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import pass_context
from markupsafe import Markup
from python_multipart import MultipartParser, QuerystringParser
from python_multipart.multipart import parse_options_header
from starlette.datastructures import MutableHeaders

from kiln.config import LOOPBACK, Settings
from kiln.web.deps import wants_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_COOKIE = "kiln_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
CSRF_WINDOW = 64 * 1024  # a form's token must arrive within the first bytes of its body
_COOKIE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_MAX_TOKEN = 256

# kiln's pages run their own scripts (and inline ones), Plotly's bundle from /vendor, blob: images
# (a picked file's preview); nothing is loaded from elsewhere, nothing may frame kiln.
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
# FastAPI's /docs and /redoc pages load Swagger UI / ReDoc from its CDN.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' data: https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'none'"
)
# Files of a job folder are data, never a page: nothing in them runs.
FILES_CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox; frame-ancestors 'none'"
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
ERROR_TYPES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    413: "TooLarge",
    429: "TooManyRequests",
    500: "InternalError",
    503: "Unavailable",
}


# -- error answers --------------------------------------------------------------------------------
def error_response(
    request: Request, status: int, message: str, type_: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """kiln's error answer: ``{"error": {"message", "type"}}`` for JSON clients (and PUT/DELETE, which
    only scripts send), the error page for browsers."""
    type_ = type_ or ERROR_TYPES.get(status, "Error")
    if wants_json(request) or request.method not in ("GET", "HEAD", "POST"):
        return JSONResponse({"error": {"message": message, "type": type_}}, status_code=status, headers=headers)
    templates = request.app.state.templates
    return templates.TemplateResponse(
        request, "error.html", {"status": status, "message": message}, status_code=status, headers=headers
    )


def security_headers(path: str) -> dict[str, str]:
    csp = DOCS_CSP if path.startswith(("/docs", "/redoc")) else CSP
    return {**HEADERS, "Content-Security-Policy": csp}


# -- Host and Origin ------------------------------------------------------------------------------
def split_host(value: str) -> tuple[str, str | None]:
    """``Host``-style ``name[:port]`` (IPv6 in brackets) -> (lowercase name without brackets, port)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest[1:] if rest.startswith(":") and rest[1:] else None
    name, sep, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "")
    return name.rstrip("."), port if sep and port else None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class HostRule:
    """Which Host names reach kiln, and which other origins may change things through it."""

    def __init__(self, settings: Settings) -> None:
        listed = [split_host(n)[0] for n in settings.allowed_hosts.replace(";", ",").split(",") if n.strip()]
        self.any_host = "*" in listed
        self.trusted = frozenset(n for n in listed if n != "*")  # also accepted as an Origin's name
        own = {split_host(n)[0] for n in LOOPBACK} | {split_host(settings.host)[0]}
        self.names = frozenset(own | self.trusted)

    def host_ok(self, host: str | None) -> bool:
        if host is None:  # HTTP/1.0 without Host: nothing to rebind
            return True
        name, _ = split_host(host)
        return self.any_host or name in self.names or _is_ip(name)

    def origin_ok(self, origin: str, host: str | None) -> bool:
        """An Origin or Referer URL is kiln's own: the host it was sent to, or a trusted name."""
        try:
            parts = urlsplit(origin)
            name, port = (parts.hostname or "").rstrip("."), parts.port
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not name:
            return False
        if name in self.trusted:
            return True
        if host is None:
            return False
        host_name, host_port = split_host(host)
        default = "443" if parts.scheme == "https" else "80"
        return name == host_name and str(port or default) == (host_port or default)


# -- CSRF tokens ----------------------------------------------------------------------------------
def load_key(data_dir: Path) -> bytes:
    """The data dir's CSRF key (32 random bytes, 0600), created on first use; it outlives restarts so
    that open pages keep working."""
    path = data_dir / "csrf.key"
    try:
        old: bytes | None = path.read_bytes()
    except FileNotFoundError:
        old = None
    if old is not None and len(old) >= 32:
        return old
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".csrf.key.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if old is None:
            os.link(tmp, path)  # a server starting beside this one may have won: keep its key
        else:
            os.replace(tmp, path)  # a truncated key is replaced
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


class Csrf:
    """A request's CSRF cookie (read, or made when a page first needs a token) and its token."""

    def __init__(self, key: bytes, cookie: str | None) -> None:
        self.key = key
        self.cookie = cookie if cookie and _COOKIE_RE.match(cookie) else None
        self.new_cookie = False

    def token(self) -> str:
        if self.cookie is None:
            self.cookie, self.new_cookie = secrets.token_urlsafe(32), True
        return self._sign(self.cookie)

    def _sign(self, cookie: str) -> str:
        digest = hmac.new(self.key, b"kiln-csrf:" + cookie.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def valid(self, token: str | None) -> bool:
        if not token or not self.cookie or len(token) > _MAX_TOKEN:
            return False
        return hmac.compare_digest(token.encode(errors="replace"), self._sign(self.cookie).encode())


def _csrf_of(request: Any) -> Csrf | None:
    return request.scope.get("kiln.csrf") if request is not None else None


@pass_context
def csrf_token(context: Any) -> str:
    """The page's CSRF token (``<meta name="csrf-token">``, read by kiln.js)."""
    csrf = _csrf_of(context.get("request"))
    return csrf.token() if csrf else ""


@pass_context
def csrf_field(context: Any) -> Markup:
    """``{{ csrf_field() }}``: the hidden CSRF field, first in every form that posts."""
    csrf = _csrf_of(context.get("request"))
    if csrf is None:
        return Markup("")
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, csrf.token())


# -- form bodies ----------------------------------------------------------------------------------
class FormScanner:
    """Watches a urlencoded or multipart body go by, chunk by chunk, without holding it: finds the
    CSRF field's value and notes a NUL character in any field name or value (uploaded files' bytes
    are data and are not looked at). A body it cannot parse is left to the route's own parser."""

    def __init__(self, content_type: str) -> None:
        ctype, params = parse_options_header(content_type)
        self.token: str | None = None
        self.nul = False
        self.ended = False
        self._name = bytearray()
        self._value = bytearray()
        self._tail = b""
        self._file = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self.parser: Any = None
        self.urlencoded = ctype == b"application/x-www-form-urlencoded"
        if self.urlencoded:
            self.parser = QuerystringParser(
                {
                    "on_field_start": self._start,
                    "on_field_name": self._qs_name,
                    "on_field_data": self._qs_data,
                    "on_field_end": self._end,
                    "on_end": self._finish,
                }
            )
        elif ctype == b"multipart/form-data" and params.get(b"boundary"):
            self.parser = MultipartParser(
                params[b"boundary"],
                {
                    "on_part_begin": self._start,
                    "on_header_field": lambda d, s, e: self._header_name.extend(d[s:e]),
                    "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
                    "on_header_end": self._header_end,
                    "on_part_data": self._part_data,
                    "on_part_end": self._end,
                    "on_end": self._finish,
                },
            )

    def feed(self, chunk: bytes) -> None:
        if self.parser is None or not chunk:
            return
        try:
            self.parser.write(chunk)
        except Exception:  # malformed: the route's parser answers it (400)
            self.parser = None

    def close(self) -> None:
        """The body ended: a urlencoded body's last field has no '&' to end it (a form of one field)."""
        if self.parser is not None and not self.ended:
            try:
                self.parser.finalize()
            except Exception:  # malformed: the route's parser answers it (400)
                self.parser = None

    def _start(self) -> None:
        self._name.clear()
        self._value.clear()
        self._tail = b""
        self._file = False

    def _finish(self) -> None:
        self.ended = True

    def _is_csrf(self) -> bool:
        name = bytes(self._name)
        return (unquote_plus(name.decode("latin-1")) if self.urlencoded else name.decode("latin-1")) == CSRF_FIELD

    def _keep(self, data: bytes) -> None:
        if len(self._value) <= _MAX_TOKEN:
            self._value.extend(data[: _MAX_TOKEN + 1])

    def _qs_name(self, data: bytes, start: int, end: int) -> None:
        self._name.extend(data[start:end][: 4096 - len(self._name)])
        self._qs_check(data[start:end])

    def _qs_data(self, data: bytes, start: int, end: int) -> None:
        self._qs_check(data[start:end])
        if self._is_csrf():
            self._keep(data[start:end])

    def _qs_check(self, piece: bytes) -> None:
        seen = self._tail + piece  # "%00" may be split between two chunks
        if b"\x00" in piece or b"%00" in seen:
            self.nul = True
        self._tail = seen[-2:]

    def _header_end(self) -> None:
        name, value = bytes(self._header_name).lower(), bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()
        if b"\x00" in value:
            self.nul = True
        if name == b"content-disposition":
            _, options = parse_options_header(value)
            self._name[:] = options.get(b"name", b"")[:4096]
            self._file = b"filename" in options

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file:
            return
        piece = data[start:end]
        if b"\x00" in piece:
            self.nul = True
        if self._is_csrf():
            self._keep(piece)

    def _end(self) -> None:
        if self._is_csrf():
            raw = bytes(self._value)
            if self.urlencoded:
                raw = unquote_plus(raw.decode("latin-1")).encode("latin-1")
            if self.token is None and len(raw) <= _MAX_TOKEN:
                self.token = raw.decode("latin-1")
        self._name.clear()


NUL_MESSAGE = "A NUL character (\\0, %00) is not allowed in a path, a query or a form field."


class NulCharacter(HTTPException):
    """Raised from the body's stream into the route that reads it: kiln's 400."""

    def __init__(self) -> None:
        super().__init__(400, NUL_MESSAGE)


def _is_form(content_type: str) -> bool:
    ctype = content_type.split(";", 1)[0].strip().lower()
    return ctype in ("application/x-www-form-urlencoded", "multipart/form-data")


# -- the middleware ---------------------------------------------------------------------------------
class SecurityMiddleware:
    """Pure ASGI (live event streams pass through untouched): rules 1-5 of this module's docstring."""

    def __init__(self, app: Any, settings: Settings, key: bytes) -> None:
        self.app = app
        self.hosts = HostRule(settings)
        self.key = key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        headers = request.headers
        csrf: Csrf | None = None

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in security_headers(scope["path"]).items():
                    out.setdefault(name, value)
                if csrf is not None and csrf.new_cookie:
                    out.append("set-cookie", self._cookie(csrf.cookie or "", scope))
            await send(message)

        async def refuse(status: int, message: str) -> None:
            await error_response(request, status, message)(scope, receive, send_secured)

        host = headers.get("host")
        if not self.hosts.host_ok(host):
            name = split_host(host or "")[0][:100]
            await refuse(
                400,
                f"Host {name!r} is not one kiln answers to: add it to KILN_ALLOWED_HOSTS (--allowed-hosts) "
                "if this server is meant to be reached by that name.",
            )
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"] or b"\x00" in scope["query_string"]:
            await refuse(400, NUL_MESSAGE)
            return
        csrf = scope["kiln.csrf"] = Csrf(self.key, request.cookies.get(CSRF_COOKIE))

        content_type = headers.get("content-type", "")
        scanner = FormScanner(content_type) if _is_form(content_type) else None
        body = _watched(receive, scanner) if scanner is not None else receive
        if request.method in STATE_CHANGING:
            problem = self._cross_site(headers)
            if problem:
                await refuse(403, problem)
                return
            if self._from_browser(headers):
                token = headers.get(CSRF_HEADER)
                if token is None and scanner is not None:
                    buffered = await self._read_until_token(receive, scanner)
                    body = _replay(buffered, body)  # the scanner has seen these: replayed around it
                    if scanner.nul:
                        await refuse(400, NUL_MESSAGE)
                        return
                    token = scanner.token
                if not csrf.valid(token):
                    await refuse(
                        403,
                        "This request was refused: its CSRF token is missing or out of date. Reload the page "
                        "and try again.",
                    )
                    return
        await self.app(scope, body, send_secured)

    def _cross_site(self, headers: Any) -> str | None:
        """Why a state change comes from another site, or None."""
        host = headers.get("host")
        origin = headers.get("origin")
        referer = headers.get("referer")
        if origin is not None:
            if origin != "null" and self.hosts.origin_ok(origin, host):
                return None
            return f"Cross-site request refused: Origin {origin[:100]!r} is not this kiln."
        if referer:
            if self.hosts.origin_ok(referer, host):
                return None
            return "Cross-site request refused: it was sent from a page that is not this kiln's."
        if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
            return "Cross-site request refused: it was sent from another site."
        return None

    @staticmethod
    def _from_browser(headers: Any) -> bool:
        if headers.get("authorization", "").lower().startswith("bearer "):
            return False  # an API token is no ambient credential: no page can make a browser send it
        return any(h in headers for h in ("origin", "referer", "sec-fetch-site"))

    @staticmethod
    async def _read_until_token(receive: Receive, scanner: FormScanner) -> list[Message]:
        """Read the body until the CSRF field has gone by (or CSRF_WINDOW bytes, or its end); the
        messages read are replayed to the route."""
        buffered: list[Message] = []
        size = 0
        while scanner.token is None and size <= CSRF_WINDOW and not scanner.nul:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            scanner.feed(chunk)
            if not message.get("more_body", False):
                scanner.close()
                break
        return buffered

    @staticmethod
    def _cookie(value: str, scope: Scope) -> str:
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        return f"{CSRF_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax{secure}"


def _replay(buffered: list[Message], receive: Receive) -> Receive:
    pending = list(buffered)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _watched(receive: Receive, scanner: FormScanner) -> Receive:
    """The body as the route reads it; a chunk with a NUL in a field is never handed over."""

    async def watched() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            scanner.feed(message.get("body", b""))
            if scanner.nul:
                raise NulCharacter()
        return message

    return watched


# Swagger UI's requests go through fetch: the ones that change something get the page's token.
_DOCS_FETCH = """<script>
(() => {
  const token = %s, plain = window.fetch;
  window.fetch = (input, init = {}) => {
    const method = (init.method || (input instanceof Request ? input.method : "GET")).toUpperCase();
    if (method !== "GET" && method !== "HEAD") {
      init = {...init, headers: new Headers(init.headers || (input instanceof Request ? input.headers : {}))};
      init.headers.set("X-CSRF-Token", token);
    }
    return plain(input, init);
  };
})();
</script>"""


def _docs(app: FastAPI) -> None:
    from fastapi.openapi.docs import get_swagger_ui_html

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> Response:
        page = get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API")
        csrf = _csrf_of(request)
        script = _DOCS_FETCH % json.dumps(csrf.token() if csrf else "")
        return HTMLResponse(bytes(page.body).decode().replace("<head>", "<head>" + script, 1))


def install(app: FastAPI, settings: Settings) -> None:
    """The middleware (outermost: call after every other add_middleware), the template globals, /docs."""
    app.add_middleware(SecurityMiddleware, settings=settings, key=load_key(settings.data_dir))
    app.state.templates.env.globals.update(csrf_token=csrf_token, csrf_field=csrf_field)
    if app.docs_url is None:
        _docs(app)
