"""Dataset packing: decode and resize every image once, into files the trainer reads directly.

The story of a build: remove the old manifest, start the worker processes, parse the image lists
and write them, decode the images chunk by chunk in the workers (kiln.datasets.chunks) while the
parent appends each chunk to its split's files (kiln.datasets.pack_writers), write the mean, and
write the manifest last. The files and their layout: kiln.datasets.packed_format.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kiln.datasets import chunks
from kiln.datasets import packed_format as fmt
from kiln.datasets.chunks import Chunk, ChunkTask, ImageParams, decode_chunk, worker_init
from kiln.datasets.pack_writers import ErrorLog, PackTarget, SplitWriter
from kiln.datasets.pool import OrderedPool, start_method  # noqa: F401  (start_method: kiln.datasets.stdsets)
from kiln.datasets.sources import SPLITS, UNRESTRICTED, DatasetInputError, Entry, SourceLists, collect_images
from kiln.datasets.spec import DatasetSpec
from kiln.paths import ReadPolicy
from kiln.reporting import Reporter, Stopped

PARSE_SHARE = 0.05  # progress fraction given to parsing
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "testing"}

Key = tuple[str, int, list[Entry]]  # (split, start, entries) of one chunk


def _manifest_head(spec: DatasetSpec, src: SourceLists) -> dict[str, Any]:
    return {
        "version": fmt.MANIFEST_VERSION,
        "labels": src.labels,
        "image": {
            "width": int(spec.resize_width),
            "height": int(spec.resize_height),
            "channels": int(spec.resize_channels),
            "resize_mode": spec.resize_mode,
            "encoding": spec.encoding,
        },
        "splits": {},
        "errors": [],
        "error_count": 0,
        "mean_pixel": [],
        "parse": src.parse_info(),
        "source": spec.to_dict(),
    }


def _train_field(spec: DatasetSpec) -> str:
    return "folder_train" if spec.method == "folder" else "textfile_train_images"


class _Build:
    """One build's state: the split being written, the error log and the manifest filled in."""

    def __init__(self, job_dir: Path, spec: DatasetSpec, src: SourceLists, reporter: Reporter, max_bytes: int) -> None:
        self.spec, self.src, self.reporter = spec, src, reporter
        params = ImageParams.from_spec(spec, max_bytes)
        self.target = PackTarget(fmt.PackedFiles(job_dir), params, len(src.labels))
        self.splits = [s for s in SPLITS if src.splits.get(s)]
        self.total = sum(len(src.splits[s]) for s in self.splits)
        self.inverted = bool(spec.add_inverted)
        self.manifest = _manifest_head(spec, src)
        self.errors = ErrorLog(self.target.files, reporter)
        self.writers: dict[str, SplitWriter] = {}
        self.done = 0

    def tasks(self, size: int) -> Iterator[tuple[Key, ChunkTask]]:
        for split in self.splits:
            entries = self.src.splits[split]
            for start in range(0, len(entries), size):
                part = entries[start : start + size]
                task = ChunkTask(
                    self.target.params,
                    SPLITS.index(split),
                    start,
                    [p for p, _ in part],
                    want_sum=split == "train",
                    invert=self.inverted and split == "train",
                )
                yield (split, start, part), task

    def run(self, pool: OrderedPool, size: int) -> None:
        """Write every split; on any failure (or abort) discard every file begun."""
        try:
            for key, chunk in pool.run(decode_chunk, self.tasks(size)):
                self._add(key, chunk)
            self._finish_open_splits()
            self.errors.finish()
        except BaseException:
            for writer in self.writers.values():
                writer.discard()
            self.errors.discard()
            raise
        self.manifest["errors"], self.manifest["error_count"] = self.errors.kept, self.errors.count

    def _add(self, key: Key, chunk: Chunk) -> None:
        split, start, part = key
        if split not in self.writers:
            self._finish_open_splits()  # splits arrive one after the other
            self.writers[split] = SplitWriter(
                self.target, split, len(self.src.splits[split]), self.inverted and split == "train"
            )
        labels = np.fromiter((lab for _, lab in part), dtype=np.int64, count=len(part))
        self.writers[split].add(chunk, labels, start)
        for i, message in chunk.errors:
            self.errors.add(split, part[i][0], part[i][1], message)
        self.done += len(part)
        self.reporter.progress(
            PARSE_SHARE + (0.99 - PARSE_SHARE) * self.done / self.total,
            f"{split}: {start + len(part)}/{len(self.src.splits[split])} images",
        )
        if self.reporter.should_stop():
            raise Stopped("dataset creation aborted")

    def _finish_open_splits(self) -> None:
        for writer in self.writers.values():
            if writer.split not in self.manifest["splits"]:
                self._finish_split(writer)

    def _finish_split(self, writer: SplitWriter) -> None:
        stats = writer.finish()
        self.manifest["splits"][writer.split] = stats
        failed = self.errors.per_split.get(writer.split, 0)
        self.reporter.log(
            f"{stats['count']} images written to database ({writer.split}"
            f"{f', {failed} failed to load' if failed else ''})"
        )
        if writer.split != "train":
            return
        mean = writer.mean()
        if mean is None:
            first = self.errors.kept[0]["message"] if self.errors.kept else "no images"
            raise DatasetInputError(
                _train_field(self.spec), f"none of the training images could be read (first error: {first})"
            )
        fmt.write_mean(self.target.files.root, mean)
        self.manifest["mean_pixel"] = [float(v) for v in mean.reshape(-1, mean.shape[2]).mean(axis=0)]


def _parse(spec: DatasetSpec, job_dir: Path, reporter: Reporter, policy: ReadPolicy) -> SourceLists:
    src = collect_images(spec, reporter.log, policy)
    reporter.log(f"Found {src.parse_info()['found']} images in {len(src.labels)} categories.")
    for split in SPLITS:
        reporter.log(f"Selected {len(src.splits.get(split) or [])} for {SPLIT_NAMES[split]}.")
    fmt.write_lists(job_dir, src.labels, {s: src.splits.get(s) or [] for s in SPLITS})
    reporter.progress(PARSE_SHARE, "Lists written")
    if reporter.should_stop():
        raise Stopped("dataset creation aborted")
    return src


def build_dataset(
    spec: DatasetSpec,
    job_dir: Path,
    reporter: Reporter,
    workers: int = 2,
    chunk_size: int | None = None,
    policy: ReadPolicy = UNRESTRICTED,
) -> dict:
    """Build the packed dataset that spec describes in job_dir and return its manifest.

    Everything read obeys `policy` (kiln.paths.ReadPolicy: the data roots, symlinks resolved, and
    the bytes read per file); a dataset job passes the server's, see kiln.jobs.dataset_job.

    Raises DatasetInputError for problems with the user's input (field, message), and
    kiln.reporting.Stopped when reporter.should_stop() turns true (checked after every chunk).
    """
    started = time.monotonic()
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    fmt.mark_incomplete(job_dir)
    reporter.progress(0.0, "Parsing image lists")
    pool = OrderedPool(workers, reporter.log, initializer=worker_init)  # starts while parsing runs
    try:
        build = _Build(job_dir, spec, _parse(spec, job_dir, reporter, policy), reporter, policy.max_bytes)
        size = chunk_size or chunks.chunk_size(build.total, build.target.params.item_bytes, pool.workers)
        build.run(pool, size)
    finally:
        pool.close()
    out = build.manifest
    out["seconds"] = round(time.monotonic() - started, 3)
    fmt.write_manifest(job_dir, out)
    reporter.progress(1.0, "Done")
    return out
