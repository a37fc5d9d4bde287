"""Whole batches straight from a packed split's uint8 array: no DataLoader workers, no per-image work.

A split is copied into RAM when it is small enough (MNIST train: 47 MB); otherwise each batch is
read from the memory map (or decoded, for PNG/JPEG storage) one step ahead in a thread.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

RAM_FRACTION = 0.25  # a split is held in RAM when it takes at most this share of free memory


class Feeder:
    """(uint8 NHWC tensor, int64 targets) for an index array, with no per-image Python work.

    Batch indices are sorted: reads go forward through the file, and RAM and disk see the images
    of a batch in the same order, so they train identically.
    """

    def __init__(self, images: Any, targets: np.ndarray, in_memory: bool | None = None) -> None:
        self.targets = torch.from_numpy(np.asarray(targets, dtype=np.int64))
        # a memmap's shape is (N, H, W, C); kiln.datasets' EncodedImages keeps (H, W, C) per image
        item = tuple(images.shape[1:]) if isinstance(images, np.ndarray) else tuple(images.shape)
        self.nbytes = len(images) * int(np.prod(item))
        self.in_memory = fits_in_ram(self.nbytes) if in_memory is None else bool(in_memory)
        self.images = torch.from_numpy(read_all(images, item)) if self.in_memory else images

    def __len__(self) -> int:
        return len(self.targets)

    def fetch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.sort(index)
        if self.in_memory:
            t = torch.from_numpy(index)
            return self.images[t], self.targets[t]
        return torch.from_numpy(np.ascontiguousarray(self.images[index])), self.targets[torch.from_numpy(index)]

    def stream(self, indices: list[np.ndarray]) -> Generator[tuple[torch.Tensor, torch.Tensor], None, None]:
        """The batches of `indices` in order; from disk, up to two are read ahead while one trains."""
        if self.in_memory:
            for index in indices:
                yield self.fetch(index)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="kiln-feed") as pool:
            ahead: deque = deque()
            for index in indices:
                ahead.append(pool.submit(self.fetch, index))
                if len(ahead) > 2:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()


def fits_in_ram(nbytes: int) -> bool:
    try:
        import psutil

        return nbytes <= RAM_FRACTION * psutil.virtual_memory().available
    except ImportError:
        return nbytes <= 1 << 30


def read_all(images: Any, item: tuple[int, ...], chunk: int = 4096) -> np.ndarray:
    """The whole split as one uint8 array (a memmap is read once; encoded images decoded once)."""
    if isinstance(images, np.ndarray):
        return np.array(images, copy=True)
    out = np.empty((len(images),) + item, dtype=np.uint8)
    for start in range(0, len(images), chunk):
        out[start : start + chunk] = images[start : start + chunk]
    return out
