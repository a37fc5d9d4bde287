"""Decoding one chunk of image paths into stored pixels: the work a packing worker process does.

Each image goes through the one preprocessing path (images.load_image, images.resize_image);
a chunk comes back as uint8 pixels (raw storage) or PNG/JPEG bytes (encoded storage), plus the
pixel sum the parent needs for the mean. Failed images are reported, never raised.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from kiln.datasets.images import DEFAULT_MAX_BYTES, ImageLoadError, encode_image, load_image, resize_image
from kiln.datasets.packed_format import PIXEL_DTYPE, storage_for
from kiln.datasets.spec import DatasetSpec

CHUNK_BYTES = 8 << 20  # raw pixels per chunk sent back by a worker


@dataclass(frozen=True)
class ImageParams:
    """What every stored image is made into."""

    channels: int
    height: int
    width: int
    mode: str
    encoding: str
    seed: int
    max_bytes: int = DEFAULT_MAX_BYTES  # read per image file (KILN_MAX_IMAGE_MB)

    @classmethod
    def from_spec(cls, spec: DatasetSpec, max_bytes: int = DEFAULT_MAX_BYTES) -> ImageParams:
        return cls(
            int(spec.resize_channels),
            int(spec.resize_height),
            int(spec.resize_width),
            spec.resize_mode,
            spec.encoding,
            int(spec.seed or 0),
            max_bytes,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.height, self.width, self.channels

    @property
    def item_bytes(self) -> int:
        return self.height * self.width * self.channels


@dataclass(frozen=True)
class ChunkTask:
    """One chunk of a split, as sent to a worker."""

    params: ImageParams
    split_id: int  # seeds the random padding with the chunk's place, not its worker
    start: int  # index of the chunk's first entry in its split
    paths: list[str]
    want_sum: bool  # train only: the parent accumulates the mean
    invert: bool  # also encode 255 - x copies (add_inverted, encoded storage)


@dataclass
class Chunk:
    """What a worker sends back for one chunk of paths."""

    ok: np.ndarray  # bool per path
    errors: list[tuple[int, str]]  # (position in chunk, message)
    pixels: np.ndarray | None  # (n_ok, H, W, C) for raw storage
    total: np.ndarray | None  # float64 HWC sum of the ok images (train only)
    blob: bytes = b""  # encoded images, concatenated
    lengths: np.ndarray | None = None
    inv_blob: bytes = b""  # encoded inverted copies
    inv_lengths: np.ndarray | None = None


def chunk_size(n_total: int, item_bytes: int, workers: int) -> int:
    """Big enough to amortise the per-task cost, small enough for ~16 tasks per worker and flat memory."""
    by_bytes = max(1, CHUNK_BYTES // item_bytes)
    balanced = -(-n_total // (max(workers, 1) * 16))
    return max(1, min(by_bytes, 1024, max(balanced, 32)))


def worker_init() -> None:
    # load_image refuses bombs itself; Pillow's warning would only add noise to the job log.
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)


def _decode_all(task: ChunkTask) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
    """(pixels of the ok images, ok flag per path, errors)."""
    params = task.params
    random_pad = params.mode in ("fill", "half_crop")
    rng = np.random.default_rng([params.seed, task.split_id, task.start]) if random_pad else None
    out = np.empty((len(task.paths),) + params.shape, dtype=PIXEL_DTYPE)
    ok = np.zeros(len(task.paths), dtype=bool)
    errors: list[tuple[int, str]] = []
    n = 0
    for i, path in enumerate(task.paths):
        try:
            image = load_image(path, params.channels, max_bytes=params.max_bytes)
            out[n] = resize_image(image, params.height, params.width, params.mode, rng)
        except ImageLoadError as exc:
            errors.append((i, str(exc)))
            continue
        except Exception as exc:  # a decoder bug must cost one image, not the whole dataset
            errors.append((i, f"{path}: {type(exc).__name__}: {exc}"))
            continue
        ok[i] = True
        n += 1
    return out[:n], ok, errors


def _encode_all(images: np.ndarray, fmt: str) -> tuple[bytes, np.ndarray]:
    parts = [encode_image(img, fmt) for img in images]
    return b"".join(parts), np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))


def decode_chunk(task: ChunkTask) -> Chunk:
    """Decode and resize one chunk of paths, and encode it unless stored raw."""
    pixels, ok, errors = _decode_all(task)
    total = pixels.sum(axis=0, dtype=np.float64) if task.want_sum else None
    encoding = task.params.encoding
    if storage_for(encoding) == "raw":
        return Chunk(ok, errors, pixels, total)
    blob, lengths = _encode_all(pixels, encoding)
    chunk = Chunk(ok, errors, None, total, blob, lengths)
    if task.invert:
        chunk.inv_blob, chunk.inv_lengths = _encode_all(255 - pixels, encoding)
    return chunk
