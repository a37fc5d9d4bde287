"""A dataset job: build the packed dataset described by the job's spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.config import Settings
from kiln.datasets.sources import DatasetInputError
from kiln.datasets.spec import DatasetSpec
from kiln.jobs.dataset_form import read_policy, validate
from kiln.jobs.errors import UserFacingError
from kiln.reporting import Reporter
from kiln.store import Job


def run_dataset(job: Job, job_dir: Path, reporter: Reporter, settings: Settings) -> dict[str, Any]:
    """Build the dataset; its spec is checked again first against the server's settings as they
    are now (a job resumed after KILN_DATA_ROOTS changed must not read what is no longer allowed)."""
    from kiln.datasets.pack import build_dataset

    spec = DatasetSpec.from_dict(job.params["spec"])
    errors = validate(spec, settings)
    if errors:
        problems = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
        raise UserFacingError(
            f"The dataset source is not usable: {problems}. Fix the folder or lists, then clone the job."
        )
    try:
        manifest = build_dataset(spec, job_dir, reporter, policy=read_policy(settings, spec))
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
