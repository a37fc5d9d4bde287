"""Whole batches straight from a packed split's uint8 array: no DataLoader, no per-image work in the loop.

A split is copied into RAM when it is small enough (MNIST train: 47 MB; the budget is RAM_FRACTION
of the memory available); otherwise it streams: each batch is read from the memory map, or decoded
for PNG/JPEG storage, by worker processes into a bounded ring of shared-memory slots
(kiln.training.decode_pool), so memory stays bounded for any split size. Random crop and mirror
(kiln.training.crop_mirror) are done there too, on uint8. With 0 workers (KILN_FEED_WORKERS=0) a
thread of the training process reads two batches ahead instead. Every way gives the same batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from kiln.training.crop_mirror import CropPlan, Draws, crop_into
from kiln.training.decode_pool import SLOTS_PER_WORKER, DecodePool, assemble, can_fork, feed_workers

RAM_FRACTION = 0.25  # a split is held in RAM when it takes at most this share of free memory
DECODE_CHUNK = 64  # images per task when a whole encoded split is decoded into RAM


class FeedBatch(tuple):
    """``(images, targets)``, as the loop unpacks it, plus ``draws``: how the feeder cropped and
    mirrored the images (None when it left them whole)."""

    draws: Draws | None

    def __new__(cls, images: torch.Tensor, targets: torch.Tensor, draws: Draws | None = None) -> FeedBatch:
        batch = super().__new__(cls, (images, targets))
        batch.draws = draws
        return batch


class Feeder:
    """Batches (uint8 NHWC tensor, int64 targets) for index arrays, with no per-image work in the caller.

    Batch indices are sorted: reads go forward through the file, and RAM and disk see the images
    of a batch in the same order, so they train identically. ``workers``: decoding processes (None:
    KILN_FEED_WORKERS or from the CPUs); ``pin_memory``: hand out page-locked batches, for
    asynchronous copies to a GPU.
    """

    def __init__(
        self,
        images: Any,
        targets: np.ndarray,
        in_memory: bool | None = None,
        workers: int | None = None,
        pin_memory: bool = False,
    ) -> None:
        self.targets = torch.from_numpy(np.asarray(targets, dtype=np.int64))
        # a memmap's shape is (N, H, W, C); kiln.datasets' EncodedImages keeps (H, W, C) per image
        self.item = tuple(images.shape[1:]) if isinstance(images, np.ndarray) else tuple(images.shape)
        self.nbytes = len(images) * int(np.prod(self.item))
        self.workers = feed_workers(workers) if can_fork() else 0
        self.pin_memory = bool(pin_memory) and torch.cuda.is_available()
        self.in_memory = fits_in_ram(self.nbytes) if in_memory is None else bool(in_memory)
        self.source = read_all(images, self.item, self.workers) if self.in_memory else images
        self.images = torch.from_numpy(self.source) if self.in_memory else images

    def __len__(self) -> int:
        return len(self.targets)

    def fetch(self, index: np.ndarray, crops: CropPlan | None = None, position: int = 0) -> FeedBatch:
        """One batch, in this process: the images at ``index`` (sorted), cropped as batch ``position``
        of ``crops`` says."""
        index = np.sort(np.asarray(index, dtype=np.int64))
        t = torch.from_numpy(index)
        if crops is None and self.in_memory:
            return FeedBatch(self._pinned(self.images[t]), self.targets[t])
        draws = crops.draws(position, len(index), self.item[0], self.item[1]) if crops else None
        if crops is None and isinstance(self.source, np.ndarray):
            pixels = np.ascontiguousarray(self.source[index])  # one forward read of the memory map
        else:
            pixels = np.empty((len(index), *(crops.out_shape(self.item) if crops else self.item)), np.uint8)
            crop_into(pixels, self.source, index, crops.size if crops else None, draws)
        return FeedBatch(self._pinned(torch.from_numpy(pixels)), self.targets[t], draws)

    def stream(self, indices: list[np.ndarray], crops: CropPlan | None = None) -> Generator[FeedBatch, None, None]:
        """The batches of ``indices`` in order. In RAM without crops: gathered here. Otherwise in the
        worker processes, or with 0 workers in a thread two batches ahead, while one trains."""
        if not indices:
            return
        if self.in_memory and crops is None:
            for index in indices:
                yield self.fetch(index)
        elif self.workers > 0:
            yield from self._pooled(indices, crops)
        else:
            yield from self._threaded(indices, crops)

    def _threaded(self, indices: list[np.ndarray], crops: CropPlan | None) -> Iterator[FeedBatch]:
        with ThreadPoolExecutor(1, thread_name_prefix="kiln-feed") as pool:
            ahead: deque = deque()
            try:
                for position, index in enumerate(indices):
                    ahead.append(pool.submit(self.fetch, index, crops, position))
                    if len(ahead) > 2:
                        yield ahead.popleft().result()
                while ahead:
                    yield ahead.popleft().result()
            finally:
                for future in ahead:
                    future.cancel()

    def _pooled(self, indices: list[np.ndarray], crops: CropPlan | None) -> Iterator[FeedBatch]:
        out_item = crops.out_shape(self.item) if crops else self.item
        slot_bytes = max(len(index) for index in indices) * int(np.prod(out_item))
        workers = min(self.workers, len(indices))
        slots = min(len(indices), SLOTS_PER_WORKER * workers)
        with DecodePool(self.source, workers, slots, slot_bytes, crops.size if crops else None) as pool:
            yield from assemble(pool, indices, crops, self.item, self._take)

    def _take(self, index: np.ndarray, view: np.ndarray, draws: Draws | None) -> FeedBatch:
        """A batch copied out of its slot (into page-locked memory when a GPU will take it)."""
        images = torch.empty(view.shape, dtype=torch.uint8, pin_memory=self.pin_memory)
        images.copy_(torch.from_numpy(view))
        return FeedBatch(images, self.targets[torch.from_numpy(index)], draws)

    def _pinned(self, images: torch.Tensor) -> torch.Tensor:
        return images.pin_memory() if self.pin_memory else images


def fits_in_ram(nbytes: int) -> bool:
    """True when a split of ``nbytes`` decoded bytes fits the RAM budget."""
    return nbytes <= ram_budget()


def ram_budget() -> int:
    """Bytes a split may take in RAM: RAM_FRACTION of the memory available now (1 GiB without psutil)."""
    try:
        import psutil

        return int(RAM_FRACTION * psutil.virtual_memory().available)
    except ImportError:
        return 1 << 30


def read_all(images: Any, item: tuple[int, ...], workers: int = 0, chunk: int = 4096) -> np.ndarray:
    """The whole split as one uint8 array: a memmap is read once; encoded images are decoded once,
    by ``workers`` processes when there are any."""
    if isinstance(images, np.ndarray):
        return np.array(images, copy=True)
    out = np.empty((len(images), *item), dtype=np.uint8)
    if workers > 0 and len(images) > DECODE_CHUNK:
        chunks = [np.arange(s, min(s + DECODE_CHUNK, len(images))) for s in range(0, len(images), DECODE_CHUNK)]
        slots = min(len(chunks), SLOTS_PER_WORKER * workers)
        with DecodePool(images, min(workers, len(chunks)), slots, DECODE_CHUNK * int(np.prod(item)), None) as pool:
            for _ in assemble(pool, chunks, None, item, lambda index, view, _: out.__setitem__(index, view)):
                pass
        return out
    for start in range(0, len(images), chunk):
        out[start : start + chunk] = images[start : start + chunk]
    return out
