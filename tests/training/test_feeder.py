"""The feeder: batches from RAM, a memory map or PNG/JPEG entries, cropped and mirrored on uint8 in
worker processes, equal pixel for pixel to a plain NumPy reference and to the loop's float path,
the same for any worker count, memory bounded, and nothing left behind when a stream ends."""

from __future__ import annotations

import contextlib
import gc
import io
import multiprocessing
import os
import signal
import textwrap
import time
import tracemalloc
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from PIL import Image

from kiln.datasets.images import decode_image, encode_image
from kiln.datasets.pack import build_dataset
from kiln.datasets.reader import PackedDataset
from kiln.datasets.spec import DatasetSpec
from kiln.preprocess import Preprocess
from kiln.reporting import RecordingReporter
from kiln.training import feeder as feeder_module
from kiln.training.augment import Augmenter
from kiln.training.config import TrainConfig
from kiln.training.crop_mirror import CropPlan, Draws, TrainInput, crop_one
from kiln.training.decode_pool import FeedWorkerError, feed_workers
from kiln.training.entry_decode import decode_entry
from kiln.training.feeder import FeedBatch, Feeder
from kiln.training.loop import train
from tests.datasets.conftest import make_classes

pytestmark = pytest.mark.usefixtures("one_thread")

H, W = 20, 24  # not square: a mix-up of rows and columns shows


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PackedDataset]:
    """The same 48 random colour images stored raw, as PNG and as JPEG."""
    root = tmp_path_factory.mktemp("feed")
    folder = make_classes(root / "images", {"a": 24, "b": 24}, size=(H, W), channels=3)
    out = {}
    for encoding in ("none", "png", "jpg"):
        spec = DatasetSpec(
            folder_train=str(folder),
            resize_channels=3,
            resize_width=W,
            resize_height=H,
            folder_pct_val=0,
            encoding=encoding,
        )
        build_dataset(spec, root / encoding, RecordingReporter(), workers=1)
        out[encoding] = PackedDataset(root / encoding)
    return out


def reference_crop(image: np.ndarray, top: int, left: int, size: int, flip: bool) -> np.ndarray:
    """Plain NumPy: mirror the whole image, then cut size x size at (top, left)."""
    if flip:
        image = np.flip(image, axis=1)
    return image[top : top + size, left : left + size]


def reference_batches(dataset: PackedDataset, indices: list[np.ndarray], plan: CropPlan) -> list[np.ndarray]:
    images = dataset.images("train")
    out = []
    for position, index in enumerate(indices):
        index = np.sort(index)
        draws = plan.draws(position, len(index), H, W)
        assert plan.size is not None
        out.append(
            np.stack(
                [
                    reference_crop(np.asarray(images[int(i)]), int(t), int(lft), plan.size, bool(f))
                    for i, t, lft, f in zip(index, draws.top, draws.left, draws.flip)
                ]
            )
        )
    return out


def batches_of(n: int, size: int, seed: int = 3) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [order[i : i + size] for i in range(0, n, size)]


def test_crop_one_is_the_numpy_reference_at_every_offset() -> None:
    image = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    size = 5
    for top in range(7 - size + 1):
        for left in range(9 - size + 1):
            for flip in (False, True):
                got = crop_one(image, top, left, size, flip)
                assert np.array_equal(got, reference_crop(image, top, left, size, flip)), (top, left, flip)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_the_entry_decoder_gives_the_pixels_of_decode_image(fmt: str, channels: int) -> None:
    rng = np.random.default_rng(channels)
    for h, w in ((20, 24), (1, 1), (33, 17)):
        data = encode_image(rng.integers(0, 256, (h, w, channels), dtype=np.uint8), fmt)
        assert np.array_equal(decode_entry(data, (h, w, channels)), decode_image(data, channels))
    with pytest.raises(Exception, match="cannot identify image"):  # not an image: the general decoder's error
        decode_entry(b"not an image", (4, 4, 3))


def test_entries_kiln_did_not_write_fall_back_to_decode_image() -> None:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 4, (6, 5), dtype=np.uint8), "P").save(buffer, format="PNG")  # a palette
    palette = buffer.getvalue()
    assert np.array_equal(decode_entry(palette, (6, 5, 3)), decode_image(palette, 3))
    rgb = encode_image(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8), "png")
    damaged = bytearray(rgb)
    damaged[rgb.index(b"IDAT") + 6] ^= 0xFF  # a flipped byte: the chunk's CRC no longer matches
    with pytest.raises(Exception, match="(?i)crc|broken|error"):
        decode_entry(bytes(damaged), (6, 5, 3))


@pytest.mark.parametrize("encoding", ["none", "png", "jpg"])
@pytest.mark.parametrize("mode", ["ram", "thread", "1 worker", "2 workers"])
def test_streamed_batches_are_the_reference_crops(splits, encoding: str, mode: str) -> None:
    dataset = splits[encoding]
    workers = {"ram": 2, "thread": 0, "1 worker": 1, "2 workers": 2}[mode]
    feed = Feeder(dataset.images("train"), dataset.targets("train"), in_memory=mode == "ram", workers=workers)
    indices = batches_of(len(feed), 10)  # the last batch is short
    plan = CropPlan(16, True, (7, 0, 1))
    expected = reference_batches(dataset, indices, plan)
    got = list(feed.stream(indices, plan))
    assert len(got) == len(expected)
    targets = dataset.targets("train")
    flips = 0
    for batch, want, index in zip(got, expected, indices):
        images, labels = batch
        assert images.dtype == torch.uint8 and tuple(images.shape) == (len(index), 16, 16, 3)
        assert np.array_equal(images.numpy(), want)
        assert np.array_equal(labels.numpy(), targets[np.sort(index)])
        flips += int(batch.draws.flip.sum())
    assert 0 < flips < len(feed)  # some images mirrored, not all


def test_the_same_batches_for_0_1_and_2_workers(splits) -> None:
    dataset = splits["jpg"]
    indices = batches_of(48, 8)
    plan = CropPlan(16, True, (11, 0, 0))
    runs = []
    for workers in (0, 1, 2):
        feed = Feeder(dataset.images("train"), dataset.targets("train"), in_memory=False, workers=workers)
        runs.append([b[0].numpy() for b in feed.stream(indices, plan)])
    for other in runs[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(runs[0], other))
    mirror_only = CropPlan(None, True, (11, 0, 0))  # no crop: whole images, half of them mirrored
    feed = Feeder(dataset.images("train"), dataset.targets("train"), in_memory=False, workers=2)
    whole = next(feed.stream(indices, mirror_only))
    assert tuple(whole[0].shape) == (8, H, W, 3)


def test_whole_batches_without_a_plan_are_the_stored_images(splits) -> None:
    dataset = splits["png"]
    stored = dataset.images("train")[np.arange(48)]
    indices = batches_of(48, 12)
    for workers in (0, 2):
        feed = Feeder(dataset.images("train"), dataset.targets("train"), in_memory=False, workers=workers)
        for (images, _), index in zip(feed.stream(indices), indices):
            assert np.array_equal(images.numpy(), stored[np.sort(index)])


def test_a_batch_seed_follows_its_place_in_the_epoch_not_where_the_stream_started() -> None:
    # a resumed run starts its stream mid-epoch and must draw what the straight run drew
    straight, resumed = CropPlan(8, True, (5, 0, 2)), CropPlan(8, True, (5, 0, 2), first=3)
    for a, b in zip(straight.draws(3, 6, 20, 24), resumed.draws(0, 6, 20, 24)):
        assert np.array_equal(a, b)
    assert not np.array_equal(straight.draws(0, 6, 20, 24).left, straight.draws(1, 6, 20, 24).left)
    assert not np.array_equal(CropPlan(8, True, (5, 1, 2)).draws(0, 6, 20, 24).left, straight.draws(0, 6, 20, 24).left)


# -- the loop's float path and the uint8 path give the same network input ---------------------------


def old_path_draws(generator: torch.Generator, n: int, h: int, w: int, size: int | None, mirror: bool) -> Draws:
    """The draws the float path makes from its generator: the flip (augment), then top and left (crop)."""
    flip = (torch.rand((n, 1, 1, 1), generator=generator) < 0.5).view(n) if mirror else torch.zeros(n, dtype=bool)
    if size is None:
        zeros = np.zeros(n, dtype=np.int64)
        return Draws(zeros, zeros, flip.numpy())
    top = torch.randint(0, h - size + 1, (n,), generator=generator)
    left = torch.randint(0, w - size + 1, (n,), generator=generator)
    return Draws(top.numpy(), left.numpy(), flip.numpy())


@pytest.mark.parametrize("use_mean", ["image", "pixel", "none"])
@pytest.mark.parametrize(("size", "mirror"), [(16, True), (16, False), (None, True), (20, True)])
def test_uint8_crop_and_mirror_give_the_float_paths_input_bit_for_bit(
    use_mean: str, size: int | None, mirror: bool
) -> None:
    rng = np.random.default_rng(1)
    n, c = 6, 3
    images = rng.integers(0, 256, (n, H, W, c), dtype=np.uint8)
    mean = {"image": rng.uniform(0, 255, (H, W, c)), "pixel": rng.uniform(0, 255, c), "none": None}[use_mean]
    pre = Preprocess(c, H, W, use_mean=use_mean, mean=mean, crop_size=size)
    config = TrainConfig(aug_flip="fliplr" if mirror else "none")
    augment = Augmenter(config, c)
    inputs = TrainInput(config, pre, augment, seed=1)
    assert inputs.on_uint8

    generator = torch.Generator().manual_seed(5)
    old = pre.normalize(augment(pre.to_float(images), generator), train=True, generator=generator)

    draws = old_path_draws(torch.Generator().manual_seed(5), n, H, W, size, mirror)
    plan = CropPlan(size, mirror, (0,))
    cropped = np.empty((n, *plan.out_shape((H, W, c))), np.uint8)
    for j in range(n):
        cropped[j] = crop_one(images[j], int(draws.top[j]), int(draws.left[j]), size, bool(draws.flip[j]))
    new = inputs(FeedBatch(torch.from_numpy(cropped), torch.zeros(n, dtype=torch.int64), draws))
    assert new.shape == old.shape and torch.equal(new, old)
    assert new.is_contiguous(memory_format=torch.channels_last)


def test_other_augmentations_keep_the_float_path() -> None:
    pre = Preprocess(3, H, W, crop_size=16)
    for fields, on_uint8 in (
        ({}, True),
        ({"aug_flip": "fliplr"}, True),
        ({"aug_flip": "fliplrud"}, False),  # an up-down flip is not a mirror
        ({"aug_rot": 10.0}, False),  # rotating must see the whole image before the crop
        ({"aug_noise": 0.1}, False),
    ):
        config = TrainConfig(**fields)
        assert TrainInput(config, pre, Augmenter(config, 3), seed=0).on_uint8 is on_uint8, fields
    config = TrainConfig()
    assert TrainInput(config, Preprocess(3, H, W), Augmenter(config, 3), 0).crops_for(0) is None  # nothing to do


# -- training through it ----------------------------------------------------------------------------

DIGITS_CROP = textwrap.dedent(
    """
    layer { name: "train-data" type: "Data" top: "data" top: "label" include { stage: "train" }
      data_param { batch_size: 4 } transform_param { crop_size: 227 mirror: true } }
    layer { name: "val-data" type: "Data" top: "data" top: "label" include { stage: "val" }
      data_param { batch_size: 4 } transform_param { crop_size: 227 } }
    layer { name: "scale" type: "Power" bottom: "data" top: "scaled" power_param { scale: 0.01 } }
    layer { name: "conv1" type: "Convolution" bottom: "scaled" top: "conv1"
      convolution_param { num_output: 4 kernel_size: 11 stride: 8 } }
    layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 7 stride: 7 } }
    layer { name: "ip" type: "InnerProduct" bottom: "pool1" top: "ip" }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" exclude { stage: "deploy" } }
    layer { name: "softmax" type: "Softmax" bottom: "ip" top: "softmax" include { stage: "deploy" } }
    """
)


def small_budget(monkeypatch: pytest.MonkeyPatch, nbytes: int) -> None:
    monkeypatch.setattr(feeder_module, "ram_budget", lambda: nbytes)


def test_digits_alexnet_crop_and_mirror_train_from_a_jpeg_split_bigger_than_the_ram_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AlexNet's data layer (crop 227, mirror) on 256x256 JPEGs, streamed: the split is over the budget."""
    folder = make_classes(tmp_path / "images", {"a": 6, "b": 6}, size=(256, 256), channels=3)
    spec = DatasetSpec(
        folder_train=str(folder), resize_channels=3, resize_width=256, resize_height=256, folder_pct_val=34
    )
    spec.encoding = "jpg"
    build_dataset(spec, tmp_path / "ds", RecordingReporter(), workers=1)
    dataset = PackedDataset(tmp_path / "ds")
    small_budget(monkeypatch, 256 * 256 * 3)  # one image's worth
    reporter = RecordingReporter()
    config = TrainConfig(
        network="custom",
        network_text=DIGITS_CROP,
        train_epochs=1,
        random_seed=3,
        use_mean="image",
        device="cpu",
        extra={"feed_workers": 2},
    )
    summary = train(config, dataset, tmp_path / "run", reporter)
    assert summary["iterations"] == 2 and summary["final"]["val_accuracy"] >= 0
    log = "\n".join(reporter.lines)
    assert "crop 227" in log and "read from disk" in log
    config.extra["feed_workers"] = 0  # decoded in a thread instead: the very same run
    again = train(config, dataset, tmp_path / "again", RecordingReporter())
    assert again["final"] == summary["final"]


@pytest.mark.parametrize("workers", [0, 2])
def test_streaming_holds_batches_not_the_split(
    big_png: PackedDataset, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python-side memory while streaming a whole epoch stays near a few batches; in RAM it is the split."""
    small_budget(monkeypatch, 1024)
    count = big_png.count("train")
    split_bytes = count * 80 * 80 * 3
    indices = batches_of(count, 4)

    def peak(in_memory: bool | None) -> int:
        gc.collect()
        tracemalloc.start()
        try:
            images = big_png.images("train")
            feed = Feeder(images, big_png.targets("train"), in_memory=in_memory, workers=workers)
            for _ in feed.stream(indices, CropPlan(64, True, (1, 0, 0))):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(None) < split_bytes / 4  # the budget says stream: a few 4-image batches held at most
    assert peak(True) >= split_bytes  # the same split held in RAM: the measure sees it


@pytest.fixture(scope="module")
def big_png(tmp_path_factory: pytest.TempPathFactory) -> PackedDataset:
    """128 random 80x80 colour images stored as PNG: 2.5 MB decoded."""
    root = tmp_path_factory.mktemp("big")
    folder = make_classes(root / "images", {"a": 64, "b": 64}, size=(80, 80), channels=3)
    spec = DatasetSpec(folder_train=str(folder), resize_channels=3, resize_width=80, resize_height=80, folder_pct_val=0)
    spec.encoding = "png"
    build_dataset(spec, root / "ds", RecordingReporter(), workers=1)
    return PackedDataset(root / "ds")


# -- nothing left behind ------------------------------------------------------------------------------


def shm_names() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def live_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}


def test_no_worker_or_shared_memory_outlives_a_stream(splits) -> None:
    dataset = splits["jpg"]
    before_shm, before_children = shm_names(), live_children()
    feed = Feeder(dataset.images("train"), dataset.targets("train"), in_memory=False, workers=2)
    indices = batches_of(48, 4)

    stream = feed.stream(indices, CropPlan(16, True, (1, 0, 0)))
    next(stream)
    assert len(live_children() - before_children) == 2  # the workers are up while it runs
    stream.close()  # closed early, as the loop's contextlib.closing does
    assert live_children() == before_children

    for _ in feed.stream(indices):  # the consumer breaks out: the dropped generator cleans up
        break
    gc.collect()
    assert live_children() == before_children

    assert len(list(feed.stream(indices))) == len(indices)  # run to the end
    assert live_children() == before_children and shm_names() == before_shm


def stream_and_wait(path: str, pids: Connection) -> None:
    """A training process: starts a stream with 2 workers, says their pids, then waits to be killed."""
    images = np.memmap(path, dtype=np.uint8, mode="r", shape=(64, 8, 8, 3))
    feed = Feeder(images, np.zeros(64, dtype=np.int64), in_memory=False, workers=2)
    stream = feed.stream([np.arange(i, i + 4) for i in range(0, 64, 4)])
    next(stream)
    pids.send([p.pid for p in psutil.Process().children()])
    signal.pause()


def test_workers_die_with_a_killed_training_process(tmp_path: Path) -> None:
    """kill -9 of the training process (an abort kills its process group; this is harsher) ends its workers."""
    data = tmp_path / "split.u8"
    data.write_bytes(bytes(64 * 8 * 8 * 3))
    fork = multiprocessing.get_context("fork")
    here, there = fork.Pipe()
    trainer = fork.Process(target=stream_and_wait, args=(str(data), there))
    trainer.start()
    workers: list[psutil.Process] = []
    try:
        assert here.poll(60)
        workers = [psutil.Process(pid) for pid in here.recv()]
        assert len(workers) == 2 and all(w.is_running() for w in workers)
        os.kill(trainer.pid, signal.SIGKILL)
        trainer.join()
        for _ in range(200):  # up to 20 s; an orphan's zombie may stay unreaped (no init in a container)
            if not any(gone_or_zombie(w) is False for w in workers):
                break
            time.sleep(0.1)
        assert all(gone_or_zombie(w) for w in workers)
    finally:
        if trainer.is_alive():
            trainer.kill()
        trainer.join()
        for process in workers:  # alive only when the test failed: leave no orphans behind
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def gone_or_zombie(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_corrupt_entry_and_a_dead_worker_are_named(splits, tmp_path: Path) -> None:
    dataset = splits["png"]
    images = dataset.images("train")
    broken = tmp_path / "train.blob"
    blob = bytearray(images.blob.read_bytes())
    blob[images.offsets[5] : images.offsets[6]] = bytes(images.offsets[6] - images.offsets[5])  # entry 5 zeroed
    broken.write_bytes(bytes(blob))
    corrupt = type(images)(broken, images.offsets, images.shape)
    feed = Feeder(corrupt, dataset.targets("train"), in_memory=False, workers=1)
    with pytest.raises(FeedWorkerError, match="could not read a batch of the split"):
        list(feed.stream([np.arange(0, 8)]))

    feed = Feeder(images, dataset.targets("train"), in_memory=False, workers=1)
    before = live_children()
    stream = feed.stream(batches_of(48, 4))
    next(stream)
    (worker,) = live_children() - before
    os.kill(worker, signal.SIGKILL)
    with pytest.raises(FeedWorkerError, match="died"):
        for _ in range(20):
            next(stream)
    assert live_children() == before


def test_worker_count_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_FEED_WORKERS", "3")
    assert feed_workers() == 3 and feed_workers(0) == 0
    monkeypatch.setenv("KILN_FEED_WORKERS", "many")
    with pytest.raises(ValueError, match="KILN_FEED_WORKERS must be a whole number"):
        feed_workers()
    monkeypatch.delenv("KILN_FEED_WORKERS")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    cpus = len(os.sched_getaffinity(0))
    assert feed_workers() == max(1, min(cpus - 1, 8))
