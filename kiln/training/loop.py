"""The train loop: read it top to bottom.

    train(config, dataset, out_dir, reporter, resume=False) -> summary

It trains `config.network` on a packed dataset (kiln.datasets.reader.PackedDataset) with DIGITS'
semantics (reference section 2.2): an epoch is ceil(train / (batch * accumulation)) iterations,
snapshots and validations come every (fractional) number of epochs, the learning rate changes
every iteration, and everything is reported through a kiln.reporting.Reporter.

Speed on small machines comes from feeding the network straight from the packed uint8 arrays:
no DataLoader workers and no per-image work. Each micro-batch is one fancy index of the split
(held in RAM when it fits, else read from the memory map a batch ahead in a thread), one uint8
-> float conversion, and channels_last memory throughout.

The same file runs under `torchrun --nproc-per-node N -m kiln.training.loop ...`: every rank
takes its own share of each epoch's shuffled order, gradients are averaged by
DistributedDataParallel, metrics are all-reduced, and only rank 0 reports or writes files.
`batch_size` is per process, as in Caffe's multi-GPU training.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import nn

from kiln.preprocess import Preprocess
from kiln.reporting import NullReporter, Reporter, Stopped
from kiln.training import checkpoint
from kiln.training.config import TrainConfig

RAM_FRACTION = 0.25          # a split is held in RAM when it takes at most this share of free memory


class TrainingDiverged(Exception):
    """The loss became NaN or infinite."""


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------
def train(config: TrainConfig, dataset: Any, out_dir: Path, reporter: Reporter,
          resume: bool = False) -> dict[str, Any]:
    """Train config.network on dataset, writing snapshots to out_dir; returns a summary dict.

    Raises kiln.reporting.Stopped when reporter.should_stop() turns true, TrainingDiverged when
    the loss stops being finite, ValueError for settings that cannot work with this dataset.
    """
    from kiln.networks.registry import create_network, get_network_info
    from kiln.training.augment import Augmenter
    from kiln.training.lr_policy import make_scheduler
    from kiln.training.solvers import make_optimizer

    started = time.perf_counter()
    check_config(config)
    dist = Dist.start()
    out_dir = Path(out_dir)
    report: Reporter = reporter if dist.main else NullReporter()   # other ranks stay quiet
    device = pick_device(config.device, dist)
    threads = set_threads(device, dist)
    amp_dtype = pick_precision(config.precision, device)

    # -- what we train on, and how it is preprocessed ---------------------------------------------
    info = get_network_info(config.network)
    labels = list(dataset.labels)
    n_train = dataset.count("train") if "train" in dataset.splits else 0
    if n_train == 0:
        raise ValueError("the dataset has no training images; create it again with a train split")
    has_val = config.val_interval > 0 and "val" in dataset.splits and dataset.count("val") > 0
    pre = Preprocess.for_dataset(dataset, config.use_mean, config.crop_size)
    in_h, in_w = pre.input_size
    plan = Plan.make(config, n_train, info.default_batch, dist.world)
    val_batch = max(info.default_val_batch, plan.batch)

    # -- resume state or a fresh start ------------------------------------------------------------
    saved = checkpoint.load_resume(out_dir) if resume else None
    seed = saved["seed"] if saved else dist.broadcast_int(
        config.random_seed if config.random_seed is not None else random.SystemRandom().randrange(2**31))
    state = TrainState(**saved["state"]) if saved else TrainState()

    # -- network, solver, schedule ----------------------------------------------------------------
    torch.manual_seed(seed)                       # the same initial weights for the same seed
    model = create_network(config.network, len(labels), pre.channels, in_h, in_w)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, plan.max_iter)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    augment = Augmenter(config, pre.channels)
    generator = torch.Generator(device=device)    # crops and augmentations, per rank
    generator.manual_seed(seed * 1000 + dist.rank)
    torch.manual_seed(seed + dist.rank)           # dropout, per rank
    if saved:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        set_rng_states(saved["rng"], dist.rank, generator)
    net = dist.wrap(model, device)
    aux_weights = list(getattr(model, "aux_weights", []) or [])

    # -- data -------------------------------------------------------------------------------------
    in_memory = config.extra.get("data_in_memory")
    train_feed = Feeder(dataset.images("train"), dataset.targets("train"), in_memory)
    val_feed = Feeder(dataset.images("val"), dataset.targets("val"), in_memory) if has_val else None

    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    log_start(report, config, plan, pre, labels, device, threads, amp_dtype, train_feed, dist, state, augment)
    if config.early_stopping != "none" and not has_val:
        report.log("Early stopping needs validation (a val split and val_interval > 0); it is off.")

    def meta(epoch: float) -> dict[str, Any]:
        return checkpoint.snapshot_meta(
            network=config.network, num_classes=len(labels), in_channels=pre.channels, height=in_h,
            width=in_w, labels=labels, preprocess=pre.to_dict(), epoch=epoch, iteration=state.iteration,
            metrics=state.latest(), config=config.to_dict())

    def write_snapshot(reason: str) -> None:
        """Weights + json, then the resume state; rank 0 writes, every rank takes part."""
        rng = dist.gather_objects(get_rng_states(generator))
        if not dist.main:
            return
        epoch = state.epoch(plan)
        path = checkpoint.save_snapshot(out_dir, model, meta(epoch))
        state.snapshots.append(round(epoch, 3))
        checkpoint.save_resume(out_dir, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
            "seed": seed, "state": asdict(state), "epoch": round(epoch, 3), "iteration": state.iteration,
            "config": config.to_dict()})
        report.log(f"Snapshot saved at epoch {checkpoint.format_epoch(epoch)}: {path.name}{reason}")
        report.snapshot(round(epoch, 3), str(path), state.latest())

    def validate() -> None:
        """Loss, top-1 and top-5 accuracy on the val split; keeps the best weights if asked."""
        values = evaluate(model, val_feed, pre, val_batch, len(labels), device, amp_dtype, dist)
        epoch = state.epoch(plan)
        state.record(epoch, "val", values)
        report.metrics(round(epoch, 3), values, "val")
        report.log(f"Epoch {checkpoint.format_epoch(epoch)}: val loss {values['loss']:.4f}, "
                   f"accuracy {values['accuracy']:.2f} %")
        if state.improved(values, config.early_stopping) and config.keep_best and dist.main:
            checkpoint.save_snapshot(out_dir, model, meta(epoch), stem="best")

    # -- iterate ----------------------------------------------------------------------------------
    window = LossWindow(device)
    train_seconds, images_seen = 0.0, 0
    net.train()
    while state.iteration < plan.max_iter and not state.stopped_early:
        epoch_index = state.iteration // plan.iters_per_epoch
        order = epoch_order(seed, epoch_index, n_train, config.shuffle, dist)
        first = state.iteration % plan.iters_per_epoch
        last = min(plan.iters_per_epoch, plan.max_iter - epoch_index * plan.iters_per_epoch)
        steps = [plan.micro_batches(order, i) for i in range(first, last)]
        batches = train_feed.stream([mb for step in steps for mb in step])
        tick = time.perf_counter()
        for micro in steps:
            loss = train_step(net, optimizer, scaler, [next(batches) for _ in micro], pre, augment,
                              generator, device, amp_dtype, aux_weights, dist)
            scheduler.step()
            window.add(loss)
            state.iteration += 1
            images_seen += sum(len(mb) for mb in micro) * dist.world
            it = state.iteration
            # under torchrun the flag is all-reduced, so check it only every 10 iterations there
            if (dist.world == 1 or it % 10 == 0) and dist.any(report.should_stop()):
                batches.close()
                report.log(f"Aborted at epoch {state.epoch(plan):.2f}; the last snapshot is kept.")
                raise Stopped("training aborted")
            at_end = it == plan.max_iter
            val_due = has_val and (plan.due(it, config.val_interval) or at_end)
            snap_due = plan.due(it, config.snapshot_interval) or at_end
            if plan.display_due(it) or val_due or snap_due:
                train_seconds += time.perf_counter() - tick
                report_train(report, window, state, plan, optimizer, dist, config)
                if val_due:
                    validate()
                    net.train()
                    if state.should_stop_early(config):
                        report.log(f"Early stopping: {config.early_stopping} has not improved for "
                                   f"{config.early_stopping_patience} validations.")
                        snap_due = True
                if snap_due:
                    write_snapshot(" (early stop)" if state.stopped_early else "")
                tick = time.perf_counter()
            if state.stopped_early:
                batches.close()
                break
        else:
            train_seconds += time.perf_counter() - tick

    summary = state.summary(plan, seed)
    summary.update(seconds=round(time.perf_counter() - started, 3),
                   images_per_second=round(images_seen / train_seconds, 1) if train_seconds > 0 else None)
    report.progress(1.0, "Done")
    report.log(f"Done: {summary['iterations']} iterations, {summary['epochs']} epochs in "
               f"{summary['seconds']:.1f} s ({summary['images_per_second']} images/s while training).")
    dist.finish()
    return summary


def check_config(config: TrainConfig) -> None:
    """Settings the loop itself interprets (solvers, policies and augmentations check their own)."""
    if config.early_stopping not in ("none", "val_loss", "val_accuracy"):
        raise ValueError(f"early_stopping must be none, val_loss or val_accuracy, not {config.early_stopping!r}")
    if config.early_stopping_patience < 1:
        raise ValueError(f"early_stopping_patience must be at least 1, got {config.early_stopping_patience}")
    if config.snapshot_interval < 0 or config.val_interval < 0:
        raise ValueError("snapshot_interval and val_interval must not be negative (0 = final only / none)")


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               micro_batches: list[tuple[torch.Tensor, torch.Tensor]], pre: Preprocess, augment: Any,
               generator: torch.Generator, device: torch.device, amp_dtype: torch.dtype | None,
               aux_weights: list[float], dist: "Dist") -> torch.Tensor:
    """One iteration: forward/backward every micro-batch, then one optimizer step.

    Each micro-batch's loss is weighted by its share of the iteration's images, so the gradient
    is the mean over all of them: 4 x 16 with accumulation equals one batch of 64.
    Returns the iteration's mean loss of the main head (a 0-d tensor, not synced).
    """
    total = sum(len(y) for _, y in micro_batches)
    optimizer.zero_grad(set_to_none=True)
    losses = []
    for k, (images, targets) in enumerate(micro_batches):
        x = pre.to_float(images, device)
        x = pre.normalize(augment(x, generator), train=True, generator=generator)
        y = targets.to(device, non_blocking=True)
        share = len(y) / total                                  # 1.0 without accumulation
        last = k == len(micro_batches) - 1
        # under DDP, all-reduce the gradients once per iteration, not once per micro-batch
        sync = contextlib.nullcontext() if last or dist.world == 1 else net.no_sync()
        with sync, autocast(device, amp_dtype):
            out = net(x)
            main, aux = (out[0], out[1:]) if isinstance(out, (tuple, list)) else (out, ())
            loss = F.cross_entropy(main.float(), y)
            total_loss = loss
            for weight, logits in zip(aux_weights, aux):        # GoogLeNet: loss1, loss2 at 0.3
                total_loss = total_loss + weight * F.cross_entropy(logits.float(), y)
            if share != 1.0:
                total_loss = total_loss * share
            scaler.scale(total_loss).backward()
        losses.append(loss.detach() * share if share != 1.0 else loss.detach())
    scaler.step(optimizer)
    scaler.update()
    return losses[0] if len(losses) == 1 else torch.stack(losses).sum()


@torch.no_grad()
def evaluate(model: nn.Module, feed: "Feeder", pre: Preprocess, batch: int, num_classes: int,
             device: torch.device, amp_dtype: torch.dtype | None, dist: "Dist") -> dict[str, float]:
    """Mean loss, top-1 and (with 5+ classes) top-5 accuracy in percent over the whole split."""
    model.eval()
    mine = np.arange(len(feed))[dist.rank::dist.world]
    sums = torch.zeros(4, dtype=torch.float64, device=device)       # loss, top1, top5, count
    for images, targets in feed.stream([mine[i:i + batch] for i in range(0, len(mine), batch)]):
        y = targets.to(device)
        with autocast(device, amp_dtype):
            logits = model(pre.batch_to_tensor(images, device=device)).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y[:, None]
        sums += torch.stack([F.cross_entropy(logits, y, reduction="sum").double(),
                             hits[:, 0].sum().double(), hits.any(dim=1).sum().double(),
                             torch.tensor(float(len(y)), dtype=torch.float64, device=device)])
    sums = dist.sum(sums)
    loss, top1, top5, count = sums.tolist()
    values = {"loss": loss / count, "accuracy": 100.0 * top1 / count}
    if num_classes >= 5:
        values["accuracy_top5"] = 100.0 * top5 / count
    return values


def report_train(report: Reporter, window: "LossWindow", state: "TrainState", plan: "Plan",
                 optimizer: torch.optim.Optimizer, dist: "Dist", config: TrainConfig) -> None:
    """Mean train loss since the last report (all ranks), the learning rate, the progress."""
    loss = window.take(dist)
    epoch = state.epoch(plan)
    if loss is None:
        return
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"Training diverged at epoch {epoch:.2f} (iteration {state.iteration}): the loss became "
            f"{loss}. Lower the learning rate (it was {config.learning_rate:g}) and train again.")
    lr = optimizer.param_groups[0]["lr"]
    values = {"loss": loss, "lr": lr}
    state.record(epoch, "train", values)
    report.metrics(round(epoch, 3), values, "train")
    report.progress(min(1.0, epoch / plan.epochs), f"Epoch {epoch:.2f} of {plan.epochs:g}, loss {loss:.4f}")


# ------------------------------------------------------------------------------------------------
# Iteration arithmetic (DIGITS' Caffe path, reference 2.2)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    batch: int                 # per process
    accumulation: int
    world: int
    epochs: float
    iters_per_epoch: int
    max_iter: int
    display_every: int

    @classmethod
    def make(cls, config: TrainConfig, n_train: int, default_batch: int, world: int = 1) -> "Plan":
        batch = int(config.batch_size or default_batch)
        accumulation = int(config.batch_accumulation or 1)
        if batch < 1 or accumulation < 1:
            raise ValueError(f"batch_size and batch_accumulation must be at least 1 "
                             f"(got {batch} and {accumulation})")
        if not config.train_epochs > 0:
            raise ValueError(f"train_epochs must be above 0, got {config.train_epochs}")
        per_rank = math.ceil(n_train / world)
        ipe = math.ceil(per_rank / (batch * accumulation))
        max_iter = max(1, math.ceil(ipe * config.train_epochs - 1e-9))
        # DIGITS' Caffe `display`: at most ~8 points per epoch, and at least one per 5000 images
        display = max(1, min(ipe // 8, math.ceil(5000 / (batch * accumulation * world))))
        return cls(batch, accumulation, world, float(config.train_epochs), ipe, max_iter, display)

    def micro_batches(self, order: np.ndarray, step: int) -> list[np.ndarray]:
        """The index arrays of iteration `step` of an epoch: up to `accumulation` of up to `batch`."""
        size = self.batch * self.accumulation
        chunk = order[step * size:(step + 1) * size]
        return [chunk[i:i + self.batch] for i in range(0, len(chunk), self.batch)]

    def due(self, iteration: int, interval_epochs: float) -> bool:
        """True when `iteration` (completed) is the first at or past a multiple of interval_epochs.

        An interval shorter than one iteration fires every iteration (DIGITS: values in (0,1] -> 1).
        """
        if interval_epochs <= 0:
            return False
        step = interval_epochs * self.iters_per_epoch
        return math.floor(iteration / step + 1e-9) > math.floor((iteration - 1) / step + 1e-9)

    def display_due(self, iteration: int) -> bool:
        return iteration % self.display_every == 0


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool, dist: "Dist") -> np.ndarray:
    """This rank's share of the epoch's order. Derived from (seed, epoch) alone, so a resumed run
    and a straight run see the same order without storing it."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    if dist.world > 1:
        # pad with the first entries so every rank gets the same number of iterations
        order = np.concatenate([order, order[:(-n) % dist.world]])[dist.rank::dist.world]
    return order


# ------------------------------------------------------------------------------------------------
# Training state: counters, metric history, best value, early stopping
# ------------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)   # {"epoch", "phase", **values}
    best: float | None = None
    best_epoch: float | None = None
    bad_validations: int = 0
    stopped_early: bool = False
    snapshots: list[float] = field(default_factory=list)

    def epoch(self, plan: Plan) -> float:
        return self.iteration / plan.iters_per_epoch

    def record(self, epoch: float, phase: str, values: dict[str, float]) -> None:
        self.history.append({"epoch": round(epoch, 3), "phase": phase, **values})

    def latest(self) -> dict[str, float]:
        """The newest value of every metric, named '<phase>_<name>' (val_loss, train_loss, ...)."""
        out: dict[str, float] = {}
        for row in self.history:
            out.update({f"{row['phase']}_{k}": v for k, v in row.items() if k not in ("epoch", "phase")})
        return out

    def improved(self, values: dict[str, float], early_stopping: str) -> bool:
        """Track the best validation: lowest loss for early_stopping=val_loss, else highest accuracy."""
        lower_is_better = early_stopping == "val_loss"
        value = values["loss"] if lower_is_better else values["accuracy"]
        better = self.best is None or (value < self.best if lower_is_better else value > self.best)
        if better:
            self.best, self.best_epoch, self.bad_validations = value, self.history[-1]["epoch"], 0
        else:
            self.bad_validations += 1
        return better

    def should_stop_early(self, config: TrainConfig) -> bool:
        if config.early_stopping != "none" and self.bad_validations >= config.early_stopping_patience:
            self.stopped_early = True
        return self.stopped_early

    def summary(self, plan: Plan, seed: int) -> dict[str, Any]:
        vals = [r for r in self.history if r["phase"] == "val"]
        best = next((r for r in vals if r["epoch"] == self.best_epoch), None)
        return {"epochs": round(self.epoch(plan), 3), "iterations": self.iteration,
                "iterations_per_epoch": plan.iters_per_epoch, "batch_size": plan.batch,
                "batch_accumulation": plan.accumulation, "world_size": plan.world, "seed": seed,
                "best_epoch": self.best_epoch,
                "best_val_accuracy": best["accuracy"] if best else None,
                "best_val_loss": best["loss"] if best else None,
                "final": self.latest(), "stopped_early": self.stopped_early,
                "snapshots": list(self.snapshots)}


class LossWindow:
    """Sum of per-iteration losses since the last report, kept on the device (no sync per step)."""

    def __init__(self, device: torch.device) -> None:
        self.sum = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.sum += loss
        self.count += 1

    def take(self, dist: "Dist") -> float | None:
        """The mean over all ranks, then reset; None when nothing was added."""
        if self.count == 0:
            return None
        total = dist.sum(torch.stack([self.sum, self.sum.new_tensor(float(self.count))]))
        self.sum.zero_()
        self.count = 0
        return float(total[0] / total[1])


# ------------------------------------------------------------------------------------------------
# Data: whole batches from the packed arrays
# ------------------------------------------------------------------------------------------------
class Feeder:
    """(uint8 NHWC tensor, int64 targets) for an index array, with no per-image Python work.

    The split is copied into RAM when it is small enough (MNIST train: 47 MB); otherwise each
    batch is read from the memory map (or decoded, for PNG/JPEG storage) one step ahead in a
    thread. Batch indices are sorted: reads go forward through the file, and both paths see
    the images of a batch in the same order, so they train identically.
    """

    def __init__(self, images: Any, targets: np.ndarray, in_memory: bool | None = None) -> None:
        self.targets = torch.from_numpy(np.asarray(targets, dtype=np.int64))
        # a memmap's shape is (N, H, W, C); kiln.datasets' EncodedImages keeps (H, W, C) per image
        item = tuple(images.shape[1:]) if isinstance(images, np.ndarray) else tuple(images.shape)
        self.nbytes = len(images) * int(np.prod(item))
        self.in_memory = fits_in_ram(self.nbytes) if in_memory is None else bool(in_memory)
        self.images = torch.from_numpy(read_all(images, item)) if self.in_memory else images

    def __len__(self) -> int:
        return len(self.targets)

    def fetch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.sort(index)
        if self.in_memory:
            t = torch.from_numpy(index)
            return self.images[t], self.targets[t]
        return torch.from_numpy(np.ascontiguousarray(self.images[index])), self.targets[torch.from_numpy(index)]

    def stream(self, indices: list[np.ndarray]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.in_memory:
            for index in indices:
                yield self.fetch(index)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="kiln-feed") as pool:
            ahead: deque = deque()
            for index in indices:
                ahead.append(pool.submit(self.fetch, index))
                if len(ahead) > 2:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()


def fits_in_ram(nbytes: int) -> bool:
    try:
        import psutil
        return nbytes <= RAM_FRACTION * psutil.virtual_memory().available
    except ImportError:
        return nbytes <= 1 << 30


def read_all(images: Any, item: tuple[int, ...], chunk: int = 4096) -> np.ndarray:
    """The whole split as one uint8 array (a memmap is read once; encoded images decoded once)."""
    if isinstance(images, np.ndarray):
        return np.array(images, copy=True)
    out = np.empty((len(images),) + item, dtype=np.uint8)
    for start in range(0, len(images), chunk):
        out[start:start + chunk] = images[start:start + chunk]
    return out


# ------------------------------------------------------------------------------------------------
# Devices, precision, processes
# ------------------------------------------------------------------------------------------------
def pick_device(name: str, dist: "Dist") -> torch.device:
    """auto | cpu | cuda | cuda:N | cuda:0,1 (one process uses the first; torchrun one per rank)."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not name.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {name!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but no CUDA GPU is available; use device auto or cpu")
    if dist.world > 1:
        return torch.device("cuda", dist.local_rank)
    ids = name.partition(":")[2].split(",")[0]
    return torch.device("cuda", int(ids) if ids.strip() else 0)


def set_threads(device: torch.device, dist: "Dist") -> int:
    """On CPU, share the cores between the processes on this machine (unless OMP_NUM_THREADS says)."""
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // dist.local_world))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.get_num_threads()


def pick_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. Mixed precision is for CUDA only."""
    precision = (precision or "auto").lower()
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@dataclass
class Dist:
    """This process's place under torchrun (RANK / WORLD_SIZE / LOCAL_RANK), or a world of one."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    owns_group: bool = False

    @classmethod
    def start(cls) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        owns = not torch_dist.is_initialized()
        if owns:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch_dist.init_process_group(backend)
        return cls(rank=torch_dist.get_rank(), world=torch_dist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                   local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))), owns_group=owns)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if self.world == 1:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            values = values.clone()
            torch_dist.all_reduce(values)
        return values

    def any(self, flag: bool) -> bool:
        if self.world == 1:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0],
                         device="cuda" if torch_dist.get_backend() == "nccl" else "cpu")
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_int(self, value: int) -> int:
        if self.world == 1:
            return int(value)
        box = [int(value)]
        torch_dist.broadcast_object_list(box, src=0)
        return int(box[0])

    def gather_objects(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch_dist.all_gather_object(out, obj)
        return out

    def finish(self) -> None:
        if self.world > 1:
            torch_dist.barrier()
            if self.owns_group:
                torch_dist.destroy_process_group()


# ------------------------------------------------------------------------------------------------
# RNG states, stored as tensors and plain numbers so resume.pt loads with weights_only=True
# ------------------------------------------------------------------------------------------------
def get_rng_states(generator: torch.Generator) -> dict[str, Any]:
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    states = {"torch": torch.get_rng_state(), "generator": generator.get_state(),
              "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
              "python": [version, list(internal), gauss]}
    if torch.cuda.is_available() and generator.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(generator.device)
    return states


def set_rng_states(per_rank: list[dict[str, Any]], rank: int, generator: torch.Generator) -> None:
    if rank >= len(per_rank):        # resumed with more processes than before: fresh streams
        return
    s = per_rank[rank]
    torch.set_rng_state(s["torch"])
    generator.set_state(s["generator"])
    name, key, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = s["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in s and generator.device.type == "cuda":
        torch.cuda.set_rng_state(s["cuda"], generator.device)


# ------------------------------------------------------------------------------------------------
# Logging
# ------------------------------------------------------------------------------------------------
def log_start(report: Reporter, config: TrainConfig, plan: Plan, pre: Preprocess, labels: list[str],
              device: torch.device, threads: int, amp_dtype: torch.dtype | None, feed: Feeder,
              dist: Dist, state: TrainState, augment: Any) -> None:
    h, w = pre.input_size
    where = f"{device}" + (f" ({threads} threads)" if device.type == "cpu" else "")
    if dist.world > 1:
        where += f" x {dist.world} processes"
    precision = "fp32" if amp_dtype is None else str(amp_dtype).replace("torch.", "")
    report.log(f"Training {config.network} on {len(feed)} images ({pre.channels}x{h}x{w}), "
               f"{len(labels)} classes, mean {pre.use_mean}" + (f", crop {pre.crop_size}" if pre.crop_size else ""))
    report.log(f"Batch {plan.batch} x accumulation {plan.accumulation}: {plan.iters_per_epoch} iterations "
               f"per epoch, {plan.max_iter} in all; {config.solver_type}, learning rate "
               f"{config.learning_rate:g} ({config.lr_policy})")
    report.log(f"Device {where}, {precision}; data {'in memory' if feed.in_memory else 'read from disk'} "
               f"({feed.nbytes / 1e6:.1f} MB)")
    for note in getattr(augment, "notes", []):
        report.log(f"Augmentation: {note}")
    if state.iteration:
        report.log(f"Resuming at epoch {state.epoch(plan):.3g} (iteration {state.iteration})")


class PrintReporter(NullReporter):
    """Progress lines on stdout, for the module entry point (and torchrun)."""

    def log(self, line: str) -> None:
        super().log(line)
        print(line, flush=True)

    def metrics(self, epoch: float, values: dict[str, float], phase: str = "train") -> None:
        super().metrics(epoch, values, phase)
        text = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"[{phase}] epoch {epoch:g}: {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """python -m kiln.training.loop --dataset DIR --out DIR [--config JSON|FILE] [--resume]"""
    from kiln.datasets.reader import PackedDataset

    parser = argparse.ArgumentParser(prog="python -m kiln.training.loop", description=main.__doc__)
    parser.add_argument("--dataset", required=True, help="a packed dataset's folder (with manifest.json)")
    parser.add_argument("--out", required=True, help="folder for snapshots")
    parser.add_argument("--config", default="{}", help="TrainConfig as JSON text or a .json file")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/resume.pt")
    args = parser.parse_args(argv)
    text = Path(args.config).read_text() if args.config.endswith(".json") else args.config
    config = TrainConfig.from_dict(json.loads(text))
    summary = train(config, PackedDataset(args.dataset), Path(args.out), PrintReporter(), resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
