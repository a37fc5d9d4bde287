"""Tiny packed datasets for the training and inference tests, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.datasets.pack import build_dataset
from kiln.datasets.reader import PackedDataset
from kiln.datasets.spec import DatasetSpec
from kiln.reporting import RecordingReporter
from tests.conftest import write_class_folder


def make_dataset(
    root: Path,
    classes: int = 3,
    per_class: int = 16,
    size: int = 28,
    channels: int = 1,
    pct_val: int = 25,
    encoding: str = "none",
    seed: int = 0,
) -> PackedDataset:
    """`classes` classes of `per_class` size x size images, each class a bright band at its own height."""
    names = {f"c{i}": per_class for i in range(classes)}
    folder = write_class_folder(
        root / "images", names, size=(size, size), mode="L" if channels == 1 else "RGB", seed=seed
    )
    spec = DatasetSpec(
        folder_train=str(folder),
        resize_channels=channels,
        resize_width=size,
        resize_height=size,
        folder_pct_val=pct_val,
        encoding=encoding,
        seed=seed,
    )
    build_dataset(spec, root / "dataset", RecordingReporter(), workers=1)
    return PackedDataset(root / "dataset")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> PackedDataset:
    """3 classes x 16 grey 28x28 images: 36 train, 12 val."""
    return make_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny10(tmp_path_factory: pytest.TempPathFactory) -> PackedDataset:
    """10 classes x 8 grey 28x28 images (enough classes for top-5)."""
    return make_dataset(tmp_path_factory.mktemp("tiny10"), classes=10, per_class=8)
