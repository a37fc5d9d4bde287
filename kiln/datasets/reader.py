"""Reading a packed dataset (its files and layout: kiln.datasets.packed_format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kiln.datasets import packed_format as fmt
from kiln.datasets.images import decode_image, encode_image


class EncodedImages:
    """PNG/JPEG entries of one split, decoded on access: len(), [i], [slice], [int array]."""

    def __init__(self, blob: Path, offsets: np.ndarray, shape: tuple[int, int, int]) -> None:
        self.blob, self.offsets, self.shape = blob, offsets, shape
        self._data: np.ndarray | None = None  # the blob's bytes, mapped on first use

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get a copy: reopen the blob there instead of pickling a mapping.
        return {**self.__dict__, "_data": None}

    def _bytes(self) -> np.ndarray:
        if self._data is None:  # np.memmap refuses an empty file
            empty = self.blob.stat().st_size == 0
            self._data = np.zeros(0, np.uint8) if empty else np.memmap(self.blob, dtype=np.uint8, mode="r")
        return self._data

    def encoded(self, index: int) -> bytes:
        """The stored PNG/JPEG bytes of one entry."""
        i = range(len(self))[index]
        return self._bytes()[self.offsets[i] : self.offsets[i + 1]].tobytes()

    def __getitem__(self, key: int | slice | np.ndarray | list[int]) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return decode_image(self.encoded(int(key)), self.shape[2])
        index = np.arange(len(self))[key]
        out = np.empty((len(index),) + self.shape, dtype=fmt.PIXEL_DTYPE)
        for j, i in enumerate(index):
            out[j] = decode_image(self.encoded(int(i)), self.shape[2])
        return out


class PackedDataset:
    """A dataset built by kiln.datasets.pack.build_dataset; only complete ones (with a manifest) open."""

    def __init__(self, job_dir: str | Path) -> None:
        self.dir = Path(job_dir)
        self.files = fmt.PackedFiles(self.dir)
        manifest = fmt.read_manifest(self.dir)
        if manifest is None:
            raise FileNotFoundError(f"{self.dir} holds no finished dataset (no {fmt.MANIFEST})")
        self.manifest: dict[str, Any] = manifest
        self._encoded_cache: dict[str, EncodedImages] = {}
        self._line_cache: dict[str, list[str]] = {}

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        image = self.manifest["image"]
        return int(image["height"]), int(image["width"]), int(image["channels"])

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def _split(self, split: str) -> dict[str, Any]:
        try:
            return self.manifest["splits"][split]
        except KeyError:
            raise KeyError(f"this dataset has no {split!r} split (it has {', '.join(self.splits)})") from None

    def count(self, split: str) -> int:
        return int(self._split(split)["count"])

    def images(self, split: str) -> np.ndarray | EncodedImages:
        """Raw storage: a read-only np.memmap (N, H, W, C) uint8. Encoded: an EncodedImages."""
        info = self._split(split)
        if info["storage"] == "raw":
            return fmt.open_raw(self.dir, split, int(info["count"]), self.image_shape)
        return self._encoded(split)

    def _encoded(self, split: str) -> EncodedImages:
        if split not in self._encoded_cache:
            offsets = np.load(self.files.offsets(split))
            self._encoded_cache[split] = EncodedImages(self.files.blob(split), offsets, self.image_shape)
        return self._encoded_cache[split]

    def targets(self, split: str) -> np.ndarray:
        self._split(split)
        return fmt.read_split_array(self.dir, split, "labels")

    def inverted(self, split: str) -> np.ndarray:
        self._split(split)
        return fmt.read_split_array(self.dir, split, "inverted")

    def mean_image(self) -> np.ndarray:
        return fmt.read_mean(self.dir)

    def mean_pixel(self) -> np.ndarray:
        return np.asarray(self.manifest["mean_pixel"], dtype=np.float32)

    def indices(self, split: str, label: int | None = None) -> np.ndarray:
        """Entry indices of a split, optionally only those of one label (the explorer's filter)."""
        if label is None:
            return np.arange(self.count(split))
        return np.flatnonzero(self.targets(split) == int(label))

    def image_png(self, split: str, index: int) -> bytes:
        """One stored image as PNG bytes (PNG storage hands back the stored bytes untouched)."""
        index = range(self.count(split))[index]
        if self._split(split)["storage"] == "png":
            return self._encoded(split).encoded(index)
        return encode_image(np.asarray(self.images(split)[index]), "png")

    def source_path(self, split: str, index: int) -> str:
        """The image file an entry was made from (inverted copies give their original's file)."""
        line = int(fmt.read_split_array(self.dir, split, "source", mmap=True)[index])
        return self._lines(split)[line]

    def _lines(self, split: str) -> list[str]:
        if split not in self._line_cache:
            self._line_cache[split] = fmt.read_list_paths(self.dir, split)
        return self._line_cache[split]
