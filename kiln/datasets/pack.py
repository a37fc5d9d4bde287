"""Dataset packing: decode and resize every image once, into files the trainer reads directly.

Layout of a packed dataset in the job folder (manifest.json is written last; its presence
means the dataset is complete):

    labels.txt, train.txt, val.txt, test.txt   DIGITS' lists (`abs_path label_index`)
    <split>.u8                                 raw pixels, uint8 (N, H, W, C)      encoding none
    <split>.blob, <split>.offsets.npy          concatenated PNG/JPEG, N+1 offsets  encoding png|jpg
    <split>.labels.npy                         int64 label per entry
    <split>.inverted.npy                       bool, True for the 255 - x copies (add_inverted)
    <split>.source.npy                         int64 line of <split>.txt each entry came from
    mean.npy, mean.png                         mean of the stored train entries (float32 HWC)
    errors.log                                 every image that failed to load

Images are processed in chunks by a pool of worker processes; the parent only appends each
chunk's bytes to the split's file, so memory stays flat whatever the image count.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import threading
import time
import warnings
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from kiln.datasets.images import ImageLoadError, encode_image, load_image, resize_image
from kiln.datasets.sources import SPLITS, DatasetInputError, Entry, SourceLists, collect_images
from kiln.datasets.spec import DatasetSpec
from kiln.reporting import Reporter, Stopped

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
MAX_ERRORS_IN_MANIFEST = 200
MAX_ERRORS_IN_LOG = 20          # per split, in the job log; errors.log has them all
PARSE_SHARE = 0.05              # progress fraction given to parsing
CHUNK_BYTES = 8 << 20           # raw pixels per chunk sent back by a worker
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "testing"}


@dataclass(frozen=True)
class _Params:
    channels: int
    height: int
    width: int
    mode: str
    encoding: str
    seed: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.channels

    @property
    def item_bytes(self) -> int:
        return self.height * self.width * self.channels


@dataclass
class _Chunk:
    """What a worker sends back for one chunk of paths."""
    ok: np.ndarray                       # bool per path
    errors: list[tuple[int, str]]        # (position in chunk, message)
    pixels: np.ndarray | None            # (n_ok, H, W, C) for raw storage
    total: np.ndarray | None             # float64 HWC sum of the ok images (train only)
    blob: bytes = b""                    # encoded images, concatenated
    lengths: np.ndarray | None = None
    inv_blob: bytes = b""                # encoded inverted copies
    inv_lengths: np.ndarray | None = None


# ------------------------------------------------------------------ worker side

def _worker_init() -> None:
    # load_image refuses bombs itself; Pillow's warning would only add noise to the job log.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def _encode_all(images: np.ndarray, fmt: str) -> tuple[bytes, np.ndarray]:
    parts = [encode_image(img, fmt) for img in images]
    return b"".join(parts), np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))


def _process_chunk(task: tuple[_Params, int, int, list[str], bool, bool]) -> _Chunk:
    """Decode and resize one chunk of paths; failed images are reported, not raised."""
    params, split_id, start, paths, want_sum, invert = task
    random_pad = params.mode in ("fill", "half_crop")
    rng = np.random.default_rng([params.seed, split_id, start]) if random_pad else None
    out = np.empty((len(paths),) + params.shape, dtype=np.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    errors: list[tuple[int, str]] = []
    n = 0
    for i, path in enumerate(paths):
        try:
            image = load_image(path, params.channels)
            out[n] = resize_image(image, params.height, params.width, params.mode, rng)
        except ImageLoadError as exc:
            errors.append((i, str(exc)))
            continue
        except Exception as exc:  # a decoder bug must cost one image, not the whole dataset
            errors.append((i, f"{path}: {type(exc).__name__}: {exc}"))
            continue
        ok[i] = True
        n += 1
    pixels = out[:n]
    total = pixels.sum(axis=0, dtype=np.float64) if want_sum else None
    if params.encoding == "none":
        return _Chunk(ok, errors, pixels, total)
    blob, lengths = _encode_all(pixels, params.encoding)
    chunk = _Chunk(ok, errors, None, total, blob, lengths)
    if invert:
        chunk.inv_blob, chunk.inv_lengths = _encode_all(255 - pixels, params.encoding)
    return chunk


# ------------------------------------------------------------------ parent side: files

def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(_tmp(path), "wb") as f:
        np.save(f, array)
    os.replace(_tmp(path), path)


def _write_text(path: Path, text: str) -> None:
    _tmp(path).write_text(text, encoding="utf-8")
    os.replace(_tmp(path), path)


def _write_json(path: Path, data: dict) -> None:
    _write_text(path, json.dumps(data, indent=1))


class _RawFile:
    """Raw (N, H, W, C) pixels. The file is preallocated, written in order (so failed images leave
    no gap) and truncated at the end. Plain positional writes rather than a np.memmap keep the
    parent's resident memory flat (dirty mapped pages would count against it)."""

    def __init__(self, path: Path, item_bytes: int, capacity: int) -> None:
        self.path, self.item = path, item_bytes
        self.f = open(_tmp(path), "w+b")
        self.f.truncate(capacity * item_bytes)
        self.count = 0

    def append(self, chunk: _Chunk) -> None:
        assert chunk.pixels is not None
        os.pwrite(self.f.fileno(), np.ascontiguousarray(chunk.pixels).data, self.count * self.item)
        self.count += len(chunk.pixels)

    def append_inverted(self) -> None:
        """Entries [n, 2n) become 255 - entries [0, n), in blocks of constant size."""
        n, fd = self.count, self.f.fileno()
        block = max(1, CHUNK_BYTES // self.item)
        for start in range(0, n, block):
            k = min(block, n - start)
            data = np.frombuffer(os.pread(fd, k * self.item, start * self.item), dtype=np.uint8)
            os.pwrite(fd, (255 - data).data, (n + start) * self.item)
        self.count = 2 * n

    def finish(self) -> None:
        self.f.truncate(self.count * self.item)
        self.f.close()
        os.replace(_tmp(self.path), self.path)

    def discard(self) -> None:
        self.f.close()
        _tmp(self.path).unlink(missing_ok=True)


class _BlobFile:
    """Encoded images concatenated in <split>.blob, with N+1 offsets; inverted copies are kept in a
    side file and appended at the end, so they follow the originals as in raw storage."""

    def __init__(self, path: Path, inverted: bool) -> None:
        self.path = path
        self.side = path.with_name(path.name + ".inv")
        self.f = open(_tmp(path), "wb")
        self.inv = open(_tmp(self.side), "w+b") if inverted else None
        self.lengths: list[np.ndarray] = []
        self.inv_lengths: list[np.ndarray] = []

    @property
    def count(self) -> int:
        return sum(len(x) for x in self.lengths)

    def append(self, chunk: _Chunk) -> None:
        self.f.write(chunk.blob)
        self.lengths.append(chunk.lengths if chunk.lengths is not None else np.zeros(0, np.int64))
        if self.inv is not None:
            self.inv.write(chunk.inv_blob)
            self.inv_lengths.append(chunk.inv_lengths)

    def append_inverted(self) -> None:
        if self.inv is None:
            return
        self.inv.seek(0)
        shutil.copyfileobj(self.inv, self.f, 1 << 20)
        self.lengths += self.inv_lengths
        self.inv_lengths = []
        self._close_side()

    def finish(self) -> None:
        self.f.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        _save_npy(self.path.with_name(self.path.stem + ".offsets.npy"), offsets)
        os.replace(_tmp(self.path), self.path)

    def _close_side(self) -> None:
        if self.inv is not None:
            self.inv.close()
            _tmp(self.side).unlink(missing_ok=True)
            self.inv = None

    def discard(self) -> None:
        self.f.close()
        self._close_side()
        _tmp(self.path).unlink(missing_ok=True)


class _SplitWriter:
    """Everything stored for one split: pixels, labels, inverted flags, source lines, statistics."""

    def __init__(self, job_dir: Path, split: str, entries: list[Entry], params: _Params,
                 n_labels: int, inverted: bool) -> None:
        self.job_dir, self.split, self.params, self.inverted = job_dir, split, params, inverted
        self.n_labels = n_labels
        self.storage = "raw" if params.encoding == "none" else params.encoding
        if self.storage == "raw":
            capacity = len(entries) * (2 if inverted else 1)
            self.data: _RawFile | _BlobFile = _RawFile(job_dir / f"{split}.u8", params.item_bytes, capacity)
        else:
            self.data = _BlobFile(job_dir / f"{split}.blob", inverted)
        self.labels: list[np.ndarray] = []
        self.sources: list[np.ndarray] = []
        self.errors_per_class = np.zeros(n_labels, dtype=np.int64)
        self.total = np.zeros(params.shape, dtype=np.float64) if split == "train" else None

    def add(self, chunk: _Chunk, labels: np.ndarray, start: int) -> None:
        self.data.append(chunk)
        self.labels.append(labels[chunk.ok])
        self.sources.append(start + np.flatnonzero(chunk.ok))
        if chunk.errors:
            np.add.at(self.errors_per_class, labels[[i for i, _ in chunk.errors]], 1)
        if self.total is not None and chunk.total is not None:
            self.total += chunk.total

    def finish(self) -> dict[str, Any]:
        labels = np.concatenate(self.labels) if self.labels else np.zeros(0, np.int64)
        sources = np.concatenate(self.sources) if self.sources else np.zeros(0, np.int64)
        n = len(labels)
        flags = np.zeros(n, dtype=bool)
        if self.inverted:
            self.data.append_inverted()
            labels, sources = np.tile(labels, 2), np.tile(sources, 2)
            flags = np.concatenate([flags, np.ones(n, dtype=bool)])
        self.data.finish()
        for name, array in (("labels", labels.astype(np.int64)), ("inverted", flags),
                            ("source", sources.astype(np.int64))):
            _save_npy(self.job_dir / f"{self.split}.{name}.npy", array)
        return {"count": len(labels),
                "per_class": np.bincount(labels, minlength=self.n_labels).tolist(),
                "errors_per_class": self.errors_per_class.tolist(),
                "inverted": int(flags.sum()),
                "storage": self.storage}

    def mean(self) -> np.ndarray | None:
        """Mean of every stored train entry, inverted copies included (what the network sees)."""
        n = sum(len(x) for x in self.labels)
        if self.total is None or n == 0:
            return None
        total = self.total + (255.0 * n - self.total if self.inverted else 0.0)
        return total / (n * (2 if self.inverted else 1))

    def discard(self) -> None:
        self.data.discard()


def _write_mean(job_dir: Path, mean: np.ndarray) -> list[float]:
    _save_npy(job_dir / "mean.npy", mean.astype(np.float32))
    image = np.clip(np.rint(mean), 0, 255).astype(np.uint8)
    pil = Image.fromarray(image[:, :, 0], "L") if image.shape[2] == 1 else Image.fromarray(image, "RGB")
    pil.save(_tmp(job_dir / "mean.png"), format="PNG")
    os.replace(_tmp(job_dir / "mean.png"), job_dir / "mean.png")
    return [float(v) for v in mean.reshape(-1, mean.shape[2]).mean(axis=0)]


def _write_lists(job_dir: Path, src: SourceLists) -> None:
    _write_text(job_dir / "labels.txt", "".join(f"{name}\n" for name in src.labels))
    for split in SPLITS:
        entries = src.splits.get(split) or []
        if entries:
            _write_text(job_dir / f"{split}.txt", "".join(f"{p} {label}\n" for p, label in entries))


# ------------------------------------------------------------------ parent side: running chunks

def _chunk_size(n_total: int, item_bytes: int, workers: int) -> int:
    """Big enough to amortise the per-task cost, small enough for ~16 tasks per worker and flat memory."""
    by_bytes = max(1, CHUNK_BYTES // item_bytes)
    balanced = -(-n_total // (max(workers, 1) * 16))
    return max(1, min(by_bytes, 1024, max(balanced, 32)))


def start_method() -> str:
    """fork on Linux when no other Python thread runs: workers start in milliseconds with
    everything imported. Otherwise forkserver (spawn where there is none), since forking while
    another thread holds a lock can deadlock the child. NumPy's idle BLAS threads do not count:
    the workers never call BLAS."""
    if sys.platform == "linux" and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class _Workers:
    """Runs chunk tasks in worker processes, results in task order, at most a few chunks ahead of
    the parent (Pool.imap would queue everything and let finished results pile up in memory).
    ProcessPoolExecutor rather than Pool: a worker that dies (OOM killer, a crashing decoder)
    raises BrokenProcessPool instead of hanging the job. Started before parsing, so process
    start-up overlaps the folder walk."""

    def __init__(self, workers: int, log: Callable[[str], None]) -> None:
        if workers > 1 and multiprocessing.current_process().daemon:
            log("Running in one process: a daemonic process may not start worker processes.")
            workers = 1
        self.workers = workers
        self.executor: ProcessPoolExecutor | None = None
        if workers > 1:
            ctx = multiprocessing.get_context(start_method())
            if ctx.get_start_method() == "forkserver":
                ctx.set_forkserver_preload([__name__])
            self.executor = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init)
            with warnings.catch_warnings():  # Python 3.12+ warns about the BLAS threads (see above)
                warnings.simplefilter("ignore", DeprecationWarning)
                for _ in range(workers):  # start every process now
                    self.executor.submit(int)
        else:
            _worker_init()

    def run(self, fn: Callable, tasks: Iterable[tuple[Any, tuple]]) -> Iterator[tuple[Any, Any]]:
        if self.executor is None:
            for key, args in tasks:
                yield key, fn(args)
            return
        pending: deque = deque()
        for key, args in tasks:
            pending.append((key, self.executor.submit(fn, args)))
            if len(pending) > 2 * self.workers:
                key0, future = pending.popleft()
                yield key0, future.result()
        while pending:
            key0, future = pending.popleft()
            yield key0, future.result()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None


def _tasks(src: SourceLists, splits: list[str], params: _Params, size: int,
           inverted: bool) -> Iterator[tuple[tuple[str, int, list[Entry]], tuple]]:
    for split in splits:
        entries = src.splits[split]
        for start in range(0, len(entries), size):
            part = entries[start:start + size]
            args = (params, SPLITS.index(split), start, [p for p, _ in part],
                    split == "train", inverted and split == "train")
            yield (split, start, part), args


class _ErrorLog:
    def __init__(self, job_dir: Path, reporter: Reporter) -> None:
        self.path = job_dir / "errors.log"
        self.f = open(_tmp(self.path), "w", encoding="utf-8")
        self.reporter = reporter
        self.kept: list[dict[str, Any]] = []
        self.count = 0
        self.per_split: dict[str, int] = {}

    def add(self, split: str, path: str, label: int, message: str) -> None:
        line = f"[{path} {label}] ImageLoadError: {message}"
        self.f.write(f"{split}\t{line}\n")
        self.count += 1
        self.per_split[split] = self.per_split.get(split, 0) + 1
        if len(self.kept) < MAX_ERRORS_IN_MANIFEST:
            self.kept.append({"split": split, "path": path, "label": label, "message": message})
        if self.per_split[split] <= MAX_ERRORS_IN_LOG:
            self.reporter.log(line)

    def finish(self) -> None:
        self.f.close()
        os.replace(_tmp(self.path), self.path)

    def discard(self) -> None:
        self.f.close()
        _tmp(self.path).unlink(missing_ok=True)


# ------------------------------------------------------------------ the job

def _params(spec: DatasetSpec) -> _Params:
    return _Params(int(spec.resize_channels), int(spec.resize_height), int(spec.resize_width),
                   spec.resize_mode, spec.encoding, int(spec.seed or 0))


def _log_parse(reporter: Reporter, src: SourceLists) -> None:
    reporter.log(f"Found {src.parse_info()['found']} images in {len(src.labels)} categories.")
    for split in SPLITS:
        reporter.log(f"Selected {len(src.splits.get(split) or [])} for {SPLIT_NAMES[split]}.")


def _train_field(spec: DatasetSpec) -> str:
    return "folder_train" if spec.method == "folder" else "textfile_train_images"


def _finish_split(writer: _SplitWriter, job_dir: Path, spec: DatasetSpec, errors: _ErrorLog,
                  reporter: Reporter, out: dict[str, Any]) -> None:
    stats = writer.finish()
    out["splits"][writer.split] = stats
    failed = errors.per_split.get(writer.split, 0)
    reporter.log(f"{stats['count']} images written to database ({writer.split}"
                 f"{f', {failed} failed to load' if failed else ''})")
    if writer.split != "train":
        return
    if stats["count"] == 0:
        first = errors.kept[0]["message"] if errors.kept else "no images"
        raise DatasetInputError(_train_field(spec), f"none of the training images could be read "
                                f"(first error: {first})")
    out["mean_pixel"] = _write_mean(job_dir, writer.mean())


def _pack(job_dir: Path, spec: DatasetSpec, src: SourceLists, reporter: Reporter, runner: _Workers,
          chunk_size: int | None, out: dict[str, Any]) -> None:
    params = _params(spec)
    splits = [s for s in SPLITS if src.splits.get(s)]
    total = sum(len(src.splits[s]) for s in splits)
    size = chunk_size or _chunk_size(total, params.item_bytes, runner.workers)
    inverted = bool(spec.add_inverted)
    errors = _ErrorLog(job_dir, reporter)
    writers: dict[str, _SplitWriter] = {}
    done = 0
    try:
        results = runner.run(_process_chunk, _tasks(src, splits, params, size, inverted))
        for (split, start, part), chunk in results:
            if split not in writers:
                for previous in writers.values():
                    if previous.split not in out["splits"]:
                        _finish_split(previous, job_dir, spec, errors, reporter, out)
                writers[split] = _SplitWriter(job_dir, split, src.splits[split], params,
                                              len(src.labels), inverted and split == "train")
            labels = np.fromiter((lab for _, lab in part), dtype=np.int64, count=len(part))
            writers[split].add(chunk, labels, start)
            for i, message in chunk.errors:
                errors.add(split, part[i][0], part[i][1], message)
            done += len(part)
            reporter.progress(PARSE_SHARE + (0.99 - PARSE_SHARE) * done / total,
                              f"{split}: {start + len(part)}/{len(src.splits[split])} images")
            if reporter.should_stop():
                raise Stopped("dataset creation aborted")
        for writer in writers.values():
            if writer.split not in out["splits"]:
                _finish_split(writer, job_dir, spec, errors, reporter, out)
        errors.finish()
    except BaseException:
        for writer in writers.values():
            writer.discard()
        errors.discard()
        raise
    out["errors"], out["error_count"] = errors.kept, errors.count


def _manifest_head(spec: DatasetSpec, src: SourceLists) -> dict[str, Any]:
    return {
        "version": MANIFEST_VERSION,
        "labels": src.labels,
        "image": {"width": int(spec.resize_width), "height": int(spec.resize_height),
                  "channels": int(spec.resize_channels), "resize_mode": spec.resize_mode,
                  "encoding": spec.encoding},
        "splits": {}, "errors": [], "error_count": 0, "mean_pixel": [],
        "parse": src.parse_info(),
        "source": spec.to_dict(),
    }


def build_dataset(spec: DatasetSpec, job_dir: Path, reporter: Reporter, workers: int = 2,
                  chunk_size: int | None = None) -> dict:
    """Build the packed dataset that spec describes in job_dir and return its manifest.

    Raises DatasetInputError for problems with the user's input (field, message), and
    kiln.reporting.Stopped when reporter.should_stop() turns true (checked after every chunk).
    """
    started = time.monotonic()
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / MANIFEST).unlink(missing_ok=True)
    reporter.progress(0.0, "Parsing image lists")
    runner = _Workers(workers, reporter.log)
    try:
        src = collect_images(spec, reporter.log)
        _log_parse(reporter, src)
        _write_lists(job_dir, src)
        reporter.progress(PARSE_SHARE, "Lists written")
        if reporter.should_stop():
            raise Stopped("dataset creation aborted")
        out = _manifest_head(spec, src)
        _pack(job_dir, spec, src, reporter, runner, chunk_size, out)
    finally:
        runner.close()
    out["seconds"] = round(time.monotonic() - started, 3)
    _write_json(job_dir / MANIFEST, out)
    reporter.progress(1.0, "Done")
    return out
