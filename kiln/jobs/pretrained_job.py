"""Pretrained-model jobs: made whole by the request that creates them (no worker runs them).

The folder is written first (kiln.pretrained.save: complete or absent), then the row is added
as Done, so the scheduler never sees a half-made pretrained model. Shared by the web routes,
the model store and the CLI.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from kiln import pretrained
from kiln.archives import ArchiveError, extract_archive, flatten_single_folder
from kiln.config import Settings
from kiln.store import PRETRAINED, Job, Store, new_job_id

TYPE = PRETRAINED  # the store's job type
MAX_NAME = 200


def create(store: Store, settings: Settings, source: pretrained.Source, name: str, username: str | None) -> str:
    """Check ``source``, write its folder and add the Done row; returns the new id."""
    name = " ".join(name.split())[:MAX_NAME] or "pretrained model"
    job_id = new_job_id()
    job_dir = settings.jobs_dir / job_id
    info = pretrained.save(source, job_dir, settings.allow_python_networks)
    try:
        network = {k: source.meta.get(k) or "" for k in ("network", "network_text", "network_language")}
        store.create_job(TYPE, name, {"info": info, "config": network}, username, job_id=job_id, status="Done")
    except BaseException:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    return job_id


def from_archive(store: Store, settings: Settings, archive: Path, name: str, username: str | None) -> str:
    """An uploaded archive (tar, tar.gz, tar.bz2 or zip) unpacked in a private folder, then imported."""
    with tempfile.TemporaryDirectory(prefix="kiln-pretrained-", dir=settings.jobs_dir) as tmp:
        try:
            folder = flatten_single_folder(extract_archive(archive, Path(tmp) / "unpacked"))
        except ArchiveError as exc:
            raise pretrained.PretrainedError("archive", str(exc)) from None
        source = pretrained.import_archive_folder(folder, origin="uploaded archive")
        return create(store, settings, source, name or source.meta.get("archive_name") or "uploaded model", username)


def from_model(store: Store, settings: Settings, model: Job, epoch: float | str | None, username: str | None) -> str:
    """'Make pretrained model' from one of a model's snapshots; FileNotFoundError when it has none."""
    from kiln.training.checkpoint import format_epoch

    source = pretrained.from_snapshot(settings.jobs_dir / model.id, epoch, f"model {model.name} ({model.id})")
    epoch_text = format_epoch(source.meta["epoch"])
    return create(store, settings, source, f"{model.name} (epoch {epoch_text})", username)


def info(job: Job) -> dict[str, Any]:
    return dict(job.params.get("info") or {})


def from_store(store: Store, settings: Settings, model_id: str, username: str | None) -> str:
    """Import one model of the model store (kiln.model_store) as a pretrained model."""
    from kiln import model_store

    entry = model_store.find(settings.model_store_url, model_id)
    with tempfile.TemporaryDirectory(prefix="kiln-store-", dir=settings.jobs_dir) as tmp:
        folder = model_store.fetch(entry, Path(tmp) / "model")
        source = pretrained.import_archive_folder(folder, origin=f"model store {entry.base} {entry.dir_name}")
        name = entry.info.get("name") if isinstance(entry.info.get("name"), str) else entry.dir_name
        return create(store, settings, source, str(name), username)
