"""DIGITS 6.1.1 JSON shapes for jobs (reference section 7.3), built from store rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import kiln
from kiln.datasets import packed_format
from kiln.store import PRETRAINED, STATUS_CSS, Job, Store, elapsed, eta

TYPE_NAMES = {
    "dataset": "Image Classification Dataset",
    "model": "Image Classification Model",
    "evaluation": "Image Classification Evaluation",
    "pretrained_model": "Pretrained Model",
}


def read_manifest(jobs_dir: Path, job_id: str) -> dict[str, Any] | None:
    return packed_format.read_manifest(jobs_dir / job_id)


def dataset_dict(job: Job, jobs_dir: Path, verbose: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"id": job.id, "name": job.name, "status": job.status}
    if not verbose:
        return out
    spec = job.params.get("spec", {})
    manifest = read_manifest(jobs_dir, job.id) or {}
    splits = manifest.get("splits", {})
    out.update(
        directory=str(jobs_dir / job.id),
        username=job.username,
        error=job.error,
        progress=job.progress,
        labels=manifest.get("labels", []),
    )
    out["ParseFolderTasks"] = [
        {
            "name": "Parse Folder (train/val)",
            "label_count": len(manifest.get("labels", [])),
            "train_count": splits.get("train", {}).get("count", 0),
            "val_count": splits.get("val", {}).get("count", 0),
            "test_count": splits.get("test", {}).get("count", 0),
        }
    ]
    out["CreateDbTasks"] = [
        {
            "name": f"Create DB ({name})",
            "entries": split.get("count", 0),
            # DIGITS' quirk (image_width held the height) is fixed: these are what they say
            "image_width": spec.get("resize_width"),
            "image_height": spec.get("resize_height"),
            "image_channels": spec.get("resize_channels"),
            "backend": "kiln",
            "encoding": spec.get("encoding"),
            "compression": "none",
            "errors": sum(split.get("errors_per_class", [])),
        }
        for name, split in splits.items()
    ]
    return out


def _network_file(config: dict[str, Any]) -> str:
    """DIGITS' "model file": the network text in the model's folder (a Python class: its name)."""
    from kiln.networks.definition import NetworkDef

    network = NetworkDef.of_dict(config)
    return network.text_file or f"{network.name} (Python class in kiln)"


def model_dict(job: Job, store: Store, jobs_dir: Path, verbose: bool = False) -> dict[str, Any]:
    config = job.params.get("config", {})
    spec = job.params.get("dataset_spec", {})
    snaps = store.snapshots(job.id)
    latest = snaps[-1] if snaps else None
    out: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "dataset_id": job.dataset_id,
        "job id": job.id,
        "creation time": str(dt.datetime.fromtimestamp(job.created)),
        "username": job.username,
        "image dimensions": [spec.get("resize_height"), spec.get("resize_width"), spec.get("resize_channels")],
        "mean file": packed_format.MEAN_NPY,
        "mean subtraction": config.get("use_mean"),
        "snapshot file": Path(latest["path"]).name if latest else "no snapshots",
        "framework": "pytorch",
        "network": config.get("network"),
        "model file": _network_file(config),
        "pretrained model": config.get("pretrained_from") or None,
        "digits version": "6.1.1 (compatible)",
        "kiln version": kiln.__version__,
        "image resize mode": spec.get("resize_mode"),
        "labels file": packed_format.LABELS_TXT,
        "progress": job.progress,
        "error": job.error,
        "gpus": job.params.get("gpus") or [],  # kiln: the GPUs its latest run got (kiln.jobs.gpus)
        "world_size": (job.summary or {}).get("world_size") or job.params.get("world_size") or 1,
    }
    test = (job.summary or {}).get("test") or {}
    if test.get("top1_accuracy") is not None:  # the dataset's test split, evaluated after training
        out.update(
            test_accuracy=test["top1_accuracy"], test_top5_accuracy=test["top5_accuracy"], test_epoch=test["epoch"]
        )
    if verbose:
        out["directory"] = str(jobs_dir / job.id)
        out["snapshots"] = [s["epoch"] for s in snaps if s["info"].get("kind", "epoch") == "epoch"]
        out["summary"] = job.summary
    return out


def row(job: Job, store: Store) -> dict[str, Any]:
    """A home-page table row, as /completed_jobs.json gives it."""
    r: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "group": job.group_name,
        "status": job.status,
        "status_css": STATUS_CSS.get(job.status, "default"),
        "submitted": job.created,
        "elapsed": round(elapsed(job), 1),
        "progress": int(round(job.progress * 100)),
        "eta": eta(job),
        "type": job.type,
        "username": job.username,
        "message": job.message,
        "error": job.error,
    }
    if job.type == "dataset":
        r["backend"] = "kiln"
        r["refs"] = len(store.models_using(job.id))
    elif job.type == PRETRAINED:
        info = job.params.get("info") or {}
        r.update(framework=info.get("framework", "pytorch"), has_labels=bool(info.get("has_labels")))
        r["network"] = info.get("network")
    elif job.type == "evaluation":
        r["model_id"] = job.params.get("model_id")
        r["top1_accuracy"] = (job.summary or {}).get("top1_accuracy")
    else:
        r["framework"] = "pytorch"
        r["dataset_id"] = job.dataset_id
        r["network"] = job.params.get("config", {}).get("network")
        r.update(_metric_columns(store, job.id))
    return r


def _metric_columns(store: Store, job_id: str) -> dict[str, Any]:
    """`<name> (train|val) last|min|max` columns and a loss sparkline."""
    cols: dict[str, Any] = {}
    series: dict[str, list[float]] = {}
    for m in store.metrics(job_id):
        if m["value"] is None or m["name"] == "lr":
            continue
        series.setdefault(f"{m['name']} ({m['phase']})", []).append(m["value"])
    for key, values in series.items():
        cols[f"{key} last"] = values[-1]
        cols[f"{key} min"] = min(values)
        cols[f"{key} max"] = max(values)
    loss = series.get("loss (train)", [])
    stride = max(1, len(loss) // 50)
    cols["sparkline"] = loss[::stride]
    return cols
