"""DIGITS' dataset form (reference 1.1) → DatasetSpec, validated, queued as a job.

Shared by the web form, the JSON API and `kiln dataset create`.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from kiln import paths
from kiln.atomic import AtomicFile, atomic_write_bytes
from kiln.config import Settings
from kiln.datasets.spec import DatasetSpec, validate_spec
from kiln.forms import FormErrors, parse_into
from kiln.paths import ReadPolicy
from kiln.store import Store


def spec_from_form(form: dict[str, Any]) -> DatasetSpec:
    """A DatasetSpec from DIGITS' form fields (plus kiln's add_inverted); raises FormErrors."""
    errors: dict[str, list[str]] = {}
    values = parse_into(DatasetSpec, form, errors)
    if form.get("textfile_use_local_files") and str(form["textfile_use_local_files"]).lower() in ("1", "true", "on"):
        for key in ("train_images", "val_images", "test_images", "labels_file"):
            local = form.get(f"textfile_local_{key}")
            if local:
                values[f"textfile_{key}"] = str(local)
    if errors:
        raise FormErrors(errors)
    return DatasetSpec.from_dict(values)


UPLOAD_FIELDS = ("textfile_train_images", "textfile_val_images", "textfile_test_images", "textfile_labels_file")


UPLOAD_PREFIX = "uploaded_"
COPY_CHUNK = 1 << 20


def save_uploads(uploads: Mapping[str, bytes | BinaryIO], upload_dir: Path, spec: DatasetSpec) -> list[Path]:
    """Uploaded text lists (UPLOAD_FIELDS -> content: bytes, or a file object copied a chunk at a
    time, never whole in memory) are kept in the job folder; the spec then points at them. Returns
    the files written, for discard_uploads when the job is not created after all."""
    written: list[Path] = []
    try:
        for field, content in uploads.items():
            if field not in UPLOAD_FIELDS:
                continue
            path = upload_dir / f"{UPLOAD_PREFIX}{field.removeprefix('textfile_')}.txt"
            if isinstance(content, (bytes, bytearray)):
                atomic_write_bytes(path, bytes(content))
            else:
                with AtomicFile(path) as out:
                    shutil.copyfileobj(content, out, COPY_CHUNK)
            written.append(path)
            setattr(spec, field, str(path))
    except BaseException:
        discard_uploads(upload_dir, written)
        raise
    return written


def discard_uploads(upload_dir: Path, written: list[Path]) -> None:
    """Remove what save_uploads wrote for a job that was not created, and the folder if that leaves it empty."""
    for path in written:
        path.unlink(missing_ok=True)
    try:
        upload_dir.rmdir()
    except OSError:
        pass  # absent, or holds something else


def _uploaded_lists(spec: DatasetSpec, jobs_dir: Path) -> tuple[Path, ...]:
    """The spec's list fields that name a list uploaded into a job folder (this job's, or the job it
    was cloned from): kiln's own files, allowed beside the data roots. Nothing else in the jobs
    folder is (other jobs' logs and files are not lists to read)."""
    jobs = paths.resolve(jobs_dir)
    out = []
    for field in UPLOAD_FIELDS:
        raw = str(getattr(spec, field) or "").strip()
        if not raw or "\x00" in raw:
            continue
        real = paths.resolve(raw)
        if real.parent.parent == jobs and real.name.startswith(UPLOAD_PREFIX) and real.suffix == ".txt":
            out.append(real)
    return tuple(out)


def read_policy(settings: Settings, spec: DatasetSpec) -> ReadPolicy:
    """What a dataset job may read: the data roots (after symlinks), uploaded lists, KILN_MAX_IMAGE_MB per file."""
    return ReadPolicy(settings.allowed_roots, settings.max_file_bytes, _uploaded_lists(spec, settings.jobs_dir))


def validate(spec: DatasetSpec, settings: Settings) -> dict[str, list[str]]:
    """Per-field errors for a spec against the server's settings now: at creation, and again when
    the job starts (a resumed job re-checks the data roots, which may have changed)."""
    return validate_spec(spec, read_policy(settings, spec).list_roots)


def create_dataset_job(
    store: Store, settings: Settings, spec: DatasetSpec, username: str, job_id: str | None = None
) -> str:
    """Validate and queue a dataset job; raises FormErrors with per-field messages."""
    errors = validate(spec, settings)
    if errors:
        raise FormErrors(errors)
    return store.create_job(
        "dataset", spec.dataset_name, {"spec": spec.to_dict()}, username, group_name=spec.group_name, job_id=job_id
    )
