"""Streaming writers for the files of a packed dataset (names and dtypes: kiln.datasets.packed_format).

The parent process appends each decoded chunk straight to its split's files, so memory stays
flat whatever the image count. Every file is written under a temporary name and committed
atomically when its split is finished, or discarded when the build fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from kiln.atomic import AtomicFile
from kiln.datasets.chunks import CHUNK_BYTES, Chunk, ImageParams
from kiln.datasets.packed_format import (
    INDEX_DTYPE,
    PIXEL_DTYPE,
    PackedFiles,
    offsets_from_lengths,
    save_npy,
    storage_for,
    write_split_arrays,
)
from kiln.reporting import Reporter

MAX_ERRORS_IN_MANIFEST = 200
MAX_ERRORS_IN_LOG = 20  # per split, in the job log; errors.log has them all


@dataclass(frozen=True)
class PackTarget:
    """What every split writer of one build shares: where, what images, how many labels."""

    files: PackedFiles
    params: ImageParams
    n_labels: int


class RawFile:
    """Raw (N, H, W, C) pixels. The file is preallocated, written in order (so failed images leave
    no gap) and truncated at the end. Plain positional writes rather than a np.memmap keep the
    parent's resident memory flat (dirty mapped pages would count against it)."""

    def __init__(self, path: Path, item_bytes: int, capacity: int) -> None:
        self.item = item_bytes
        self.out = AtomicFile(path, "w+b")
        self.out.file.truncate(capacity * item_bytes)
        self.count = 0

    def append(self, chunk: Chunk) -> None:
        assert chunk.pixels is not None
        os.pwrite(self.out.file.fileno(), np.ascontiguousarray(chunk.pixels).data, self.count * self.item)
        self.count += len(chunk.pixels)

    def append_inverted(self) -> None:
        """Entries [n, 2n) become 255 - entries [0, n), in blocks of constant size."""
        n, fd = self.count, self.out.file.fileno()
        block = max(1, CHUNK_BYTES // self.item)
        for start in range(0, n, block):
            k = min(block, n - start)
            data = np.frombuffer(os.pread(fd, k * self.item, start * self.item), dtype=PIXEL_DTYPE)
            os.pwrite(fd, (255 - data).data, (n + start) * self.item)
        self.count = 2 * n

    def finish(self) -> None:
        self.out.file.truncate(self.count * self.item)
        self.out.commit()

    def discard(self) -> None:
        self.out.discard()


class BlobFile:
    """Encoded images concatenated in <split>.blob, with N+1 offsets; inverted copies are kept in a
    scratch file and appended at the end, so they follow the originals as in raw storage."""

    def __init__(self, path: Path, offsets: Path, inverted: bool) -> None:
        self.offsets_path = offsets
        self.out = AtomicFile(path, "wb")
        self.inv: IO[bytes] | None = tempfile.TemporaryFile(dir=path.parent) if inverted else None  # noqa: SIM115 (closed in close())
        self.lengths: list[np.ndarray] = []
        self.inv_lengths: list[np.ndarray] = []

    def append(self, chunk: Chunk) -> None:
        self.out.file.write(chunk.blob)
        self.lengths.append(chunk.lengths if chunk.lengths is not None else np.zeros(0, INDEX_DTYPE))
        if self.inv is not None:
            self.inv.write(chunk.inv_blob)
            self.inv_lengths.append(chunk.inv_lengths if chunk.inv_lengths is not None else np.zeros(0, INDEX_DTYPE))

    def append_inverted(self) -> None:
        if self.inv is None:
            return
        self.inv.seek(0)
        shutil.copyfileobj(self.inv, self.out.file, 1 << 20)
        self.lengths += self.inv_lengths
        self.inv_lengths = []
        self._close_scratch()

    def finish(self) -> None:
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, INDEX_DTYPE)
        save_npy(self.offsets_path, offsets_from_lengths(lengths))
        self.out.commit()

    def _close_scratch(self) -> None:
        if self.inv is not None:
            self.inv.close()  # a TemporaryFile: closing removes it
            self.inv = None

    def discard(self) -> None:
        self.out.discard()
        self._close_scratch()


class SplitWriter:
    """Everything stored for one split: pixels, labels, inverted flags, source lines, statistics."""

    def __init__(self, target: PackTarget, split: str, count: int, inverted: bool) -> None:
        self.target, self.split, self.inverted = target, split, inverted
        params, files = target.params, target.files
        self.storage = storage_for(params.encoding)
        if self.storage == "raw":
            capacity = count * (2 if inverted else 1)
            self.data: RawFile | BlobFile = RawFile(files.raw(split), params.item_bytes, capacity)
        else:
            self.data = BlobFile(files.blob(split), files.offsets(split), inverted)
        self.labels: list[np.ndarray] = []
        self.sources: list[np.ndarray] = []
        self.errors_per_class = np.zeros(target.n_labels, dtype=np.int64)
        self.total = np.zeros(params.shape, dtype=np.float64) if split == "train" else None

    def add(self, chunk: Chunk, labels: np.ndarray, start: int) -> None:
        self.data.append(chunk)
        self.labels.append(labels[chunk.ok])
        self.sources.append(start + np.flatnonzero(chunk.ok))
        if chunk.errors:
            np.add.at(self.errors_per_class, labels[[i for i, _ in chunk.errors]], 1)
        if self.total is not None and chunk.total is not None:
            self.total += chunk.total

    def finish(self) -> dict[str, Any]:
        """Commit the split's files; return its block of the manifest."""
        labels = np.concatenate(self.labels) if self.labels else np.zeros(0, INDEX_DTYPE)
        sources = np.concatenate(self.sources) if self.sources else np.zeros(0, INDEX_DTYPE)
        n = len(labels)
        flags = np.zeros(n, dtype=bool)
        if self.inverted:
            self.data.append_inverted()
            labels, sources = np.tile(labels, 2), np.tile(sources, 2)
            flags = np.concatenate([flags, np.ones(n, dtype=bool)])
        self.data.finish()
        write_split_arrays(self.target.files.root, self.split, {"labels": labels, "inverted": flags, "source": sources})
        return {
            "count": len(labels),
            "per_class": np.bincount(labels, minlength=self.target.n_labels).tolist(),
            "errors_per_class": self.errors_per_class.tolist(),
            "inverted": int(flags.sum()),
            "storage": self.storage,
        }

    def mean(self) -> np.ndarray | None:
        """Mean of every stored train entry, inverted copies included (what the network sees)."""
        n = sum(len(x) for x in self.labels)
        if self.total is None or n == 0:
            return None
        total = self.total + (255.0 * n - self.total if self.inverted else 0.0)
        return total / (n * (2 if self.inverted else 1))

    def discard(self) -> None:
        self.data.discard()


class ErrorLog:
    """errors.log (every failure), the first few per split in the job log, the first 200 kept for
    the manifest."""

    def __init__(self, files: PackedFiles, reporter: Reporter) -> None:
        self.out = AtomicFile(files.errors_log, "w", encoding="utf-8")
        self.reporter = reporter
        self.kept: list[dict[str, Any]] = []
        self.count = 0
        self.per_split: dict[str, int] = {}

    def add(self, split: str, path: str, label: int, message: str) -> None:
        line = f"[{path} {label}] ImageLoadError: {message}"
        self.out.file.write(f"{split}\t{line}\n")
        self.count += 1
        self.per_split[split] = self.per_split.get(split, 0) + 1
        if len(self.kept) < MAX_ERRORS_IN_MANIFEST:
            self.kept.append({"split": split, "path": path, "label": label, "message": message})
        if self.per_split[split] <= MAX_ERRORS_IN_LOG:
            self.reporter.log(line)

    def finish(self) -> None:
        self.out.commit()

    def discard(self) -> None:
        self.out.discard()
