"""Classify one / many from a job folder, through the same preprocessing as training validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kiln.inference.predictor import Predictor, Top5
from kiln.preprocess import Preprocess
from kiln.reporting import RecordingReporter
from kiln.training import checkpoint
from kiln.training.config import TrainConfig
from kiln.training.loop import train
from tests.training.conftest import make_dataset


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """10 classes of 32x32 grey images, trained 2 epochs with a 28x28 crop and the mean image."""
    root = tmp_path_factory.mktemp("predictor")
    dataset = make_dataset(root, classes=10, per_class=8, size=32)
    cfg = TrainConfig(
        network="lenet", train_epochs=2, batch_size=8, random_seed=3, crop_size=28, use_mean="image", lr_policy="fixed"
    )
    train(cfg, dataset, root / "model", RecordingReporter())
    return dataset, root / "model", cfg


def test_top5_shape_and_values(job):
    dataset, out, _ = job
    paths = [dataset.source_path("train", i) for i in range(3)]
    results = Predictor.from_job_dir(out).classify(paths)
    assert len(results) == 3
    for top, path in zip(results, paths):
        assert isinstance(top, Top5) and top.error is None and top.source == path
        assert len(top) == 5
        assert all(label in dataset.labels for label, _ in top)
        pcts = [p for _, p in top]
        assert pcts == sorted(pcts, reverse=True) and all(p == round(p, 2) for p in pcts)
        assert 0 <= sum(pcts) <= 100.05


def test_classify_equals_the_training_path(job):
    """The file through Predictor == the packed training array through the train loop's steps."""
    dataset, out, cfg = job
    model, _ = checkpoint.load_snapshot(out)
    pre = Preprocess.for_dataset(dataset, cfg.use_mean, cfg.crop_size)  # as the loop built it
    index = list(range(6))
    with torch.no_grad():
        logits = model(pre.batch_to_tensor(dataset.images("train")[index]))
    want = torch.softmax(logits, 1).numpy()
    predictor = Predictor.from_job_dir(out)
    batch, ok, errors = predictor.load([dataset.source_path("train", i) for i in index])
    assert ok == index and not errors
    assert np.array_equal(batch, dataset.images("train")[index])  # same load and resize
    np.testing.assert_allclose(predictor.probabilities(batch), want, rtol=1e-5, atol=1e-6)
    got = predictor.classify([dataset.source_path("train", i) for i in index])
    assert [t[0][0] for t in got] == [dataset.labels[j] for j in want.argmax(1)]


def test_bad_images_give_a_per_item_error(job, tmp_path):
    dataset, out, _ = job
    good = dataset.source_path("train", 0)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    results = Predictor.from_job_dir(out).classify(
        [good, b"not an image", str(broken), "/no/such.png", good], batch_size=2
    )
    assert [bool(r.error) for r in results] == [False, True, True, True, False]
    assert results[0] == results[4] and len(results[0]) == 5
    assert results[1] == [] and results[1].source == "<bytes>"


def test_bytes_and_paths_agree(job):
    dataset, out, _ = job
    path = dataset.source_path("val", 0)
    predictor = Predictor.from_job_dir(out)
    assert predictor.classify([Path(path).read_bytes()]) == predictor.classify([path])


def test_snapshot_selection(job):
    _, out, _ = job
    assert Predictor.from_job_dir(out).epoch == 2.0
    assert Predictor.from_job_dir(out, -1).epoch == 2.0
    assert Predictor.from_job_dir(out, 1).epoch == 1.0
    with pytest.raises(FileNotFoundError, match="1, 2"):
        Predictor.from_job_dir(out, 5)


def test_fewer_than_five_classes(tmp_path):
    tiny = make_dataset(tmp_path / "data")  # 3 classes
    train(TrainConfig(train_epochs=1, batch_size=8, random_seed=1), tiny, tmp_path / "model", RecordingReporter())
    (top,) = Predictor.from_job_dir(tmp_path / "model").classify([tiny.source_path("train", 0)])
    assert len(top) == 3 and sorted(label for label, _ in top) == tiny.labels
