"""What a user can do to existing jobs: abort, resume, delete, edit, group, clone.

The one implementation behind the web routes and the `kiln jobs` commands. Refusals raise
ActionError (or JobNotFound) with the message to show and the HTTP status to answer with.
`user` is who asks: the web passes the logged-in kiln.accounts.User (its name alone, a str, is a
user who is no admin); None is the terminal, which may change any job (whoever runs the CLI owns
the data directory anyway). Owners change their jobs, admins every job.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kiln.accounts import User
from kiln.jobs.errors import ActionError, JobNotFound
from kiln.jobs.scheduler import abort_job
from kiln.store import Job, Store

Actor = User | str | None  # None: the terminal

RESUMABLE = ("Aborted", "Interrupted", "Error")


def get_job(store: Store, job_id: str, type_: str | None = None) -> Job:
    """The job, of `type_` when given; raises JobNotFound."""
    job = store.get_job(job_id)
    if job is None or (type_ and job.type != type_):
        raise JobNotFound(job_id)
    return job


def check_owner(job: Job, user: Actor) -> None:
    """Only the owner or an admin may change a job. A job without an owner (`kiln demo` makes one)
    is anyone's on a loopback server (and for a plain name, as in DIGITS), an admin's with accounts."""
    if user is None or getattr(user, "is_admin", False):
        return
    name = user if isinstance(user, str) else user.name
    if job.username is None:
        if isinstance(user, str) or user.loopback:
            return
        raise ActionError("Only an admin may change this job: it has no owner.")
    if job.username != name:
        raise ActionError(f"Only {job.username} may change this job.")


def owned_job(store: Store, job_id: str, user: Actor) -> Job:
    job = get_job(store, job_id)
    check_owner(job, user)
    return job


def abort(store: Store, job_id: str, user: Actor = None, wait: bool = False) -> Job:
    """Stop an active job (see scheduler.abort_job); with `wait`, once its worker has stopped."""
    job = owned_job(store, job_id, user)
    if not abort_job(store, job.id, wait=wait):
        raise ActionError("Job not aborted: it is not running.")
    return get_job(store, job.id)


def resume(store: Store, job_id: str, user: Actor = None) -> Job:
    """Queue an Aborted, Interrupted or failed job again; a model continues from its last snapshot."""
    job = owned_job(store, job_id, user)
    if not store.set_status(job.id, "Initialized", expect=RESUMABLE, note="resumed"):
        raise ActionError(f"Job not resumed: it is {job.status}. Only {', '.join(RESUMABLE)} jobs resume.")
    return get_job(store, job.id)


def delete(store: Store, jobs_dir: Path, job_id: str, user: Actor = None) -> None:
    """Remove a job and its folder; a running one is aborted first and its worker waited for."""
    job = owned_job(store, job_id, user)
    if job.type == "dataset":
        _refuse_if_used(store, job)
    if job.active:
        abort_job(store, job.id, wait=True)
        current = store.get_job(job.id)
        if current is not None and current.active:  # resumed meanwhile, or a worker we may not stop
            raise ActionError(f"Job not deleted: it is {current.status} again. Abort it, then delete it.", 409)
    store.delete_job(job.id)
    shutil.rmtree(jobs_dir / job.id, ignore_errors=True)


def _refuse_if_used(store: Store, dataset: Job) -> None:
    users = store.models_using(dataset.id)
    if users:
        names = ", ".join(f'"{m.name}"' for m in users)
        raise ActionError(
            f'Cannot delete "{dataset.name}" because {len(users)} model'
            f"{'s' if len(users) > 1 else ''} depend on it: {names}. Delete those models first."
        )


def edit(
    store: Store,
    job_id: str,
    user: Actor = None,
    *,
    name: str | None = None,
    notes: str | None = None,
    group: str | None = None,
) -> Job:
    """Rename a job, or change its notes or group; None leaves a field as it is."""
    job = owned_job(store, job_id, user)
    updates: dict[str, str] = {}
    if name is not None:
        if not name.strip():
            raise ActionError("job_name: a name is required.", 400)
        updates["name"] = name.strip()
    if notes is not None:
        updates["notes"] = notes
    if group is not None:
        updates["group_name"] = group.strip()
    if updates:
        store.update_fields(job.id, **updates)
    return get_job(store, job.id)


def group(store: Store, job_ids: Iterable[str], name: str, user: Actor = None) -> None:
    """Put jobs in one group ('' takes them out); all or none, so a refusal changes nothing."""
    jobs = [owned_job(store, job_id, user) for job_id in job_ids]
    if not jobs:
        raise ActionError("job_ids[]: no jobs given.", 400)
    for job in jobs:
        store.update_fields(job.id, group_name=name.strip())


def clone(store: Store, job_id: str, type_: str | None = None) -> dict[str, Any]:
    """The form values that prefill a new job like this one, named "Clone of ..."."""
    job = get_job(store, job_id, type_)
    if job.type == "dataset":
        values = dict(job.params.get("spec", {}))
        values["dataset_name"] = f"Clone of {values.get('dataset_name', job.name)}"
    else:
        values = dict(job.params.get("form", {}))
        values["model_name"] = f"Clone of {values.get('model_name', job.name)}"
    return values
