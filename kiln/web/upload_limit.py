"""The request body limit (KILN_MAX_UPLOAD_MB), counted on the bytes actually received.

A Content-Length over the limit is refused before anything is read; a body without one (chunked
transfer encoding) or one that lies is counted as it streams, and the read that crosses the limit
raises a 413 into whatever is reading it (the route's form parser), so a route never holds more.
Both answers are kiln's error shape (kiln.web.security.error_response), naming the setting.

Starlette's own RequestBodyLimitMiddleware counts the same way, but answers a declared
Content-Length over the limit with a plain-text 413 that replaces any response the app sends,
so kiln keeps this small one instead.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SETTING = "KILN_MAX_UPLOAD_MB"


def too_large_message(max_mb: int) -> str:
    return f"Upload too large: over {max_mb} MB ({SETTING})."


class BodyTooLarge(HTTPException):
    """Raised from the body's stream when it has gone past the limit: kiln's 413."""

    def __init__(self, max_mb: int) -> None:
        super().__init__(413, too_large_message(max_mb))


class BodyLimit:
    """ASGI middleware: at most max_mb MB of request body per request."""

    def __init__(self, app: ASGIApp, max_mb: int) -> None:
        self.app = app
        self.max_mb = max_mb
        self.max_bytes = max_mb * 2**20

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_mb)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:  # read outside any route (the exception handlers answer inside one)
            if started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        from kiln.web.security import error_response

        response = error_response(Request(scope, receive), 413, too_large_message(self.max_mb))
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)
