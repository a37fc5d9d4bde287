"""The evaluate form (`POST /models/images/classification/evaluate.json`, `kiln evaluate`) → an evaluation job.

One source: ``split`` (val, test or train of the model's dataset), ``image_list`` (an uploaded
`path [label]` list, paths relative to ``image_folder``), ``image_archive`` (an uploaded zip of
class folders) or ``image_folder`` alone (a server folder of class folders, inside the data roots).
"""

from __future__ import annotations

from typing import Any

from kiln import paths
from kiln.atomic import atomic_write_bytes
from kiln.config import Settings
from kiln.forms import FormErrors
from kiln.jobs.evaluation_job import ARCHIVE_FILE, LIST_FILE
from kiln.store import Job, Store

SPLITS = ("val", "test", "train")


def create_evaluation(
    form: dict[str, Any], uploads: dict[str, bytes], store: Store, settings: Settings, username: str
) -> str:
    """Validate and queue an evaluation; raises FormErrors naming the field."""
    errors: dict[str, list[str]] = {}
    model = _model(str(form.get("job_id") or ""), store, errors)
    epoch = _epoch(str(form.get("snapshot_epoch") or ""), model, settings, errors)
    source, describe = _source(form, uploads, model, store, settings, errors)
    limit = _limit(str(form.get("num_test_images") or ""), errors)
    if errors or model is None or source is None:
        raise FormErrors(errors)
    params = {
        "model_id": model.id,
        "dataset_id": model.dataset_id,
        "epoch": epoch,
        "source": source,
        "num_test_images": limit,
    }
    name = f"{model.name} on {describe}" + (f" (epoch {epoch})" if epoch else "")
    job_id = store.create_job("evaluation", name, params, username, group_name=model.group_name)
    job_dir = settings.jobs_dir / job_id
    job_dir.mkdir(parents=True, exist_ok=True)
    if source["kind"] == "list":
        atomic_write_bytes(job_dir / LIST_FILE, uploads["image_list"])
    elif source["kind"] == "archive":
        atomic_write_bytes(job_dir / ARCHIVE_FILE, uploads["image_archive"])
    return job_id


def _model(job_id: str, store: Store, errors: dict[str, list[str]]) -> Job | None:
    job = store.get_job(job_id) if job_id else None
    if job is None or job.type != "model":
        errors["job_id"] = [f"No model {job_id!r}." if job_id else "This field is required."]
        return None
    return job


def _epoch(text: str, model: Job | None, settings: Settings, errors: dict[str, list[str]]) -> str | float | None:
    """None (the latest), "best", or an epoch that has a snapshot."""
    from kiln.training import checkpoint

    if model is None:
        return None
    text = text.strip().lower()
    job_dir = settings.jobs_dir / model.id
    try:
        if text == "best":
            checkpoint.read_meta(job_dir, "best")
            return "best"
        epoch = checkpoint.resolve_epoch(job_dir, text if text not in ("", "-1", "0") else None)
    except FileNotFoundError as exc:
        message = str(exc) if text != "best" else "this model keeps no best snapshot (train it with keep_best)"
        errors["snapshot_epoch"] = [message[0].upper() + message[1:] + "."]
        return None
    except ValueError:
        errors["snapshot_epoch"] = [f"Not an epoch: {text!r}; give a number, 'best', or blank for the latest."]
        return None
    return None if text in ("", "-1", "0") else epoch


def _source(
    form: dict[str, Any],
    uploads: dict[str, bytes],
    model: Job | None,
    store: Store,
    settings: Settings,
    errors: dict[str, list[str]],
) -> tuple[dict[str, Any] | None, str]:
    split = str(form.get("split") or "").strip()
    folder = str(form.get("image_folder") or "").strip()
    given = [k for k in ("image_list", "image_archive") if uploads.get(k)] + (["split"] if split else [])
    if not given and folder:
        given = ["image_folder"]
    if len(given) != 1:
        errors["split"] = [
            "Give one of: split, image_list, image_archive, or image_folder (a folder of class folders)."
        ]
        return None, ""
    kind = given[0]
    if kind == "split":
        return _split(split, model, store, errors), f"its {split} split"
    if kind == "image_archive":
        return {"kind": "archive"}, "an uploaded archive"
    try:
        checked = paths.check_readable(folder, settings.allowed_roots, kind="dir") if folder else None
    except paths.PathRefused as exc:
        errors["image_folder"] = [f"{folder} {exc}"]
        return None, ""
    if kind == "image_list":
        return {"kind": "list", "folder": str(checked) if checked else ""}, "an uploaded list"
    return {"kind": "folder", "folder": str(checked)}, f"folder {folder}"


def _split(split: str, model: Job | None, store: Store, errors: dict[str, list[str]]) -> dict[str, Any] | None:
    if split not in SPLITS:
        errors["split"] = [f"Pick one of: {', '.join(SPLITS)}."]
        return None
    dataset = store.get_job(model.dataset_id or "") if model else None
    if model is not None and (dataset is None or dataset.status != "Done"):
        errors["split"] = ["The model's dataset is gone or unfinished; evaluate a list or a folder instead."]
        return None
    return {"kind": "split", "split": split}


def _limit(text: str, errors: dict[str, list[str]]) -> int | None:
    if not text.strip():
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        errors["num_test_images"] = [f"Must be a whole number of at least 1, got {text!r}."]
        return None
    return value
