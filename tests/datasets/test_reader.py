"""PackedDataset: what the trainer, the explorer and the gallery read."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kiln.datasets.pack import build_dataset
from kiln.datasets.reader import PackedDataset
from kiln.reporting import RecordingReporter
from tests.datasets.conftest import folder_spec, make_classes


@pytest.fixture
def packed(tmp_path: Path) -> PackedDataset:
    root = make_classes(tmp_path / "d", {"a": 6, "b": 4, "c": 5}, channels=1)
    build_dataset(
        folder_spec(root, resize_channels=1, folder_pct_val=0, folder_pct_test=20, encoding="png"),
        tmp_path / "job",
        RecordingReporter(),
        workers=1,
    )
    return PackedDataset(tmp_path / "job")


def test_shape_counts_and_labels(packed: PackedDataset) -> None:
    assert packed.splits == ["train", "test"] and packed.image_shape == (5, 4, 1)
    assert packed.count("train") == 12 and packed.count("test") == 3
    assert packed.targets("test").dtype == np.int64 and sorted(packed.targets("test")) == [0, 1, 2]
    with pytest.raises(KeyError, match="no 'val' split"):
        packed.count("val")


def test_indices_filter_by_label(packed: PackedDataset) -> None:
    np.testing.assert_array_equal(packed.indices("train"), np.arange(12))
    only_b = packed.indices("train", 1)
    assert len(only_b) == 3 and (packed.targets("train")[only_b] == 1).all()


def test_image_png_and_source_path(packed: PackedDataset) -> None:
    data = packed.image_png("train", 4)
    image = np.asarray(Image.open(io.BytesIO(data)))
    np.testing.assert_array_equal(image, packed.images("train")[4][:, :, 0])
    path = packed.source_path("train", 4)
    label = packed.labels[packed.targets("train")[4]]
    assert Path(path).parent.name == label


def test_encoded_images_pickle_without_their_mapping(packed: PackedDataset) -> None:
    images = packed.images("train")
    first = images[0]
    copy = pickle.loads(pickle.dumps(images))
    np.testing.assert_array_equal(copy[0], first)
    assert len(pickle.dumps(images)) < 2000


def test_raw_images_are_read_only(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 3, "b": 3})
    build_dataset(folder_spec(root), tmp_path / "job", RecordingReporter(), workers=1)
    images = PackedDataset(tmp_path / "job").images("train")
    with pytest.raises(ValueError):
        images[0, 0, 0, 0] = 1


def test_only_finished_datasets_open(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        PackedDataset(tmp_path)
