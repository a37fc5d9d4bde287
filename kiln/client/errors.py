"""What the client raises: one KilnError family carrying the server's own message and HTTP status.

The server answers in three shapes (docs/api.md): ``{"error": {"message", "type"}}``, a form's
``{"errors": {field: [message, ...]}}`` (400), and, for a few routes, ``{"error": "message"}`` or
plain text. All become a KilnError subclass chosen by the status; form errors keep their fields.
"""

from __future__ import annotations

import json
from typing import Any


class KilnError(Exception):
    """A refusal or failure reported by kiln (or on the way to it).

    ``message`` is the server's own words, ``status`` the HTTP status (0 when no answer came),
    ``errors`` the form errors by field (``{}`` when the answer had none), ``kind`` the server's
    error type (``BadRequest``, ``NotFound``...), ``detail`` the rest of its ``error`` object (for a
    network text: ``line``, ``column``, ``kind``, ``expected``)."""

    def __init__(
        self,
        message: str,
        status: int = 0,
        errors: dict[str, list[str]] | None = None,
        kind: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.errors: dict[str, list[str]] = errors or {}
        self.kind = kind
        self.detail: dict[str, Any] = detail or {}
        super().__init__(f"{message} (HTTP {status})" if status else message)


class BadRequest(KilnError):
    """400: the request was refused; ``errors`` names each field and what is wrong with it."""


class Unauthorized(KilnError):
    """401: log in (``Client.login``) or send a valid API token."""


class Forbidden(KilnError):
    """403: not yours to change, or refused by the server's cross-site checks."""


class NotFound(KilnError):
    """404: no such job, file or route."""


class TooLarge(KilnError):
    """413: an upload over the server's limit."""


class Unprocessable(KilnError):
    """422: the server understood but cannot do it (a network that does not export)."""


class TooManyRequests(KilnError):
    """429: too many failed logins as that user; the message says when to try again."""


class Busy(KilnError):
    """503: the server's heavy-work queue is full; the client already retried a few times."""


class ServerError(KilnError):
    """5xx: kiln failed on its own; its log has the details."""


class Unreachable(KilnError):
    """No answer: kiln is not running at that address, or the connection broke."""


class JobFailed(KilnError):
    """A job waited for ended in Error, Aborted or Interrupted; ``job`` is its last status."""

    def __init__(self, message: str, job: dict[str, Any]) -> None:
        super().__init__(message, 0, kind=str(job.get("status", "")))
        self.job = job


class WaitTimeout(KilnError):
    """A job was still running when the wait's timeout ran out."""


BY_STATUS: dict[int, type[KilnError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: TooLarge,
    422: Unprocessable,
    429: TooManyRequests,
    503: Busy,
}


def error_for(status: int, body: bytes, content_type: str = "") -> KilnError:
    """The KilnError for an error answer: its class by status, its message and fields from the body."""
    message, errors, detail = _parse(body, content_type)
    cls = BY_STATUS.get(status) or (ServerError if status >= 500 else KilnError)
    kind = str(detail.pop("type", "") or "")
    return cls(message or f"HTTP {status} with no message", status, errors, kind, detail)


def _parse(body: bytes, content_type: str) -> tuple[str, dict[str, list[str]], dict[str, Any]]:
    """(message, field errors, the error object's other keys) of an error answer."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        data = json.loads(text) if text[:1] in "{[" else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return _plain(text, content_type), {}, {}
    errors = _field_errors(data.get("errors"))
    error = data.get("error")
    detail: dict[str, Any] = {}
    if isinstance(error, dict):
        message = str(error.get("message") or "")
        detail = {k: v for k, v in error.items() if k != "message"}
    elif error:
        message = str(error)
    else:
        message = str(data.get("detail") or "")
    if errors and not message:
        message = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items())
    return message, errors, detail


def _field_errors(raw: Any) -> dict[str, list[str]]:
    if not isinstance(raw, dict):
        return {}
    return {str(k): [str(m) for m in (v if isinstance(v, list) else [v])] for k, v in raw.items()}


def _plain(text: str, content_type: str) -> str:
    """A text answer as is; an HTML error page reduced to a hint (JSON is always asked for)."""
    if "html" in content_type or text.startswith("<"):
        return "the server answered with an HTML page instead of JSON"
    return text[:2000]
