"""An evaluation job: a model's snapshot on a dataset split, a list, a folder or an uploaded zip.

Also run at the end of training on the dataset's test split (the lab's datasets have one), so
the model page shows test accuracy beside val accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.config import Settings
from kiln.jobs.errors import UserFacingError
from kiln.jobs.gpus import job_device
from kiln.reporting import Reporter
from kiln.store import Job

LIST_FILE = "list.txt"
ARCHIVE_FILE = "upload.zip"
TEST_DIR = "test-evaluation"  # inside a model's folder: its test split, evaluated after training


def run_evaluation(job: Job, job_dir: Path, settings: Settings, reporter: Reporter) -> dict[str, Any]:
    from kiln.inference.evaluate import evaluate
    from kiln.inference.predictor import Predictor

    params = job.params
    model_dir = settings.jobs_dir / params["model_id"]
    try:
        predictor = Predictor.from_job_dir(model_dir, params.get("epoch"), device=job_device(job))
    except FileNotFoundError as exc:
        raise UserFacingError(f"Model {params['model_id']}: {exc}.") from None
    items, problems, stored = _items(params, job_dir, settings, list(predictor.labels))
    limit = params.get("num_test_images")
    if limit:
        items = items[: int(limit)]
    reporter.log(f"Evaluating {len(items)} images with {params['model_id']} at epoch {predictor.epoch:g}")
    return evaluate(
        predictor, items, job_dir, reporter, stored=stored, problems=problems, max_bytes=settings.max_file_bytes
    )


def _items(params: dict[str, Any], job_dir: Path, settings: Settings, labels: list[str]) -> tuple[list, list, Any]:
    from kiln import paths
    from kiln.archives import extract_archive
    from kiln.inference.sources import folder_items, list_items

    source = params["source"]
    kind = source["kind"]
    if kind == "split":
        return split_source(settings.jobs_dir / params["dataset_id"], source["split"], labels)
    if kind == "list":
        text = (job_dir / LIST_FILE).read_text(encoding="utf-8", errors="replace")
        items, problems = list_items(text, source.get("folder") or None, labels, settings.allowed_roots)
        return items, problems, None
    if kind == "folder":
        folder = paths.check_readable(source["folder"], settings.allowed_roots, kind="dir")
        items, problems = folder_items(folder, labels)
        return items, problems, None
    images = job_dir / "images"
    if not images.exists():
        extract_archive(job_dir / ARCHIVE_FILE, images)
    items, problems = folder_items(_root_of(images), labels)
    return items, problems, None


def split_source(dataset_dir: Path, split: str, labels: list[str]) -> tuple[list, list, Any]:
    """A dataset split's entries and its stored images (decoded chunk by chunk)."""
    from kiln.datasets.reader import PackedDataset
    from kiln.inference.sources import split_items

    try:
        dataset = PackedDataset(dataset_dir)
    except FileNotFoundError:
        raise UserFacingError(
            "The model's dataset is gone or unfinished; evaluate a list or a folder instead."
        ) from None
    if dataset.labels != labels:
        raise UserFacingError("The dataset's classes are not the model's; evaluate a list or a folder instead.")
    if split not in dataset.splits or dataset.count(split) == 0:
        raise UserFacingError(f"The dataset has no {split} images; it has {', '.join(dataset.splits)}.")
    return split_items(dataset.targets(split), split), [], dataset.images(split)


def _root_of(folder: Path) -> Path:
    """A zip of one top folder (``digits/0/a.png``) holds the class folders one level down."""
    entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(entries) == 1 and entries[0].is_dir() and not any(f.is_file() for f in entries[0].iterdir()):
        return entries[0]
    return folder


def evaluate_test_split(job: Job, job_dir: Path, settings: Settings, reporter: Reporter) -> dict[str, Any] | None:
    """After training: the test split (when the dataset has one) with the latest snapshot, into TEST_DIR."""
    from kiln.datasets.reader import PackedDataset
    from kiln.inference.evaluate import evaluate
    from kiln.inference.predictor import Predictor

    dataset_dir = settings.jobs_dir / (job.dataset_id or "")
    try:
        dataset = PackedDataset(dataset_dir)
    except FileNotFoundError:
        return None
    if "test" not in dataset.splits or dataset.count("test") == 0:
        return None
    predictor = Predictor.from_job_dir(job_dir, device=job_device(job))  # the model's GPU, else the CPU
    items, problems, stored = split_source(dataset_dir, "test", list(predictor.labels))
    reporter.log(f"Evaluating the test split ({len(items)} images) at epoch {predictor.epoch:g}")
    quiet = _Quiet(reporter)  # training's progress stays at 100 %
    summary = evaluate(predictor, items, job_dir / TEST_DIR, quiet, stored=stored, problems=problems)
    return {"epoch": predictor.epoch, **summary}


class _Quiet:
    """Passes logs and stop requests through, keeps progress to itself."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter

    def progress(self, fraction: float, message: str = "") -> None:
        pass

    def log(self, line: str) -> None:
        self._reporter.log(line)

    def metrics(self, epoch: float, values: dict[str, float], phase: str = "train") -> None:
        pass

    def snapshot(self, epoch: float, path: str, values: dict[str, Any]) -> None:
        pass

    def should_stop(self) -> bool:
        return self._reporter.should_stop()
