"""A model's download archive: everything to run or rebuild one snapshot outside kiln.

Flat, as DIGITS' archives were. Members:

- ``info.json``: DIGITS' keys that apply (``image dimensions``, ``mean file``, ``snapshot file``,
  ``model file``, ``labels file``, ``image resize mode``, ``framework`` ...), the archive format's
  version (``archive version``), the labels in order, and ``preprocess``: everything that turns an
  image into the network's input (channels, stored size, resize mode, mean mode, crop, pixel scale);
- ``labels.txt``; ``network.prototxt`` or ``network.py`` (absent for networks written as kiln's
  own Python classes, rebuilt by ``network``); ``weights.safetensors`` (the snapshot's state dict);
- ``mean.npy`` (HWC image or per-channel pixel, float32, exactly what is subtracted) and ``mean.png``;
- ``model.onnx`` (dynamic batch axis), ``model.pt`` (TorchScript), ``predict.py`` (standalone).

An archive is assembled in a private temporary folder and packed through kiln.atomic, so the
destination is either absent or complete.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tarfile
import tempfile
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import kiln
from kiln.atomic import AtomicFile, atomic_write_json, atomic_write_text
from kiln.datasets import packed_format
from kiln.export.convert import export_onnx, export_torchscript, input_shape, load_for_export
from kiln.training.checkpoint import format_epoch

ARCHIVE_VERSION = 1  # bump when a member or an info.json key changes meaning; keep a fixture per version
# extension -> tarfile mode (None: zip). DIGITS' list; tar.gz is its default.
ARCHIVE_FORMATS: dict[str, str | None] = {"tar": "w", "tar.gz": "w:gz", "tgz": "w:gz", "tar.bz2": "w:bz2", "zip": None}
TEXT_FILES = {"prototxt": "network.prototxt", "python": "network.py"}
# the same names a packed dataset uses for its labels and mean (kiln.datasets.packed_format spells them)
WEIGHTS, MEAN_NPY, MEAN_PNG, LABELS = (
    "weights.safetensors",
    packed_format.MEAN_NPY,
    packed_format.MEAN_PNG,
    packed_format.LABELS_TXT,
)
ONNX, TORCHSCRIPT, PREDICT, INFO = "model.onnx", "model.pt", "predict.py", "info.json"


def archive_name(job_id: str, meta: dict[str, Any], ext: str) -> str:
    """DIGITS' download name: ``<job_id>_epoch_<epoch>.<ext>``."""
    return f"{job_id}_epoch_{format_epoch(meta['epoch'])}.{ext}"


def predict_script() -> str:
    """The standalone predict.py shipped in every archive (kiln/export/templates/predict.py)."""
    return resources.files("kiln.export").joinpath("templates", "predict.py").read_text(encoding="utf-8")


def _preprocess(meta: dict[str, Any]) -> dict[str, Any]:
    pre = {k: v for k, v in meta["preprocess"].items() if k != "mean"}
    channels, height, width = input_shape(meta)
    pre.update(
        scale=1.0,  # raw 0-255 pixels minus the mean; no division
        order="resize, subtract mean, centre crop",
        input={"layout": "NCHW", "dtype": "float32", "shape": [None, channels, height, width]},
        color="grey" if channels == 1 else "RGB",
    )
    return pre


def _mean_files(meta: dict[str, Any], folder: Path) -> str | None:
    """mean.npy (exactly what is subtracted) and mean.png (viewable); None when no mean is used."""
    pre = meta["preprocess"]
    if pre.get("use_mean", "none") == "none" or pre.get("mean") is None:
        return None
    mean = np.asarray(pre["mean"], dtype=np.float32)
    with AtomicFile(folder / MEAN_NPY) as f:
        np.save(f, mean, allow_pickle=False)
    image = mean if mean.ndim == 3 else np.broadcast_to(mean, (pre["height"], pre["width"], mean.shape[0]))
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(folder / MEAN_PNG)
    return MEAN_NPY


def _info(meta: dict[str, Any], job_info: dict[str, Any], network_file: str | None, mean: str | None) -> dict[str, Any]:
    pre = meta["preprocess"]
    snapshot = {k: v for k, v in meta.items() if k not in ("preprocess", "weights", "weights_path")}
    return {
        **job_info,  # id, name, status, dataset_id, job id, creation time, username (from the caller)
        "archive version": ARCHIVE_VERSION,
        "image dimensions": [pre["height"], pre["width"], pre["channels"]],
        "image resize mode": pre.get("resize_mode", "squash"),
        "mean file": mean,
        "mean image file": MEAN_PNG if mean else None,
        "mean subtraction": pre.get("use_mean", "none"),
        "crop size": pre.get("crop_size"),
        "snapshot file": WEIGHTS,
        "weights format": "safetensors",
        "framework": "pytorch",
        "model file": network_file,
        "network file": network_file,
        "labels file": LABELS,
        "onnx file": ONNX,
        "torchscript file": TORCHSCRIPT,
        "predict file": PREDICT,
        "digits version": "6.1.1 (compatible)",
        "kiln version": kiln.__version__,
        "epoch": meta["epoch"],
        "network": meta["network"],
        "network_language": meta.get("network_language") or "prototxt",
        "network_kwargs": meta.get("network_kwargs") or {},
        "num_classes": meta["num_classes"],
        "labels": list(meta["labels"]),
        "preprocess": _preprocess(meta),
        "snapshot": snapshot,  # the snapshot's json less its mean (in mean.npy): rebuilds it exactly
    }


def build_folder(job_dir: Path, folder: Path, epoch: float | str | None, job_info: dict[str, Any]) -> dict[str, Any]:
    """Write every member into ``folder``; returns info.json's content."""
    model, meta = load_for_export(job_dir, epoch)
    shutil.copyfile(meta["weights_path"], folder / WEIGHTS)
    atomic_write_text(folder / LABELS, "".join(f"{label}\n" for label in meta["labels"]))
    network_file = None
    if meta.get("network_text"):
        network_file = TEXT_FILES.get(meta.get("network_language") or "prototxt", TEXT_FILES["prototxt"])
        atomic_write_text(folder / network_file, meta["network_text"])
    mean = _mean_files(meta, folder)
    export_onnx(model, meta, folder / ONNX)
    export_torchscript(model, meta, folder / TORCHSCRIPT)
    atomic_write_text(folder / PREDICT, predict_script())
    info = _info(meta, job_info, network_file, mean)
    atomic_write_json(folder / INFO, info)
    return info


def pack(folder: Path, dest: Path, fmt: str) -> Path:
    """The folder's files, flat, into ``dest`` (atomic), info.json first."""
    names = sorted((p.name for p in folder.iterdir()), key=lambda n: (n != INFO, n))
    with AtomicFile(dest) as f:
        mode = ARCHIVE_FORMATS[fmt]
        if mode is None:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
                for name in names:
                    zf.write(folder / name, name)
        else:
            with tarfile.open(fileobj=f, mode=mode) as tf:  # type: ignore[call-overload]
                for name in names:
                    tf.add(folder / name, name)
    return dest


def write_archive(
    job_dir: Path | str,
    dest: Path | str,
    *,
    epoch: float | str | None = None,
    fmt: str = "tar.gz",
    job_info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export the snapshot at ``epoch`` (None/-1/0 latest, a number, "best") as a ``fmt`` archive.

    Returns info.json's content. FileNotFoundError for a missing snapshot, ValueError for an unknown
    format, kiln.export.ExportError when the network cannot be exported faithfully.
    """
    if fmt not in ARCHIVE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(ARCHIVE_FORMATS)}, not {fmt!r}")
    with tempfile.TemporaryDirectory(prefix="kiln-export-") as tmp:
        info = build_folder(Path(job_dir), Path(tmp), epoch, job_info or {})
        pack(Path(tmp), Path(dest), fmt)
    return info


def job_keys(job: Any) -> dict[str, Any]:
    """DIGITS' job keys for info.json from a kiln.store.Job (duck-typed: the engine knows no store)."""
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "dataset_id": job.dataset_id,
        "job id": job.id,
        "creation time": str(dt.datetime.fromtimestamp(job.created)),
        "username": job.username,
    }


# -- single files ---------------------------------------------------------------------------------
SINGLE_FORMATS = {"onnx": "onnx", "torchscript": "pt"}  # format -> file extension


def write_model_file(job_dir: Path | str, dest: Path | str, *, epoch: float | str | None, fmt: str) -> dict[str, Any]:
    """model.onnx or model.pt of one snapshot into ``dest`` (atomic); returns the snapshot's meta."""
    if fmt not in SINGLE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(SINGLE_FORMATS)}, not {fmt!r}")
    model, meta = load_for_export(Path(job_dir), epoch)
    (export_onnx if fmt == "onnx" else export_torchscript)(model, meta, Path(dest))
    return meta
