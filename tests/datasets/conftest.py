"""Tiny synthetic image folders for the dataset tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kiln.datasets.spec import DatasetSpec


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def make_classes(
    root: Path, counts: dict[str, int], size: tuple[int, int] = (6, 5), channels: int = 3, seed: int = 0
) -> Path:
    """root/<class>/<i>.png, random pixels of height x width = size."""
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        for i in range(count):
            shape = size + ((3,) if channels == 3 else ())
            save(root / name / f"{i:03d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


@pytest.fixture
def classes(tmp_path: Path) -> Callable[..., Path]:
    def make(counts: dict[str, int], **kw) -> Path:
        return make_classes(tmp_path / "images", counts, **kw)

    return make


def folder_spec(folder: Path, **kw) -> DatasetSpec:
    base = dict(
        dataset_name="t",
        folder_train=str(folder),
        resize_width=4,
        resize_height=5,
        resize_channels=3,
        folder_pct_val=25,
    )
    base.update(kw)
    return DatasetSpec(**base)
