"""The predictor: a trained snapshot plus its preprocessing, for classify one and classify many.

    p = Predictor.from_job_dir(job_dir)            # latest snapshot; epoch=2, or "best"
    p.classify(["a.png", png_bytes])               # [[("8", 99.69), ("3", 0.2), ...], ...]

Images go through the snapshot's own Preprocess (the dataset's channels, size and resize mode,
then the training mean and centre crop), which is the path validation used while training, so a
prediction here equals the one the training run would make for the same image.

The layers beneath `classify` (`load`, `logits`, `probabilities`, `top_k`) are public so that
batch jobs, confusion matrices, per-layer visualisations and export build on the same steps.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kiln import paths
from kiln.preprocess import Preprocess, Source
from kiln.training import checkpoint

DEFAULT_BATCH = 64


class Top5(list):
    """One image's predictions: a list of (label, percent) pairs, best first (DIGITS' shape).

    When the image could not be read the list is empty and `error` says why; `source` is the
    item as it was given (a path, or '<bytes>' for uploaded data).
    """

    def __init__(self, pairs: Iterable[tuple[str, float]] = (), source: str = "", error: str | None = None) -> None:
        super().__init__(pairs)
        self.source = source
        self.error = error


def _read_path(path: str | Path, max_bytes: int) -> io.BytesIO:
    """The file's bytes, named after it for error messages (kiln.paths.read_bounded)."""
    from kiln.datasets.images import ImageLoadError

    try:
        data = paths.read_bounded(path, max_bytes)
    except paths.PathRefused as exc:
        raise ImageLoadError(f"{path}: {exc}") from None
    except FileNotFoundError:
        raise ImageLoadError(f"{path}: file not found") from None
    except OSError as exc:
        raise ImageLoadError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise ImageLoadError(f"{path}: empty file (0 bytes)")
    buf = io.BytesIO(data)
    buf.name = str(path)
    return buf


class Predictor:
    def __init__(self, model: nn.Module, meta: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).to(memory_format=torch.channels_last).eval()  # type: ignore[call-overload]
        self.meta = meta
        self.labels: list[str] = list(meta["labels"])
        self.preprocess = Preprocess.from_dict(meta["preprocess"])
        self.epoch: float = float(meta["epoch"])
        self.batch_size = int(meta.get("config", {}).get("batch_size") or DEFAULT_BATCH)

    @classmethod
    def from_job_dir(
        cls, out_dir: str | Path, epoch: float | str | None = None, device: str | torch.device = "cpu"
    ) -> Predictor:
        """The snapshot at `epoch` (None, -1 or 0: the latest; "best": the best kept one)."""
        model, meta = checkpoint.load_snapshot(Path(out_dir), epoch)
        return cls(model, meta, device)

    # -- the steps ------------------------------------------------------------------------------
    def load(
        self, sources: Sequence[Source], max_bytes: int = paths.DEFAULT_MAX_FILE_BYTES
    ) -> tuple[np.ndarray, list[int], dict[int, str]]:
        """Load and resize every source: (uint8 NHWC of the good ones, their positions, errors by position).

        A path is read through kiln.paths.read_bounded: a regular file of at most max_bytes (a FIFO,
        a device such as /dev/zero, or a larger file is an error for that image, never a hang).
        Whether a path may be read at all (the data roots) is for the caller to check first.
        """
        from kiln.datasets.images import ImageLoadError

        arrays, ok, errors = [], [], {}
        for i, source in enumerate(sources):
            try:
                data = _read_path(source, max_bytes) if isinstance(source, (str, Path)) else source
                arrays.append(self.preprocess.image_to_array(data))
                ok.append(i)
            except (ImageLoadError, OSError, ValueError) as exc:
                errors[i] = str(exc) or type(exc).__name__
        h, w, c = self.preprocess.height, self.preprocess.width, self.preprocess.channels
        batch = np.stack(arrays) if arrays else np.zeros((0, h, w, c), np.uint8)
        return batch, ok, errors

    @torch.no_grad()
    def logits(self, batch: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw scores (N, classes) for a uint8 NHWC batch, exactly as validation computes them."""
        x = self.preprocess.batch_to_tensor(batch, device=self.device)
        return self.model(x).float()

    def probabilities(self, batch: np.ndarray | torch.Tensor, batch_size: int | None = None) -> np.ndarray:
        """Softmax (N, classes) for a uint8 NHWC batch of any length, computed batch_size at a time."""
        size = batch_size or self.batch_size
        parts = [
            torch.softmax(self.logits(batch[i : i + size]), dim=1).cpu().numpy() for i in range(0, len(batch), size)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.labels)), np.float32)

    def top_k(self, probs: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """DIGITS' top-N: (label, percent rounded to 2 places), best first; no more than the classes."""
        k = min(k, len(self.labels), probs.shape[1] if probs.ndim == 2 else 0)
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return [[(self.labels[j], round(100.0 * float(row[j]), 2)) for j in idx] for row, idx in zip(probs, order)]

    # -- classify one / many --------------------------------------------------------------------
    def classify(
        self,
        sources: Sequence[Source],
        batch_size: int | None = None,
        k: int = 5,
        max_bytes: int = paths.DEFAULT_MAX_FILE_BYTES,
    ) -> list[Top5]:
        """Top-k (label, percent) for each source, in order. A source that cannot be read gives an
        empty Top5 whose `error` says why, instead of failing the whole request. Paths are read as
        `load` says (regular files, at most max_bytes each)."""
        results: list[Top5] = []
        size = batch_size or self.batch_size
        for start in range(0, len(sources), size):
            chunk = sources[start : start + size]
            batch, ok, errors = self.load(chunk, max_bytes)
            tops = iter(self.top_k(self.probabilities(batch, size), k))
            for i, source in enumerate(chunk):
                name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
                results.append(Top5(source=name, error=errors[i]) if i in errors else Top5(next(tops), source=name))
        return results
