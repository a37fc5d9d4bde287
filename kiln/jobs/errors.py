"""Errors that carry their own message for the user: what failed, and what to do about it.

The web turns them into its JSON/HTML error with `status`, the CLI into a line on stderr and a
non-zero exit, the worker into the job's error text.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """A failure whose `message` already says what failed and what to do; shown as is."""

    status = 400  # the HTTP status the web answers with

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class ActionError(UserFacingError):
    """A job action (abort, delete, resume, edit ...) that was refused; status 403 unless said."""

    status = 403


class JobNotFound(ActionError):
    status = 404

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Job {job_id} not found.")


def failure_message(exc: BaseException) -> str:
    """The error text of a job that raised `exc` (its traceback goes to the job log)."""
    if isinstance(exc, UserFacingError):
        return exc.message
    msg = str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return f"A file is missing: {msg}. Check the path, then clone the job."
    if isinstance(exc, MemoryError):
        return "Out of memory. Lower the batch size or the image size, then clone the job."
    if "out of memory" in msg.lower():  # CUDA's OutOfMemoryError and allocator failures say so
        return f"Out of memory ({msg}). Lower the batch size, then clone or resume the job."
    return (
        f"Unexpected error ({type(exc).__name__}: {msg}). The job log has the details; "
        "resume or clone the job, and report it if it happens again."
    )
