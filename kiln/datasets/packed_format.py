"""The packed-dataset format: every file name, dtype and shape, read and written only through here.

Layout of a packed dataset in its job folder:

    labels.txt, train.txt, val.txt, test.txt   DIGITS' lists (`abs_path label_index`)
    <split>.u8                                 raw pixels, uint8 (N, H, W, C)      storage raw
    <split>.blob, <split>.offsets.npy          concatenated PNG/JPEG, N+1 offsets  storage png|jpg
    <split>.labels.npy                         int64 label per entry
    <split>.inverted.npy                       bool, True for the 255 - x copies (add_inverted)
    <split>.source.npy                         int64 line of <split>.txt each entry came from
    mean.npy, mean.png                         mean of the stored train entries (float32 HWC)
    errors.log                                 every image that failed to load
    manifest.json                              labels, image shape, per-split counts, ...

The completeness rule: manifest.json is removed before a (re)build starts and written last, so a
folder with a manifest holds a complete dataset and one without must not be read. Every file is
written atomically (kiln.atomic), so none is ever seen half written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kiln.atomic import AtomicFile, atomic_write_bytes, atomic_write_json, atomic_write_text, remove_leftover_temps
from kiln.datasets.images import encode_image

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
LABELS_TXT = "labels.txt"
MEAN_NPY = "mean.npy"
MEAN_PNG = "mean.png"
ERRORS_LOG = "errors.log"

PIXEL_DTYPE = np.uint8  # <split>.u8, (N, H, W, C)
INDEX_DTYPE = np.int64  # labels, source lines, blob offsets
MEAN_DTYPE = np.float32  # mean.npy, (H, W, C)
SPLIT_ARRAYS = {"labels": INDEX_DTYPE, "inverted": np.bool_, "source": INDEX_DTYPE}


def storage_for(encoding: str) -> str:
    """How a split's pixels are stored for a spec's encoding: "raw", "png" or "jpg"."""
    return "raw" if encoding == "none" else encoding


@dataclass(frozen=True)
class PackedFiles:
    """The paths of one packed dataset's files."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def labels_txt(self) -> Path:
        return self.root / LABELS_TXT

    @property
    def mean_npy(self) -> Path:
        return self.root / MEAN_NPY

    @property
    def mean_png(self) -> Path:
        return self.root / MEAN_PNG

    @property
    def errors_log(self) -> Path:
        return self.root / ERRORS_LOG

    def list_txt(self, split: str) -> Path:
        return self.root / f"{split}.txt"

    def raw(self, split: str) -> Path:
        return self.root / f"{split}.u8"

    def blob(self, split: str) -> Path:
        return self.root / f"{split}.blob"

    def offsets(self, split: str) -> Path:
        return self.root / f"{split}.offsets.npy"

    def array(self, split: str, name: str) -> Path:
        """<split>.<name>.npy for name in SPLIT_ARRAYS."""
        if name not in SPLIT_ARRAYS:
            raise KeyError(f"no per-split array {name!r} (there are {', '.join(SPLIT_ARRAYS)})")
        return self.root / f"{split}.{name}.npy"


# -- the manifest and the completeness rule --------------------------------------------------------


def is_complete(job_dir: str | Path) -> bool:
    """True when job_dir holds a finished dataset (its manifest exists)."""
    return PackedFiles(Path(job_dir)).manifest.is_file()


def read_manifest(job_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a finished dataset, or None while there is none."""
    path = PackedFiles(Path(job_dir)).manifest
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def mark_incomplete(job_dir: Path) -> None:
    """Called before a build writes anything: until write_manifest, the folder is not a dataset.
    Also drops what a killed earlier build left half written."""
    PackedFiles(job_dir).manifest.unlink(missing_ok=True)
    remove_leftover_temps(job_dir)


def write_manifest(job_dir: Path, manifest: dict[str, Any]) -> None:
    """Written last: from here on the dataset is complete."""
    atomic_write_json(PackedFiles(job_dir).manifest, manifest, indent=1)


# -- small files -----------------------------------------------------------------------------------


def write_lists(job_dir: Path, labels: list[str], splits: Mapping[str, Iterable[tuple[str, int]]]) -> None:
    """labels.txt and one `path label` list per non-empty split."""
    files = PackedFiles(job_dir)
    atomic_write_text(files.labels_txt, "".join(f"{name}\n" for name in labels))
    for split, entries in splits.items():
        text = "".join(f"{path} {label}\n" for path, label in entries)
        if text:
            atomic_write_text(files.list_txt(split), text)


def read_list_paths(job_dir: Path, split: str) -> list[str]:
    """The image path of every line of <split>.txt (paths may contain spaces; the label may not)."""
    text = PackedFiles(job_dir).list_txt(split).read_text(encoding="utf-8")
    return [line.rsplit(" ", 1)[0] for line in text.splitlines()]


def save_npy(path: Path, array: np.ndarray) -> None:
    with AtomicFile(path) as f:  # a file object: np.save would append ".npy" to a temp path
        np.save(f, array)


def write_split_arrays(job_dir: Path, split: str, arrays: Mapping[str, np.ndarray]) -> None:
    """labels, inverted and source of one split, each in its format dtype."""
    files = PackedFiles(job_dir)
    for name, dtype in SPLIT_ARRAYS.items():
        save_npy(files.array(split, name), np.asarray(arrays[name]).astype(dtype))


def read_split_array(job_dir: Path, split: str, name: str, mmap: bool = False) -> np.ndarray:
    return np.load(PackedFiles(job_dir).array(split, name), mmap_mode="r" if mmap else None)


def offsets_from_lengths(lengths: np.ndarray) -> np.ndarray:
    """N+1 offsets into the blob: entry i is blob[offsets[i]:offsets[i + 1]]."""
    offsets = np.zeros(len(lengths) + 1, dtype=INDEX_DTYPE)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def open_raw(job_dir: Path, split: str, count: int, shape: tuple[int, int, int]) -> np.ndarray:
    """A raw split's pixels: a read-only memmap (count, H, W, C), or an empty array for no entries."""
    if count == 0:
        return np.zeros((0,) + shape, dtype=PIXEL_DTYPE)
    return np.memmap(PackedFiles(job_dir).raw(split), dtype=PIXEL_DTYPE, mode="r", shape=(count,) + shape)


def write_mean(job_dir: Path, mean: np.ndarray) -> None:
    """mean.npy (float32 HWC) and mean.png (the same, rounded, for people)."""
    files = PackedFiles(job_dir)
    save_npy(files.mean_npy, mean.astype(MEAN_DTYPE))
    atomic_write_bytes(files.mean_png, encode_image(np.clip(np.rint(mean), 0, 255).astype(PIXEL_DTYPE), "png"))


def read_mean(job_dir: Path) -> np.ndarray:
    return np.load(PackedFiles(job_dir).mean_npy).astype(MEAN_DTYPE)
