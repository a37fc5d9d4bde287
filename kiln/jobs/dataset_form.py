"""DIGITS' dataset form (reference 1.1) → DatasetSpec, validated, queued as a job.

Shared by the web form, the JSON API and `kiln dataset create`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kiln.atomic import atomic_write_bytes
from kiln.config import Settings
from kiln.datasets.spec import DatasetSpec, validate_spec
from kiln.forms import FormErrors, parse_into
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


def save_uploads(uploads: Mapping[str, bytes], upload_dir: Path, spec: DatasetSpec) -> None:
    """Uploaded text lists (UPLOAD_FIELDS -> content) are kept in the job folder; the spec then points at them."""
    for field, content in uploads.items():
        if field not in UPLOAD_FIELDS:
            continue
        upload_dir.mkdir(parents=True, exist_ok=True)
        path = upload_dir / f"uploaded_{field.removeprefix('textfile_')}.txt"
        atomic_write_bytes(path, content)
        setattr(spec, field, str(path))


def validate(spec: DatasetSpec, settings: Settings) -> dict[str, list[str]]:
    roots = settings.allowed_roots
    # uploaded lists are saved in the job folder, which is always allowed
    return validate_spec(spec, roots + [settings.jobs_dir.resolve()] if roots is not None else None)


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
