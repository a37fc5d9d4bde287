"""A dataset job: build the packed dataset described by the job's spec."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.datasets.spec import DatasetSpec
from kiln.reporting import Reporter
from kiln.store import Job


def run_dataset(job: Job, job_dir: Path, reporter: Reporter) -> dict[str, Any]:
    from kiln.datasets.pack import build_dataset

    spec = DatasetSpec.from_dict(job.params["spec"])
    manifest = build_dataset(spec, job_dir, reporter)
    return {
        "labels": len(manifest["labels"]),
        "counts": {name: split["count"] for name, split in manifest["splits"].items()},
        "errors": manifest.get("error_count", 0),
        "image": manifest["image"],
    }
