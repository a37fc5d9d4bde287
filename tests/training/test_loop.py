"""The train loop on tiny generated datasets: it learns, reports, snapshots, resumes and stops."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from kiln.networks.registry import NetworkInfo
from kiln.reporting import RecordingReporter, Stopped
from kiln.training import checkpoint
from kiln.training.config import TrainConfig
from kiln.training.distributed import Dist
from kiln.training.loop import Plan, TrainingDiverged, epoch_order, train


def config(**kw) -> TrainConfig:
    # CPU always: the exact-equality tests below would differ on a GPU (cuDNN, TF32, autocast)
    base = dict(
        network="lenet",
        train_epochs=2,
        batch_size=8,
        learning_rate=0.01,
        random_seed=7,
        lr_policy="fixed",
        device="cpu",
    )
    return TrainConfig(**{**base, **kw})


def network(default_batch: int = 16, default_val_batch: int = 16) -> NetworkInfo:
    return NetworkInfo(name="test", label="test", default_batch=default_batch, default_val_batch=default_val_batch)


class StopAfterSnapshots(RecordingReporter):
    """Asks to stop once `n` snapshots have been reported (an abort from the web page)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def should_stop(self) -> bool:
        return len(self.snapshots) >= self.n


# -- a run that learns, reports and writes its files ----------------------------------------------
@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    reporter = RecordingReporter()
    summary = train(config(train_epochs=3), tiny, out, reporter)
    return tiny, out, reporter, summary


def test_learns_a_separable_dataset(run):
    _, _, reporter, summary = run
    train_losses = [v["loss"] for _, v, phase in reporter.rows if phase == "train"]
    assert train_losses[-1] < train_losses[0] / 4
    assert summary["final"]["val_accuracy"] > 80  # chance is 33 %
    assert summary["best_val_accuracy"] >= summary["final"]["val_accuracy"]
    assert summary["epochs"] == 3.0 and summary["iterations"] == 3 * math.ceil(36 / 8)


def test_reports_metrics_progress_and_snapshots(run):
    _, out, reporter, _ = run
    train_rows = [(e, v) for e, v, phase in reporter.rows if phase == "train"]
    val_rows = [(e, v) for e, v, phase in reporter.rows if phase == "val"]
    assert len(train_rows) >= 3 * 2  # a few points per epoch
    assert all(set(v) == {"loss", "lr"} for _, v in train_rows)
    assert [e for e, _ in val_rows] == [1.0, 2.0, 3.0]
    assert all(set(v) == {"loss", "accuracy"} for _, v in val_rows)  # 3 classes: no top-5
    assert reporter.fractions == sorted(reporter.fractions) and reporter.fractions[-1] == 1.0
    assert [e for e, _, _ in reporter.snapshots] == [1.0, 2.0, 3.0]
    for _epoch, path, values in reporter.snapshots:
        assert Path(path).exists() and "val_accuracy" in values
    assert any("Snapshot saved at epoch 3" in line for line in reporter.lines)


def test_snapshot_files_rebuild_the_network(run):
    dataset, out, _, _ = run
    assert checkpoint.list_snapshots(out) == [1.0, 2.0, 3.0]
    meta = json.loads((out / "snapshot_3.json").read_text())
    assert meta["network"] == "lenet" and meta["num_classes"] == 3 and meta["labels"] == dataset.labels
    assert (meta["in_channels"], meta["height"], meta["width"]) == (1, 28, 28)
    assert meta["preprocess"]["use_mean"] == "image" and len(meta["preprocess"]["mean"]) == 28
    assert meta["epoch"] == 3.0 and meta["kiln_version"] and "val_loss" in meta["metrics"]
    model, meta2 = checkpoint.load_snapshot(out)  # latest
    weights = load_file(out / "snapshot_3.safetensors")
    for name, value in model.state_dict().items():
        assert np.array_equal(value.numpy(), weights[name].numpy())
    assert checkpoint.resume_epoch(out) == 3.0
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


# -- DIGITS' iteration arithmetic -----------------------------------------------------------------
def test_iterations_follow_digits():
    # reference 2.2: 45,002 MNIST images, batch 64, 22 epochs -> snapshot_iter_15488
    plan = Plan.make(TrainConfig(train_epochs=22, batch_size=64), 45002, network())
    assert (plan.iters_per_epoch, plan.max_iter) == (704, 15488)
    plan = Plan.make(TrainConfig(train_epochs=30), 60000, network(64, 32))  # default batch = network's
    assert plan.max_iter == 938 * 30 and plan.display_every == 79
    assert plan.val_batch == 64  # at least the train batch
    plan = Plan.make(TrainConfig(train_epochs=1, batch_size=8, batch_accumulation=3), 100, network())
    assert plan.iters_per_epoch == math.ceil(100 / 24) == 5
    order = np.arange(100)
    assert [len(mb) for mb in plan.micro_batches(order, 0)] == [8, 8, 8]
    assert [len(mb) for mb in plan.micro_batches(order, 4)] == [4]  # the epoch's remainder
    assert sum(len(mb) for s in range(5) for mb in plan.micro_batches(order, s)) == 100


def test_rest_of_epoch_starts_where_a_resumed_run_left_off():
    plan = Plan.make(TrainConfig(train_epochs=1.5, batch_size=10), 40, network())  # 4 per epoch, 6 in all
    order = np.arange(40)
    assert [s[0][0] for s in plan.rest_of_epoch(order, 0)] == [0, 10, 20, 30]
    assert [s[0][0] for s in plan.rest_of_epoch(order, 3)] == [30]  # resumed mid-epoch
    assert [s[0][0] for s in plan.rest_of_epoch(order, 4)] == [0, 10]  # the last, half epoch


def test_intervals_in_fractional_epochs():
    plan = Plan.make(TrainConfig(train_epochs=2, batch_size=10), 40, network())  # 4 iterations per epoch
    assert [it for it in range(1, 9) if plan.due(it, 0.5)] == [2, 4, 6, 8]
    assert [it for it in range(1, 9) if plan.due(it, 1)] == [4, 8]
    assert [it for it in range(1, 9) if plan.due(it, 0.1)] == list(range(1, 9))  # (0,1] iterations -> each
    assert not any(plan.due(it, 0) for it in range(1, 9))
    plan = Plan.make(TrainConfig(train_epochs=1, batch_size=10), 30, network())  # 3 per epoch, interval 0.5
    assert [it for it in range(1, 4) if plan.due(it, 0.5)] == [2, 3]
    # validations and snapshots at their intervals and always at the end; no validation without val
    cfg = TrainConfig(train_epochs=1.5, batch_size=10, val_interval=1, snapshot_interval=0)
    plan = Plan.make(cfg, 40, network(), has_val=True)
    assert [it for it in range(1, 7) if plan.val_due(it)] == [4, 6]
    assert [it for it in range(1, 7) if plan.snapshot_due(it)] == [6]
    assert not any(Plan.make(cfg, 40, network(), has_val=False).val_due(it) for it in range(1, 7))


def test_epoch_order_is_shuffled_reproducible_and_split_by_rank():
    a, b = epoch_order(1, 0, 10, True, Dist()), epoch_order(1, 1, 10, True, Dist())
    assert sorted(a) == list(range(10)) and not np.array_equal(a, b)
    assert np.array_equal(a, epoch_order(1, 0, 10, True, Dist()))
    assert np.array_equal(epoch_order(1, 0, 10, False, Dist()), np.arange(10))
    shards = [epoch_order(1, 0, 11, True, Dist(rank=r, world=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 6
    assert set(shards[0]) | set(shards[1]) == set(range(11))


# -- behaviour of whole runs ----------------------------------------------------------------------
def test_fractional_snapshot_interval(tiny, tmp_path):
    reporter = RecordingReporter()
    # 36 images / batch 9 = 4 iterations per epoch
    summary = train(
        config(train_epochs=1.5, batch_size=9, snapshot_interval=0.5, val_interval=0), tiny, tmp_path, reporter
    )
    assert checkpoint.list_snapshots(tmp_path) == [0.5, 1.0, 1.5]
    assert (tmp_path / "snapshot_0.5.safetensors").exists() and (tmp_path / "snapshot_1.json").exists()
    assert summary["snapshots"] == [0.5, 1.0, 1.5] and summary["iterations"] == 6
    assert not [r for r in reporter.rows if r[2] == "val"]  # val_interval 0: no validation


def test_batch_accumulation_matches_one_big_batch(tiny, tmp_path):
    a = train(
        config(train_epochs=1, batch_size=4, batch_accumulation=3, val_interval=0),
        tiny,
        tmp_path / "a",
        RecordingReporter(),
    )
    b = train(config(train_epochs=1, batch_size=12, val_interval=0), tiny, tmp_path / "b", RecordingReporter())
    assert a["iterations"] == b["iterations"] == 3
    wa, wb = load_file(tmp_path / "a" / "snapshot_1.safetensors"), load_file(tmp_path / "b" / "snapshot_1.safetensors")
    for name in wa:
        np.testing.assert_allclose(wa[name].numpy(), wb[name].numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_resume_continues_exactly(tiny, tmp_path):
    # random crops and flips draw from the saved RNG; the step policy from the saved scheduler
    cfg = config(
        train_epochs=4,
        crop_size=24,
        aug_flip="fliplr",
        lr_policy="step",
        lr_step_size=40,
        solver_type="ADAM",
        learning_rate=0.001,
    )
    straight = train(cfg, tiny, tmp_path / "straight", RecordingReporter())
    with pytest.raises(Stopped):
        train(cfg, tiny, tmp_path / "resumed", StopAfterSnapshots(2))
    assert checkpoint.list_snapshots(tmp_path / "resumed") == [1.0, 2.0]
    assert checkpoint.resume_epoch(tmp_path / "resumed") == 2.0
    reporter = RecordingReporter()
    resumed = train(cfg, tiny, tmp_path / "resumed", reporter, resume=True)
    assert any("Resuming at epoch 2" in line for line in reporter.lines)
    assert [e for e, _, _ in reporter.snapshots] == [3.0, 4.0]
    wa = load_file(tmp_path / "straight" / "snapshot_4.safetensors")
    wb = load_file(tmp_path / "resumed" / "snapshot_4.safetensors")
    for name in wa:
        assert np.array_equal(wa[name].numpy(), wb[name].numpy()), name
    assert resumed["final"] == straight["final"] and resumed["best_epoch"] == straight["best_epoch"]


# -- early stopping -------------------------------------------------------------------------------
# A slow learning rate and a validation every half epoch (iterations 3, 5, 8, 10, 13, 15, 18, 20):
# the val loss falls at every validation while the accuracy climbs to 100 % and stays there.
SLOW = dict(train_epochs=4, learning_rate=0.0003, val_interval=0.5, snapshot_interval=0)


def val_rows(reporter: RecordingReporter) -> list[tuple[float, dict[str, float]]]:
    return [(e, v) for e, v, phase in reporter.rows if phase == "val"]


def test_early_stopping_waits_while_val_loss_improves(tiny, tmp_path):
    # patience 1 would stop at the second validation if a fixed count (or the wrong direction,
    # or the accuracy) decided it
    reporter = RecordingReporter()
    summary = train(config(**SLOW, early_stopping="val_loss", early_stopping_patience=1), tiny, tmp_path, reporter)
    losses = [v["loss"] for _, v in val_rows(reporter)]
    assert all(b < a for a, b in zip(losses, losses[1:])), losses  # the premise
    assert len(losses) == 8 and summary["epochs"] == 4.0 and not summary["stopped_early"]
    assert summary["best_epoch"] == 4.0 and summary["best_val_loss"] == losses[-1]
    assert not any("Early stopping" in line for line in reporter.lines)


def test_early_stopping_on_val_loss_stops_after_patience(tiny, tmp_path):
    # learning rate 0: the val loss never improves after the first validation
    reporter = RecordingReporter()
    summary = train(
        config(train_epochs=30, learning_rate=0.0, early_stopping="val_loss", early_stopping_patience=2),
        tiny,
        tmp_path,
        reporter,
    )
    assert summary["stopped_early"] and summary["epochs"] == 3.0
    assert checkpoint.list_snapshots(tmp_path) == [1.0, 2.0, 3.0]
    assert any("Early stopping" in line for line in reporter.lines)


def test_early_stopping_on_val_accuracy(tiny, tmp_path):
    # the accuracy improves after the first validation, then sits at 100 %, where it cannot
    # improve: the run must stop exactly `patience` validations after reaching it
    patience = 2
    reporter = RecordingReporter()
    summary = train(
        config(**SLOW, early_stopping="val_accuracy", early_stopping_patience=patience), tiny, tmp_path, reporter
    )
    rows = val_rows(reporter)
    accuracies = [v["accuracy"] for _, v in rows]
    best = accuracies.index(100.0)
    assert best >= 1 and accuracies[0] < 100.0  # the premise
    assert accuracies[best:] == [100.0] * (patience + 1)
    assert summary["stopped_early"] and summary["epochs"] == rows[-1][0] < 4
    assert summary["best_epoch"] == rows[best][0] and summary["best_val_accuracy"] == 100.0
    assert checkpoint.list_snapshots(tmp_path) == [summary["epochs"]]  # the early stop's snapshot
    assert any("Early stopping: val_accuracy" in line for line in reporter.lines)
    assert any(line.endswith("(early stop)") for line in reporter.lines)


def test_keep_best(tiny, tmp_path):
    summary = train(config(train_epochs=2, keep_best=True), tiny, tmp_path, RecordingReporter())
    model, meta = checkpoint.load_snapshot(tmp_path, "best")
    assert meta["epoch"] == summary["best_epoch"]
    assert meta["metrics"]["val_accuracy"] == summary["best_val_accuracy"]


def test_divergence_names_the_epoch_and_the_fix(tiny, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"epoch \d+\.\d+.*[Ll]ower the learning rate"):
        train(config(learning_rate=1e6, lr_policy="fixed"), tiny, tmp_path, RecordingReporter())
    assert checkpoint.list_snapshots(tmp_path) == []


def test_abort_raises_stopped_and_writes_nothing(tiny, tmp_path):
    reporter = RecordingReporter()
    reporter.stop = True
    with pytest.raises(Stopped):
        train(config(), tiny, tmp_path, reporter)
    assert checkpoint.list_snapshots(tmp_path) == [] and not (tmp_path / "resume.pt").exists()


def test_top5_reported_with_ten_classes_and_pixel_mean(tiny10, tmp_path):
    reporter = RecordingReporter()
    train(config(train_epochs=1, use_mean="pixel"), tiny10, tmp_path, reporter)
    ((_, values, _),) = [r for r in reporter.rows if r[2] == "val"]
    assert set(values) == {"loss", "accuracy", "accuracy_top5"}
    assert values["accuracy_top5"] >= values["accuracy"]
    meta = checkpoint.read_meta(tmp_path)
    assert meta["preprocess"]["use_mean"] == "pixel" and len(meta["preprocess"]["mean"]) == 1


def test_same_seed_same_weights(tiny, tmp_path):
    for name in ("a", "b"):
        train(config(train_epochs=1, val_interval=0), tiny, tmp_path / name, RecordingReporter())
    wa, wb = (load_file(tmp_path / n / "snapshot_1.safetensors") for n in ("a", "b"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def test_data_read_from_disk_trains_like_data_in_memory(tiny, tmp_path):
    for name, in_memory in (("ram", True), ("disk", False)):
        train(
            config(train_epochs=1, val_interval=0, extra={"data_in_memory": in_memory}),
            tiny,
            tmp_path / name,
            RecordingReporter(),
        )
    wa, wb = (load_file(tmp_path / n / "snapshot_1.safetensors") for n in ("ram", "disk"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def test_png_storage_trains_like_raw_storage(tiny, tmp_path):
    from tests.training.conftest import make_dataset

    png = make_dataset(tmp_path / "png", encoding="png")  # same images, same split, stored as PNG
    assert png.manifest["splits"]["train"]["storage"] == "png"
    runs = {"raw": (tiny, True), "png-ram": (png, True), "png-disk": (png, False)}
    for name, (dataset, in_memory) in runs.items():
        train(
            config(train_epochs=1, val_interval=0, extra={"data_in_memory": in_memory}),
            dataset,
            tmp_path / name,
            RecordingReporter(),
        )
    weights = [load_file(tmp_path / n / "snapshot_1.safetensors") for n in runs]
    assert all(np.array_equal(weights[0][k].numpy(), w[k].numpy()) for w in weights[1:] for k in weights[0])
