"""A model job: train the configured network on a Done dataset, resuming when asked."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.config import Settings
from kiln.datasets import packed_format
from kiln.jobs.errors import UserFacingError
from kiln.reporting import Reporter
from kiln.store import Job
from kiln.training.config import TrainConfig

if TYPE_CHECKING:
    from kiln.jobs.group import Launch


def resume_point(job_dir: Path) -> float | None:
    """The epoch the next run of this job continues from; None when it starts over."""
    from kiln.training.checkpoint import resume_epoch

    if not (job_dir / "resume.pt").exists():
        return None
    return resume_epoch(job_dir)


def run_model(
    job: Job, job_dir: Path, settings: Settings, reporter: Reporter, launch: Launch | None = None
) -> dict[str, Any]:
    from kiln.jobs.group import train_job
    from kiln.training.loop import TrainingDiverged

    dataset_dir = settings.jobs_dir / (job.dataset_id or "")
    if not packed_format.is_complete(dataset_dir):
        raise UserFacingError(
            f"Dataset {job.dataset_id} is missing or not finished; create it again and clone this model."
        )
    config = TrainConfig.from_dict(job.params["config"])
    if config.network_text and config.network_language == "python" and not settings.allow_python_networks:
        raise UserFacingError(
            "This model's network is Python code, and this server does not run users' code; start kiln with "
            "KILN_ALLOW_PYTHON_NETWORKS=1 to train it, or clone it with a prototxt network."
        )
    write_network_file(config, job_dir)
    resume = (job_dir / "resume.pt").exists()
    start = resume_point(job_dir)
    if start is not None:
        reporter.log(f"Resuming from epoch {start:g}")
    try:
        # in this process, or as a torchrun group on its GPUs / cpu_processes (kiln.jobs.group)
        summary = train_job(job, job_dir, settings, reporter, dataset_dir, resume, launch)
    except TrainingDiverged as exc:  # its message names the epoch and the fix
        raise UserFacingError(str(exc)) from exc
    test = _test_split(job, job_dir, settings, reporter)
    return {**summary, "test": test} if test else summary


def _test_split(job: Job, job_dir: Path, settings: Settings, reporter: Reporter) -> dict[str, Any] | None:
    """The test split's accuracy; a failure here is logged and leaves the trained model Done."""
    from kiln.jobs.evaluation_job import evaluate_test_split
    from kiln.reporting import Stopped

    try:
        return evaluate_test_split(job, job_dir, settings, reporter)
    except Stopped:
        raise
    except Exception as exc:  # the model trained: keep it, say what the test run met
        reporter.log(f"Evaluating the test split failed: {exc}")
        return None


def write_network_file(config: TrainConfig, job_dir: Path) -> None:
    """The network text that runs, as network.prototxt (or network.py) in the model's folder."""
    from kiln.atomic import atomic_write_text
    from kiln.networks.definition import NetworkDef

    network = NetworkDef.of_config(config)
    if network.source is not None and network.text_file and not (job_dir / network.text_file).exists():
        job_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(job_dir / network.text_file, network.source)
