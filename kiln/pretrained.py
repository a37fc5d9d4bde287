"""Pretrained models: a snapshot that came from elsewhere, kept so that models can start from it.

A pretrained model's folder holds one kiln snapshot (``snapshot_<E>.safetensors`` + ``.json``,
kiln.training.checkpoint's layout), so everything that reads a model's snapshot (download,
export, fine-tuning) reads a pretrained model the same way. Three ways in:

- :func:`import_archive_folder`: an unpacked download archive. kiln's own (``archive version`` in
  info.json) rebuilds the snapshot exactly; one without a version is read with DIGITS' keys
  (``snapshot file``, ``model file``/``network file``, ``labels file``, ``image dimensions`` ...);
- :func:`import_files`: weights + network text + labels, DIGITS' upload form;
- :func:`from_snapshot`: a model's own snapshot ("Make pretrained model").

Weights are read from safetensors only (no unpickling) and must fit the network exactly;
every refusal is a :class:`PretrainedError` naming the file or field.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiln.atomic import atomic_write_text
from kiln.training import checkpoint

PICKLED_WEIGHTS = (".caffemodel", ".t7", ".pt", ".pth", ".pkl", ".ckpt", ".h5", ".bin")
TEXT_LANGUAGES = {".prototxt": "prototxt", ".txt": "prototxt", ".py": "python"}
RESIZE_MODES = ("squash", "crop", "fill", "half_crop")
MAX_LABELS = 100_000


class PretrainedError(ValueError):
    """A pretrained model kiln will not take, for one field or file of the upload."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Source:
    """What a pretrained model is made of, before its weights are checked against its network."""

    weights: Path
    meta: dict[str, Any]  # a kiln snapshot json (checkpoint.snapshot_meta), without "weights"


# -- building and checking -------------------------------------------------------------------------
def _check_weights(meta: dict[str, Any], weights: Path, allow_python: bool) -> None:
    """The network must build and every weight tensor must fit it, names and shapes."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from kiln.networks.definition import NetworkDef

    net = NetworkDef.of_meta(meta)
    if net.text and net.language == "python" and not allow_python:
        raise PretrainedError(
            "model_def_file", "Python networks are off on this server (KILN_ALLOW_PYTHON_NETWORKS=1 allows them)."
        )
    model = _build(meta)
    try:
        saved = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise PretrainedError("weights_file", f"{weights.name} is not a readable safetensors file ({exc}).") from None
    problems = _mismatches(model.state_dict(), saved)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise PretrainedError("weights_file", f"the weights do not match the network: {shown}.")


def _build(meta: dict[str, Any]) -> Any:
    try:  # prototxt and Python network errors are ValueErrors
        return checkpoint.build_network(meta)
    except (ValueError, KeyError, TypeError) as exc:
        raise PretrainedError("model_def_file", f"the network does not build: {exc}") from None


def _mismatches(own: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    out = [f"{name} missing from the weights" for name in own if name not in saved]
    out += [f"{name} is not a layer of the network" for name in saved if name not in own]
    for name, tensor in own.items():
        other = saved.get(name)
        if other is not None and tuple(other.shape) != tuple(tensor.shape):
            shape = "x".join(map(str, other.shape)) or "scalar"
            out.append(
                f"{name} is {shape} in the weights, {'x'.join(map(str, tensor.shape)) or 'scalar'} in the network"
            )
    return out


def _class_count(meta: dict[str, Any], weights: Path) -> int:
    """Without labels: the class count the weights were trained for (the output layer's rows)."""
    from safetensors.torch import load_file

    probe = _build(dict(meta, num_classes=1))
    try:
        saved = load_file(str(weights), device="cpu")
    except Exception:  # _check_weights reports an unreadable file
        return 1
    for name, tensor in probe.state_dict().items():
        other = saved.get(name)
        if other is None:
            continue
        grown = tensor.ndim and tensor.shape[0] == 1 and other.shape[0] > 1
        if grown and tuple(other.shape[1:]) == tuple(tensor.shape[1:]):
            return int(other.shape[0])
    return int(probe(_zeros(meta)).shape[-1])


def _zeros(meta: dict[str, Any]) -> Any:
    import torch

    return torch.zeros(1, meta["in_channels"], meta["height"], meta["width"])


def save(source: Source, job_dir: Path, allow_python: bool) -> dict[str, Any]:
    """Check ``source`` and write it as ``job_dir``'s one snapshot (``job_dir`` must not exist).

    The folder is assembled under a temporary name and renamed: it is complete or absent.
    Returns the summary the store keeps (framework, labels, network, image dimensions).
    """
    _check_weights(source.meta, source.weights, allow_python)
    tmp = job_dir.with_name(f".{job_dir.name}.importing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        weights, meta_path = checkpoint.snapshot_paths(tmp, float(source.meta["epoch"]))
        shutil.copyfile(source.weights, weights)
        checkpoint.write_json(meta_path, dict(source.meta, weights=weights.name))
        if source.meta.get("network_text"):
            name = "network.py" if source.meta.get("network_language") == "python" else "network.prototxt"
            atomic_write_text(tmp / name, source.meta["network_text"])
        tmp.rename(job_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary(source.meta)


def summary(meta: dict[str, Any]) -> dict[str, Any]:
    pre = meta["preprocess"]
    return {
        "framework": "pytorch",
        "has_labels": bool(meta.get("has_labels", True)),
        "num_classes": meta["num_classes"],
        "network": meta["network"],
        "network_language": meta.get("network_language") or "prototxt",
        "image dimensions": [pre["height"], pre["width"], pre["channels"]],
        "image resize mode": pre.get("resize_mode", "squash"),
        "epoch": meta["epoch"],
        "source": meta.get("pretrained_source", ""),
    }


def read_meta(job_dir: Path) -> dict[str, Any]:
    """The pretrained model's snapshot json, with ``weights_path``."""
    return checkpoint.read_meta(job_dir)


# -- from a model's snapshot ----------------------------------------------------------------------
def from_snapshot(model_dir: Path, epoch: float | str | None, origin: str) -> Source:
    """A model's snapshot as it is ("Make pretrained model"); FileNotFoundError if there is none."""
    meta = checkpoint.read_meta(model_dir, epoch)
    weights = Path(meta.pop("weights_path"))
    meta.pop("weights", None)
    return Source(weights, dict(meta, pretrained_source=origin))


# -- from uploaded files (DIGITS' /pretrained_models/new) --------------------------------------------
def import_files(
    *,
    weights: Path,
    network_file: Path,
    labels_file: Path | None,
    channels: int,
    height: int,
    width: int,
    resize_mode: str = "squash",
    origin: str = "upload",
) -> Source:
    """DIGITS' upload form: weights, the network's text and optionally labels; no mean."""
    _refuse_pickles(weights, "weights_file")
    language = TEXT_LANGUAGES.get(network_file.suffix.lower())
    if language is None:
        raise PretrainedError("model_def_file", f"{network_file.name}: give a .prototxt (or .py) network text.")
    text = _read_text(network_file, "model_def_file")
    labels = _read_labels(labels_file, "labels_file") if labels_file else None
    if resize_mode not in RESIZE_MODES:
        raise PretrainedError("resize_mode", f"pick one of {', '.join(RESIZE_MODES)}.")
    pre = {"channels": channels, "height": height, "width": width, "resize_mode": resize_mode, "use_mean": "none"}
    meta = _meta(pre, text, language, labels, epoch=0.0, origin=origin)
    _check_preprocess(meta)
    return _with_class_count(Source(weights, meta), labels)


def _with_class_count(source: Source, labels: list[str] | None) -> Source:
    if labels is not None:
        return source
    n = _class_count(source.meta, source.weights)
    meta = dict(source.meta, num_classes=n, labels=[str(i) for i in range(n)], has_labels=False)
    return Source(source.weights, meta)


def _meta(
    pre: dict[str, Any],
    text: str,
    language: str,
    labels: list[str] | None,
    epoch: float,
    origin: str,
    network: str = "custom",
    crop: int | None = None,
    mean: Any = None,
) -> dict[str, Any]:
    pre = dict(pre, crop_size=crop, mean=mean)
    side = crop or None
    meta = checkpoint.snapshot_meta(
        network=network,
        network_text=text,
        network_language=language,
        num_classes=len(labels) if labels else 1,
        in_channels=int(pre["channels"]),
        height=side or int(pre["height"]),
        width=side or int(pre["width"]),
        labels=labels or [],
        preprocess=pre,
        epoch=epoch,
        iteration=0,
        metrics={},
        config={},
    )
    return dict(meta, pretrained_source=origin, has_labels=labels is not None)


# -- from an unpacked archive -------------------------------------------------------------------------
def import_archive_folder(folder: Path, origin: str = "archive") -> Source:
    """An unpacked archive: kiln's own (exact), or DIGITS' info.json keys."""
    info_path = folder / "info.json"
    if not info_path.is_file():
        raise PretrainedError("archive", "the archive has no info.json at its top level.")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PretrainedError("archive", f"info.json is not valid JSON ({exc}).") from None
    if not isinstance(info, dict):
        raise PretrainedError("archive", "info.json must hold a JSON object.")
    source = _versioned(folder, info, origin)
    name = info.get("name")
    return Source(source.weights, dict(source.meta, archive_name=name if isinstance(name, str) else ""))


def _versioned(folder: Path, info: dict[str, Any], origin: str) -> Source:
    from kiln.export.archive import ARCHIVE_VERSION

    version = info.get("archive version")
    if version is None:
        return _digits_archive(folder, info, origin)
    if not isinstance(version, int) or version < 1:
        raise PretrainedError("archive", f"info.json: 'archive version' {version!r} is not a version number.")
    if version > ARCHIVE_VERSION:
        raise PretrainedError(
            "archive", f"archive version {version} was made by a newer kiln; this one reads up to {ARCHIVE_VERSION}."
        )
    return _kiln_archive(folder, info, origin)


def _member(folder: Path, info: dict[str, Any], key: str, required: bool = True) -> Path | None:
    name = info.get(key)
    if not name:
        if required:
            raise PretrainedError("archive", f"info.json does not name its {key!r}.")
        return None
    if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
        raise PretrainedError("archive", f"info.json: {key!r} must be a file name at the archive's top level.")
    path = folder / name
    if not path.is_file():
        raise PretrainedError("archive", f"info.json names {key!r} {name!r}, which is not in the archive.")
    return path


def _kiln_archive(folder: Path, info: dict[str, Any], origin: str) -> Source:
    """kiln's archive version 1: info.json's ``snapshot`` plus the mean in mean.npy rebuild the json."""
    snapshot, pre = info.get("snapshot"), info.get("preprocess")
    if not isinstance(snapshot, dict) or not isinstance(pre, dict):
        raise PretrainedError("archive", "info.json lacks the 'snapshot' and 'preprocess' kiln writes.")
    weights = _member(folder, info, "snapshot file")
    assert weights is not None
    _refuse_pickles(weights, "archive")
    mean_path = _member(folder, info, "mean file", required=False)
    keep = ("channels", "height", "width", "resize_mode", "use_mean", "crop_size")
    preprocess = {k: pre.get(k) for k in keep}
    preprocess["mean"] = _load_mean(mean_path).tolist() if mean_path else None
    if preprocess["use_mean"] in (None, "none"):
        preprocess.update(use_mean="none", mean=None)
    meta = dict(snapshot, preprocess=preprocess, pretrained_source=origin, has_labels=True)
    missing = [
        k for k in ("network", "num_classes", "in_channels", "height", "width", "labels", "epoch") if k not in meta
    ]
    if missing:
        raise PretrainedError("archive", f"info.json's snapshot lacks {', '.join(missing)}.")
    _check_preprocess(meta)
    return Source(weights, meta)


def _digits_archive(folder: Path, info: dict[str, Any], origin: str) -> Source:
    """An archive without kiln's version: DIGITS' keys, weights as safetensors."""
    framework = str(info.get("framework") or "pytorch").lower()
    weights = _member(folder, info, "snapshot file")
    assert weights is not None
    if framework not in ("pytorch", "kiln"):
        raise PretrainedError(
            "archive", f"framework {framework!r}: kiln runs PyTorch networks with safetensors weights only."
        )
    _refuse_pickles(weights, "archive")
    net_path = _member(folder, info, "network file", required=False) or _member(folder, info, "model file")
    assert net_path is not None
    language = TEXT_LANGUAGES.get(net_path.suffix.lower())
    if language is None:
        raise PretrainedError("archive", f"{net_path.name}: the network must be a .prototxt (or .py) text.")
    labels_path = _member(folder, info, "labels file", required=False)
    labels = _read_labels(labels_path, "archive") if labels_path else None
    pre = _digits_preprocess(info)
    mean_path = _member(folder, info, "mean file", required=False)
    mean, use_mean = None, "none"
    if mean_path is not None:
        mean = _load_mean(mean_path)
        use_mean = "pixel" if mean.ndim == 1 else "image"
    epoch = info.get("epoch", 0)
    epoch = float(epoch) if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) and epoch >= 0 else 0.0
    text = _read_text(net_path, "archive")
    crop = pre.pop("crop_size")
    meta = _meta(
        dict(pre, use_mean=use_mean),
        text,
        language,
        labels,
        epoch,
        origin,
        crop=crop,
        mean=None if mean is None else mean.tolist(),
    )
    _check_preprocess(meta)
    return _with_class_count(Source(weights, meta), labels)


def _digits_preprocess(info: dict[str, Any]) -> dict[str, Any]:
    dims = info.get("image dimensions")
    if not (isinstance(dims, list) and len(dims) == 3 and all(isinstance(d, int) and 0 < d <= 4096 for d in dims)):
        raise PretrainedError("archive", "info.json: 'image dimensions' must be [height, width, channels].")
    height, width, channels = dims
    if channels not in (1, 3):
        raise PretrainedError("archive", f"info.json: 'image dimensions' has {channels} channels; kiln reads 1 or 3.")
    mode = info.get("image resize mode") or "squash"
    if mode not in RESIZE_MODES:
        raise PretrainedError("archive", f"info.json: 'image resize mode' must be one of {', '.join(RESIZE_MODES)}.")
    crop = info.get("crop size")
    if crop is not None and not (isinstance(crop, int) and 0 < crop <= min(height, width)):
        raise PretrainedError("archive", "info.json: 'crop size' must be a whole number no larger than the image.")
    return {"channels": channels, "height": height, "width": width, "resize_mode": mode, "crop_size": crop}


def _check_preprocess(meta: dict[str, Any]) -> None:
    from kiln.preprocess import Preprocess

    try:
        Preprocess.from_dict(meta["preprocess"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PretrainedError("archive", f"the preprocessing in info.json is not usable: {exc}.") from None


# -- files ----------------------------------------------------------------------------------------
def _refuse_pickles(weights: Path, field: str) -> None:
    suffix = weights.suffix.lower()
    if suffix in PICKLED_WEIGHTS:
        raise PretrainedError(
            field,
            f"{weights.name}: kiln loads weights from .safetensors only ({suffix} files can run code when loaded).",
        )
    if suffix != ".safetensors":
        raise PretrainedError(field, f"{weights.name}: the weights must be a .safetensors file.")


def _read_text(path: Path, field: str, limit: int = 1 << 20) -> str:
    if path.stat().st_size > limit:
        raise PretrainedError(field, f"{path.name} is larger than {limit >> 10} KB; is it the network text?")
    try:
        return path.read_text(encoding="utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise PretrainedError(field, f"{path.name} is not UTF-8 text.") from None


def _read_labels(path: Path, field: str) -> list[str]:
    labels = [line.strip() for line in _read_text(path, field, 8 << 20).splitlines() if line.strip()]
    if not labels:
        raise PretrainedError(field, f"{path.name} has no labels (one per line).")
    if len(labels) > MAX_LABELS:
        raise PretrainedError(field, f"{path.name} has {len(labels):,} labels; at most {MAX_LABELS:,}.")
    return labels


def _load_mean(path: Path) -> np.ndarray:
    """mean.npy (float HWC image or per-channel pixel) or an image; never a pickle."""
    try:
        if path.suffix.lower() == ".npy":
            mean = np.load(path, allow_pickle=False)
        else:
            from PIL import Image

            with Image.open(path) as img:
                mean = np.asarray(img, dtype=np.float32)
    except Exception as exc:
        raise PretrainedError("archive", f"{path.name}: not a mean kiln can read ({exc}); give mean.npy.") from None
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim == 2:
        mean = mean[:, :, None]
    if mean.ndim not in (1, 3) or not np.isfinite(mean).all():
        raise PretrainedError("archive", f"{path.name}: a mean is an HxWxC image or one value per channel.")
    return mean
