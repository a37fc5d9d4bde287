"""Turn an exception from a job into a message that says what failed and what to do."""
from __future__ import annotations


def explain(exc: Exception) -> str:
    name = type(exc).__name__
    known = {
        "DatasetInputError": "The dataset source is not usable: {msg} Fix the folder or lists, then clone the job.",
        "TrainingDiverged": "{msg}",
        "UserFacingError": "{msg}",
        "FileNotFoundError": "A file is missing: {msg}. Check the path, then clone the job.",
        "MemoryError": "Out of memory. Lower the batch size or the image size, then clone the job.",
    }
    msg = str(exc).strip() or name
    if name in known:
        return known[name].format(msg=msg)
    if "out of memory" in msg.lower():
        return f"Out of memory ({msg}). Lower the batch size, then clone or resume the job."
    return (f"Unexpected error ({name}: {msg}). The job log has the details; "
            "resume or clone the job, and report it if it happens again.")
