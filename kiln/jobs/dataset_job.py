"""A dataset job: build the packed dataset described by the job's spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.datasets.sources import DatasetInputError
from kiln.datasets.spec import DatasetSpec
from kiln.jobs.errors import UserFacingError
from kiln.reporting import Reporter
from kiln.store import Job


def run_dataset(job: Job, job_dir: Path, reporter: Reporter) -> dict[str, Any]:
    from kiln.datasets.pack import build_dataset

    spec = DatasetSpec.from_dict(job.params["spec"])
    try:
        manifest = build_dataset(spec, job_dir, reporter)
    except DatasetInputError as exc:
        raise UserFacingError(
            f"The dataset source is not usable: {exc} Fix the folder or lists, then clone the job."
        ) from exc
    return {
        "labels": len(manifest["labels"]),
        "counts": {name: split["count"] for name, split in manifest["splits"].items()},
        "errors": manifest.get("error_count", 0),
        "image": manifest["image"],
    }
