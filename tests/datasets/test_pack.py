"""build_dataset end to end on tiny folders: files, manifest, errors, mean, inverted copies, chunks, abort."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kiln.datasets import pool
from kiln.datasets.images import decode_image, encode_image, load_image, resize_image
from kiln.datasets.pack import build_dataset
from kiln.datasets.pool import OrderedPool
from kiln.datasets.reader import PackedDataset
from kiln.datasets.sources import DatasetInputError
from kiln.reporting import RecordingReporter, Stopped
from tests.datasets.conftest import folder_spec, make_classes

MANIFEST_KEYS = {
    "version",
    "labels",
    "image",
    "splits",
    "errors",
    "error_count",
    "mean_pixel",
    "parse",
    "source",
    "seconds",
}


def build(spec, job: Path, workers: int = 1, **kw) -> tuple[dict, PackedDataset, RecordingReporter]:
    reporter = RecordingReporter()
    manifest = build_dataset(spec, job, reporter, workers=workers, **kw)
    return manifest, PackedDataset(job), reporter


def test_build_writes_digits_lists_and_arrays(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"cat": 6, "dog_face": 5}, size=(9, 7))
    manifest, ds, reporter = build(folder_spec(root, folder_pct_val=25, folder_pct_test=20), tmp_path / "job")
    assert set(manifest) == MANIFEST_KEYS and manifest["version"] == 1
    assert json.loads((tmp_path / "job" / "manifest.json").read_text()) == manifest
    assert manifest["labels"] == ["cat", "dog face"] == ds.labels
    assert (tmp_path / "job" / "labels.txt").read_text() == "cat\ndog face\n"
    assert manifest["image"] == {"width": 4, "height": 5, "channels": 3, "resize_mode": "squash", "encoding": "none"}
    counts = {s: v["count"] for s, v in manifest["splits"].items()}
    assert counts == {"train": 6, "val": 3, "test": 2}
    assert manifest["splits"]["val"]["per_class"] == [2, 1]
    assert manifest["parse"] == {"found": 11, "categories": 2, "dropped": [], "warnings": []}
    for split, n in counts.items():
        lines = (tmp_path / "job" / f"{split}.txt").read_text().splitlines()
        assert len(lines) == n and all(line.startswith(str(root)) for line in lines)
        images = ds.images(split)
        assert isinstance(images, np.memmap) and images.shape == (n, 5, 4, 3)
        for i in range(n):
            path = ds.source_path(split, i)
            assert f"{path} {ds.targets(split)[i]}" in lines
            np.testing.assert_array_equal(images[i], resize_image(load_image(path, 3), 5, 4, "squash"))
    assert "Found 11 images in 2 categories." in reporter.lines
    assert "Selected 6 for training." in reporter.lines
    assert any(line.startswith("6 images written to database") for line in reporter.lines)
    assert reporter.fractions == sorted(reporter.fractions) and reporter.fractions[-1] == 1.0
    assert not list((tmp_path / "job").glob("*.tmp"))


def test_unreadable_images_are_skipped_and_counted_per_class(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 4, "b": 4}, size=(32, 32))
    (root / "a" / "000.png").write_bytes(b"")
    data = (root / "a" / "001.png").read_bytes()
    (root / "a" / "001.png").write_bytes(data[: len(data) // 2])
    (root / "b" / "zz.png").write_text("text, not pixels")
    manifest, ds, reporter = build(folder_spec(root, folder_pct_val=0), tmp_path / "job")
    train = manifest["splits"]["train"]
    assert train["count"] == 6 and train["per_class"] == [2, 4] and train["errors_per_class"] == [2, 1]
    assert manifest["error_count"] == 3 and ds.images("train").shape[0] == 6
    assert {Path(e["path"]).name for e in manifest["errors"]} == {"000.png", "001.png", "zz.png"}
    assert {e["label"] for e in manifest["errors"]} == {0, 1}
    log = (tmp_path / "job" / "errors.log").read_text().splitlines()
    assert len(log) == 3 and any("empty file" in line for line in log)
    assert sum("ImageLoadError" in line for line in reporter.lines) == 3
    assert "2 failed to load" not in " ".join(reporter.lines)  # 3 failed in train
    assert any("(train, 3 failed to load)" in line for line in reporter.lines)


def test_mean_is_over_train_only(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 8, "b": 8}, channels=1, size=(5, 4))
    manifest, ds, _ = build(folder_spec(root, resize_channels=1, folder_pct_val=50), tmp_path / "job")
    train = np.asarray(ds.images("train"), np.float64)
    val = np.asarray(ds.images("val"), np.float64)
    np.testing.assert_allclose(ds.mean_image(), train.mean(axis=0), rtol=1e-6)
    assert not np.allclose(ds.mean_image(), np.concatenate([train, val]).mean(axis=0))
    assert ds.mean_image().dtype == np.float32 and ds.mean_image().shape == (5, 4, 1)
    np.testing.assert_allclose(ds.mean_pixel(), [train.mean()], rtol=1e-5)
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / "job" / "mean.png"))
    np.testing.assert_array_equal(png, np.rint(train.mean(axis=0))[:, :, 0])


def test_inverted_copies(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 5, "b": 3}, channels=1)
    manifest, ds, _ = build(folder_spec(root, resize_channels=1, add_inverted=True), tmp_path / "job")
    n = 6  # 4 + 2 originals in train
    train = manifest["splits"]["train"]
    assert train["count"] == 2 * n and train["inverted"] == n and train["per_class"] == [8, 4]
    images, flags, targets = np.asarray(ds.images("train")), ds.inverted("train"), ds.targets("train")
    np.testing.assert_array_equal(flags, [False] * n + [True] * n)
    np.testing.assert_array_equal(images[n:], 255 - images[:n])
    np.testing.assert_array_equal(targets[n:], targets[:n])
    assert ds.source_path("train", n) == ds.source_path("train", 0)
    assert manifest["splits"]["val"]["inverted"] == 0 and not ds.inverted("val").any()
    np.testing.assert_allclose(ds.mean_image(), 127.5)  # x and 255 - x average out


@pytest.mark.parametrize("encoding", ["png", "jpg"])
def test_encoded_storage_round_trip(tmp_path: Path, encoding: str) -> None:
    root = make_classes(tmp_path / "d", {"a": 4, "b": 4}, size=(10, 12))
    spec = folder_spec(root, resize_mode="fill", seed=3, add_inverted=True)
    raw_manifest, raw, _ = build(spec, tmp_path / "raw")
    spec.encoding = encoding
    manifest, enc, _ = build(spec, tmp_path / "enc")
    assert manifest["splits"]["train"]["storage"] == encoding and raw_manifest["mean_pixel"] == manifest["mean_pixel"]
    for split in ("train", "val"):
        images, expected = enc.images(split), np.asarray(raw.images(split))
        if encoding == "jpg":  # lossy: the stored bytes are JPEG (quality 90) of the raw pixels
            expected = np.stack([decode_image(encode_image(x, "jpg"), 3) for x in expected])
        assert len(images) == len(expected) and images[:].shape == expected.shape
        np.testing.assert_array_equal(images[np.arange(len(images))], expected)
        np.testing.assert_array_equal(images[1], expected[1])
        np.testing.assert_array_equal(images[::-2], expected[::-2])
        np.testing.assert_array_equal(enc.targets(split), raw.targets(split))
    if encoding == "png":
        assert enc.image_png("train", 2) == enc.images("train").encoded(2)


def test_chunks_and_processes_give_the_same_dataset(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 40, "b": 35, "c": 45}, size=(7, 9))
    spec = folder_spec(root, resize_mode="half_crop", resize_width=6, resize_height=6, seed=5)
    one, ds_one, _ = build(spec, tmp_path / "one", workers=1, chunk_size=1000)
    many, ds_many, reporter = build(spec, tmp_path / "many", workers=2, chunk_size=7)
    assert one["splits"] == many["splits"] and sum(v["count"] for v in one["splits"].values()) == 120
    for split in ds_one.splits:
        np.testing.assert_array_equal(np.asarray(ds_one.images(split)), np.asarray(ds_many.images(split)))
    assert len(reporter.fractions) >= 120 // 7  # progress after every chunk
    np.testing.assert_array_equal(ds_one.mean_image(), ds_many.mean_image())


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_workers_stay_a_bounded_number_of_chunks_ahead(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "start_method", lambda: method)
    pulled = []

    def tasks():
        for i in range(50):
            pulled.append(i)
            yield i, i

    runner = OrderedPool(2, print)
    assert runner.executor is not None and runner.executor._mp_context.get_start_method() == method
    try:
        results = runner.run(abs, tasks())
        first = next(results)
        assert first == (0, 0) and len(pulled) <= 2 * 2 + 1
        assert [k for k, _ in results] == list(range(1, 50))
    finally:
        runner.close()


class StopAfter(RecordingReporter):
    def __init__(self, chunks: int) -> None:
        super().__init__()
        self.left = chunks

    def should_stop(self) -> bool:
        self.left -= 1
        return self.left < 0


def test_abort_leaves_no_manifest_and_no_partial_files(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 20, "b": 20})
    job = tmp_path / "job"
    with pytest.raises(Stopped):
        build_dataset(folder_spec(root), job, StopAfter(2), workers=2, chunk_size=4)
    assert not (job / "manifest.json").exists()
    assert not list(job.glob("*.tmp")) and not list(job.glob("*.u8"))


def test_user_errors_name_the_field(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 5, "b": 1})
    with pytest.raises(DatasetInputError) as err:
        build_dataset(folder_spec(root), tmp_path / "job", RecordingReporter(), workers=1)
    assert err.value.field == "folder_train"
    broken = make_classes(tmp_path / "e", {"a": 2, "b": 2})
    for path in broken.rglob("*.png"):
        path.write_bytes(b"junk")
    with pytest.raises(DatasetInputError, match="none of the training images could be read"):
        build_dataset(folder_spec(broken, folder_pct_val=0), tmp_path / "job2", RecordingReporter(), workers=1)
    assert not (tmp_path / "job2" / "manifest.json").exists()


def test_rebuilding_replaces_the_manifest(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 3, "b": 3})
    build(folder_spec(root), tmp_path / "job")
    (tmp_path / "job" / "manifest.json").write_text("stale")
    with pytest.raises(DatasetInputError):
        build_dataset(folder_spec(tmp_path / "d" / "a"), tmp_path / "job", RecordingReporter(), workers=1)
    assert not (tmp_path / "job" / "manifest.json").exists()  # a failed rebuild is not "complete"
