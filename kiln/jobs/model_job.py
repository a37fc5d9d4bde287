"""A model job: train the configured network on a Done dataset, resuming when asked."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.config import Settings
from kiln.jobs.reporter import StoreReporter
from kiln.jobs.worker import UserFacingError
from kiln.reporting import Reporter
from kiln.training.config import TrainConfig
from kiln.store import Job


def run_model(job: Job, job_dir: Path, settings: Settings, reporter: Reporter) -> dict[str, Any]:
    from kiln.datasets.reader import PackedDataset
    from kiln.training.loop import train

    dataset_dir = settings.jobs_dir / (job.dataset_id or "")
    if not (dataset_dir / "manifest.json").exists():
        raise UserFacingError(f"Dataset {job.dataset_id} is missing or not finished; "
                              "create it again and clone this model.")
    config = TrainConfig.from_dict(job.params["config"])
    resume = (job_dir / "resume.pt").exists()
    if resume and isinstance(reporter, StoreReporter):
        # points logged after the last snapshot are redone by the resumed run: drop them so the
        # charts continue where the snapshot left off, without doubles
        from kiln.training.checkpoint import resume_epoch
        epoch = resume_epoch(job_dir)
        if epoch is not None:
            reporter.store.clear_metrics_after(job.id, epoch)
            reporter.log(f"Resuming from epoch {epoch:g}")
    return train(config, PackedDataset(dataset_dir), job_dir, reporter, resume=resume)
