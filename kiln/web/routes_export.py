"""Models out of kiln over HTTP: DIGITS' download archives and the ONNX / TorchScript files.

    GET|POST /models/<id>/download[.tar|.tar.gz|.tgz|.tar.bz2|.zip]   ?epoch=N or form snapshot_epoch
    GET|POST /models/<id>/export.onnx   /models/<id>/export.pt        the same epoch fields
    GET|POST /pretrained_models/<id>/download[.<ext>]                  a pretrained model, the same way

An export traces the network and checks it, seconds of work: it runs on the heavy threads
(kiln.web.offload), into a private temporary folder removed once the file has been sent.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from kiln.store import PRETRAINED
from kiln.web.deps import SettingsDep, StoreDep, job_or_404
from kiln.web.offload import run_heavy

router = APIRouter(tags=["models"])
DEFAULT_FORMAT = "tar.gz"  # DIGITS' /download without an extension


def epoch_field(request: Request, form: Any) -> float | str | None:
    """?epoch= or the form's snapshot_epoch: blank, -1 or 0 the latest; a number; "best"."""
    field, value = "epoch", request.query_params.get("epoch")
    if value is None and form is not None and form.get("snapshot_epoch") is not None:
        field, value = "snapshot_epoch", form.get("snapshot_epoch")
    text = str(value or "").strip()
    if text.lower() == "best":
        return "best"
    if not text:
        return None
    try:
        epoch = float(text)
    except ValueError:
        epoch = math.nan
    if not math.isfinite(epoch) or epoch < -1:
        raise HTTPException(
            400, f"{field}: {text[:40]!r} is not an epoch: give one such as 2, best, or -1 for the latest."
        )
    return None if epoch in (-1.0, 0.0) else epoch


def _model_dir(store: Any, settings: Any, job_id: str, type_: str = "model") -> Path:
    job_or_404(store, job_id, type_)
    from kiln.training.checkpoint import list_snapshots

    job_dir = Path(settings.jobs_dir) / job_id
    if not list_snapshots(job_dir):
        raise HTTPException(404, f"epoch: model {job_id} has no snapshot yet: wait for its first epoch.")
    return job_dir


def _build(fn: Any, job_dir: Path, name_ext: str, job_id: str, **kw: Any) -> tuple[Path, str, Path]:
    """Run an export into a fresh temp folder: (file, download name, folder to remove)."""
    from kiln.export import ExportError, archive_name

    tmp = Path(tempfile.mkdtemp(prefix="kiln-download-"))
    try:
        result = fn(job_dir, tmp / f"model.{name_ext}", **kw)
        meta = result.get("snapshot", result)  # an archive's info.json, or a snapshot's meta
        return tmp / f"model.{name_ext}", archive_name(job_id, meta, name_ext), tmp
    except FileNotFoundError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise HTTPException(404, f"epoch: {exc}") from None
    except ExportError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise HTTPException(422, f"network: {exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _send(built: tuple[Path, str, Path], media_type: str) -> FileResponse:
    path, name, tmp = built
    return FileResponse(path, media_type=media_type, filename=name, background=BackgroundTask(shutil.rmtree, tmp, True))


async def _download(
    request: Request, store: Any, settings: Any, job_id: str, ext: str, type_: str = "model"
) -> FileResponse:
    from kiln.export import ARCHIVE_FORMATS, job_keys, write_archive

    if ext not in ARCHIVE_FORMATS:
        raise HTTPException(
            400, f"format: {ext[:20]!r} is not an archive format; use one of {', '.join(ARCHIVE_FORMATS)}."
        )
    form = await request.form() if request.method == "POST" else None
    epoch = epoch_field(request, form)
    job_dir = _model_dir(store, settings, job_id, type_)
    info = job_keys(job_or_404(store, job_id, type_))
    built = await run_heavy(request, _build, write_archive, job_dir, ext, job_id, epoch=epoch, fmt=ext, job_info=info)
    return _send(built, "application/zip" if ext == "zip" else "application/x-tar")


@router.get("/models/{job_id}/download")
@router.post("/models/{job_id}/download")
async def download(request: Request, job_id: str, store: StoreDep, settings: SettingsDep) -> FileResponse:
    """The model at an epoch as a tar.gz archive (DIGITS' default)."""
    return await _download(request, store, settings, job_id, DEFAULT_FORMAT)


@router.get("/models/{job_id}/download.{ext}")
@router.post("/models/{job_id}/download.{ext}")
async def download_as(request: Request, job_id: str, ext: str, store: StoreDep, settings: SettingsDep) -> FileResponse:
    """The model at an epoch as a tar, tar.gz, tgz, tar.bz2 or zip archive."""
    return await _download(request, store, settings, job_id, ext)


@router.get("/models/{job_id}/export.{ext}")
@router.post("/models/{job_id}/export.{ext}")
async def export_file(request: Request, job_id: str, ext: str, store: StoreDep, settings: SettingsDep) -> FileResponse:
    """The network at an epoch as ONNX (export.onnx, dynamic batch axis) or TorchScript (export.pt)."""
    from kiln.export import write_model_file

    formats = {"onnx": "onnx", "pt": "torchscript"}
    if ext not in formats:
        raise HTTPException(400, f"format: {ext[:20]!r} is not an export format; use export.onnx or export.pt.")
    epoch = epoch_field(request, await request.form() if request.method == "POST" else None)
    job_dir = _model_dir(store, settings, job_id)
    built = await run_heavy(request, _build, write_model_file, job_dir, ext, job_id, epoch=epoch, fmt=formats[ext])
    return _send(built, "application/octet-stream")


@router.get("/pretrained_models/{job_id}/download", tags=["pretrained models"])
@router.post("/pretrained_models/{job_id}/download", tags=["pretrained models"])
async def download_pretrained(request: Request, job_id: str, store: StoreDep, settings: SettingsDep) -> FileResponse:
    """A pretrained model as a tar.gz archive, the same members as a model's."""
    return await _download(request, store, settings, job_id, DEFAULT_FORMAT, PRETRAINED)


@router.get("/pretrained_models/{job_id}/download.{ext}", tags=["pretrained models"])
@router.post("/pretrained_models/{job_id}/download.{ext}", tags=["pretrained models"])
async def download_pretrained_as(
    request: Request, job_id: str, ext: str, store: StoreDep, settings: SettingsDep
) -> FileResponse:
    """A pretrained model as a tar, tar.gz, tgz, tar.bz2 or zip archive."""
    return await _download(request, store, settings, job_id, ext, PRETRAINED)
