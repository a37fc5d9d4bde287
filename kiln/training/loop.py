"""The train loop: read it top to bottom.

    train(config, dataset, out_dir, reporter, resume=False) -> summary

It trains `config.network` on a packed dataset (kiln.datasets.reader.PackedDataset) with DIGITS'
semantics (reference section 2.2): an epoch is ceil(train / (batch * accumulation)) iterations,
snapshots and validations come every (fractional) number of epochs, the learning rate changes
every iteration, and everything is reported through a kiln.reporting.Reporter.

`train()` tells the story; the parts it names live beside it:
  kiln.training.feeder       batches straight from the packed uint8 arrays (RAM, or streamed by
                             worker processes: kiln.training.decode_pool)
  kiln.training.crop_mirror  random crop and mirror on uint8 in the feeder, and the network input
  kiln.training.device       device, CPU threads, autocast precision, grad scaler
  kiln.training.distributed  torchrun: this rank's share, all-reduced metrics (`batch_size` is
                             per process, as in Caffe's multi-GPU training)
  kiln.training.rng          seeding, and the random states that make resume bit-exact
  python -m kiln.training    the command line (and torchrun) entry
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from kiln.preprocess import Preprocess, effective_crop
from kiln.reporting import RecordingReporter, Reporter, Stopped
from kiln.training import balance, checkpoint, rng
from kiln.training.config import TrainConfig
from kiln.training.device import Hardware
from kiln.training.distributed import Dist
from kiln.training.feeder import Feeder
from kiln.training.options import check_config

if TYPE_CHECKING:
    from kiln.networks.definition import NetworkDef
    from kiln.networks.registry import NetworkInfo
    from kiln.training.augment import Augmenter
    from kiln.training.crop_mirror import TrainInput


class TrainingDiverged(Exception):
    """The loss became NaN or infinite."""


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------
def train(config: TrainConfig, dataset: Any, out_dir: Path, reporter: Reporter, resume: bool = False) -> dict[str, Any]:
    """Train config.network on dataset, writing snapshots to out_dir; returns a summary dict.

    Raises kiln.reporting.Stopped when reporter.should_stop() turns true, TrainingDiverged when
    the loss stops being finite, ValueError for settings that cannot work with this dataset.
    """
    from kiln.networks.definition import NetworkDef

    started = time.perf_counter()
    check_config(config)  # the same check the form ran at job creation
    hw = Hardware.setup(config)
    report: Reporter = reporter if hw.dist.main else RecordingReporter()  # other ranks stay quiet
    out_dir = Path(out_dir)

    # -- what we train on, and how many iterations that makes -------------------------------------
    network = NetworkDef.of_config(config)
    data = Data.load(config, dataset, network.default_crop(), pin_memory=hw.device.type == "cuda")
    plan = Plan.make(config, len(data.train), network.info(), hw.dist.world, has_val=data.val is not None)

    # -- resume state or a fresh start; the network, solver and schedule --------------------------
    saved = checkpoint.load_resume(out_dir) if resume else None
    seed = saved["seed"] if saved else hw.dist.broadcast_int(rng.new_seed(config.random_seed))
    state = TrainState(**saved["state"]) if saved else TrainState()
    learner = Learner.build(config, network, data, plan, hw, seed)
    if config.balance_classes == "weights":  # kiln.training.balance
        learner.class_weight = balance.loss_weights(data.train.targets, len(data.labels)).to(hw.device)
    if saved:
        learner.load(saved, hw.dist.rank)
    elif config.pretrained_weights:
        learner.start_from(config, report)
    learner.net = hw.dist.wrap(learner.model, hw.device)  # DDP copies rank 0's weights
    run = Run(config, network, plan, hw, data, learner, state, seed, out_dir, report)
    if hw.dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    log_start(run)

    # -- iterate: an epoch at a time, reports, validations and snapshots as they fall due ---------
    window, clock = LossWindow(hw.device), Stopwatch()
    learner.net.train()
    while state.iteration < plan.max_iter and not state.stopped_early:
        epoch = state.iteration // plan.iters_per_epoch
        order = epoch_order(seed, epoch, len(data.train), config.shuffle, hw.dist)
        if config.balance_classes == "sampling":  # every class equally often (kiln.training.balance)
            epoch_now = state.iteration // plan.iters_per_epoch
            order = hw.dist.shard(balance.balanced_order(seed, epoch_now, data.train.targets))
        steps = plan.rest_of_epoch(order, state.iteration)
        crops = learner.inputs.crops_for(epoch, (state.iteration % plan.iters_per_epoch) * plan.accumulation)
        with contextlib.closing(data.train.stream([mb for step in steps for mb in step], crops)) as batches:
            clock.start()
            for micro in steps:
                window.add(train_step(learner, [next(batches) for _ in micro], data.pre, hw))
                state.iteration += 1
                clock.images += sum(len(mb) for mb in micro) * hw.dist.world
                stop_if_asked(run)
                it = state.iteration
                val_due, snap_due = plan.val_due(it), plan.snapshot_due(it)
                if plan.display_due(it) or val_due or snap_due:
                    clock.stop()
                    report_train(run, window)
                    if val_due and validate(run):  # true when early stopping ends the run
                        snap_due = True
                    if snap_due:
                        write_snapshot(run)
                    clock.start()
                if state.stopped_early:
                    break
            clock.stop()

    summary = state.summary(plan, seed)
    summary.update(seconds=round(time.perf_counter() - started, 3), images_per_second=clock.rate())
    report.progress(1.0, "Done")
    report.log(
        f"Done: {summary['iterations']} iterations, {summary['epochs']} epochs in "
        f"{summary['seconds']:.1f} s ({summary['images_per_second']} images/s while training)."
    )
    hw.dist.finish()
    return summary


# ------------------------------------------------------------------------------------------------
# What a run works with
# ------------------------------------------------------------------------------------------------
@dataclass
class Data:
    """The dataset as the loop sees it: class labels, preprocessing, a feeder per split used."""

    labels: list[str]
    pre: Preprocess
    train: Feeder
    val: Feeder | None  # None when there is nothing to validate on, or no val_interval

    @classmethod
    def load(cls, config: TrainConfig, dataset: Any, network_crop: int | None = None, pin_memory: bool = False) -> Data:
        """``network_crop``: the network text's crop, used when the form leaves crop_size blank;
        ``pin_memory``: batches in page-locked memory, for asynchronous copies to a GPU."""
        if ("train" not in dataset.splits) or dataset.count("train") == 0:
            raise ValueError("the dataset has no training images; create it again with a train split")
        has_val = config.val_interval > 0 and "val" in dataset.splits and dataset.count("val") > 0
        crop = effective_crop(config.crop_size, network_crop, dataset.image_shape)
        pre = Preprocess.for_dataset(dataset, config.use_mean, crop)
        in_memory = config.extra.get("data_in_memory")  # None: decided by the split's size
        workers = config.extra.get("feed_workers")  # None: KILN_FEED_WORKERS, else from the CPUs

        def feeder(split: str) -> Feeder:
            return Feeder(dataset.images(split), dataset.targets(split), in_memory, workers, pin_memory)

        train, val = feeder("train"), feeder("val") if has_val else None
        return cls(list(dataset.labels), pre, train, val)


@dataclass
class Learner:
    """The network and everything that changes as it learns: what resume.pt holds."""

    model: nn.Module
    net: nn.Module  # what trains: the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    augment: Augmenter
    inputs: TrainInput  # a feeder's batch -> the network's input (crop and mirror on uint8 when they can be)
    generator: torch.Generator  # augmentations (and crops on the float path), per rank
    aux_weights: list[float]  # GoogLeNet's side heads: loss1, loss2 at 0.3
    class_weight: torch.Tensor | None = None  # balance_classes=weights: the loss's per-class weights

    @classmethod
    def build(
        cls, config: TrainConfig, network: NetworkDef, data: Data, plan: Plan, hw: Hardware, seed: int
    ) -> Learner:
        from kiln.training.augment import Augmenter
        from kiln.training.crop_mirror import TrainInput
        from kiln.training.lr_policy import make_scheduler
        from kiln.training.solvers import make_optimizer

        torch.manual_seed(seed)  # the same initial weights for the same seed
        in_h, in_w = data.pre.input_size
        model = network.build(len(data.labels), (data.pre.channels, in_h, in_w))
        model = model.to(hw.device, memory_format=hw.memory_format)  # type: ignore[call-overload]
        optimizer = make_optimizer(model, config)
        scheduler = make_scheduler(optimizer, config, plan.max_iter)
        scaler = hw.grad_scaler()
        augment = Augmenter(config, data.pre.channels, mirror=network.mirror())
        inputs = TrainInput(config, data.pre, augment, seed, hw.dist.rank)
        generator = rng.seed_rank(seed, hw.dist.rank, hw.device)
        aux_weights = list(getattr(model, "aux_weights", []) or [])
        return cls(model, model, optimizer, scheduler, scaler, augment, inputs, generator, aux_weights)

    def load(self, saved: dict[str, Any], rank: int) -> None:
        """Continue from resume.pt: weights, solver and schedule state, this rank's random streams."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        rng.restore(saved["rng"], rank, self.generator)

    def start_from(self, config: TrainConfig, report: Reporter) -> None:
        """Fine-tuning: a snapshot's weights where names and shapes match; the rest keeps its fresh start."""
        fresh = checkpoint.load_matching(self.model, config.pretrained_weights)
        what = config.pretrained_from or Path(config.pretrained_weights).name
        report.log(f"Starting from the weights of {what}" + (f"; started fresh: {', '.join(fresh)}" if fresh else ""))

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }


@dataclass
class Run:
    """Everything one training run works with, handed to the helpers below as one argument."""

    config: TrainConfig
    network: NetworkDef
    plan: Plan
    hw: Hardware
    data: Data
    learner: Learner
    state: TrainState
    seed: int
    out_dir: Path
    report: Reporter


# ------------------------------------------------------------------------------------------------
# One iteration, one validation, one snapshot
# ------------------------------------------------------------------------------------------------
def train_step(
    learner: Learner, micro_batches: list[tuple[torch.Tensor, torch.Tensor]], pre: Preprocess, hw: Hardware
) -> torch.Tensor:
    """One iteration: forward/backward every micro-batch, one optimizer step, one schedule step.

    Each micro-batch's loss is weighted by its share of the iteration's images, so the gradient
    is the mean over all of them: 4 x 16 with accumulation equals one batch of 64.
    Returns the iteration's mean loss of the main head (a 0-d tensor, not synced).
    """
    net, optimizer, scaler, generator = learner.net, learner.optimizer, learner.scaler, learner.generator
    total = sum(len(y) for _, y in micro_batches)
    optimizer.zero_grad(set_to_none=True)
    losses = []
    for k, batch in enumerate(micro_batches):
        x = hw.layout(learner.inputs(batch, generator, hw.device))  # augmented, mean subtracted, cropped
        y = batch[1].to(hw.device, non_blocking=True)
        share = len(y) / total  # 1.0 without accumulation
        last = k == len(micro_batches) - 1
        # under DDP, all-reduce the gradients once per iteration, not once per micro-batch
        sync = contextlib.nullcontext() if last or hw.dist.world == 1 else cast(DDP, net).no_sync()
        with sync, hw.autocast():
            out = net(x)
            main, aux = (out[0], out[1:]) if isinstance(out, (tuple, list)) else (out, ())
            loss = F.cross_entropy(main.float(), y, weight=learner.class_weight)
            total_loss = loss
            for weight, logits in zip(learner.aux_weights, aux):
                total_loss = total_loss + weight * F.cross_entropy(logits.float(), y, weight=learner.class_weight)
            if share != 1.0:
                total_loss = total_loss * share
            scaler.scale(total_loss).backward()
        losses.append(loss.detach() * share if share != 1.0 else loss.detach())
    scaler.step(optimizer)
    scaler.update()
    learner.scheduler.step()
    return losses[0] if len(losses) == 1 else torch.stack(losses).sum()


@torch.no_grad()
def evaluate(model: nn.Module, data: Data, batch: int, hw: Hardware) -> dict[str, float]:
    """Mean loss, top-1 and (with 5+ classes) top-5 accuracy in percent over the whole val split."""
    assert data.val is not None
    model.eval()
    mine = np.arange(len(data.val))[hw.dist.rank :: hw.dist.world]  # every image once over all ranks
    sums = torch.zeros(4, dtype=torch.float64, device=hw.device)  # loss, top1, top5, count
    for images, targets in data.val.stream([mine[i : i + batch] for i in range(0, len(mine), batch)]):
        y = targets.to(hw.device)
        with hw.autocast():
            logits = model(hw.layout(data.pre.batch_to_tensor(images, device=hw.device))).float()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top == y[:, None]
        sums += torch.stack(
            [
                F.cross_entropy(logits, y, reduction="sum").double(),
                hits[:, 0].sum().double(),
                hits.any(dim=1).sum().double(),
                torch.tensor(float(len(y)), dtype=torch.float64, device=hw.device),
            ]
        )
    loss, top1, top5, count = hw.dist.sum(sums).tolist()
    values = {"loss": loss / count, "accuracy": 100.0 * top1 / count}
    if len(data.labels) >= 5:
        values["accuracy_top5"] = 100.0 * top5 / count
    return values


def validate(run: Run) -> bool:
    """Validate, report, keep the best weights if asked; True when early stopping ends the run."""
    config, state = run.config, run.state
    values = evaluate(run.learner.model, run.data, run.plan.val_batch, run.hw)
    run.learner.net.train()
    epoch = state.epoch(run.plan)
    state.record(epoch, "val", values)
    run.report.metrics(round(epoch, 3), values, "val")
    run.report.log(
        f"Epoch {checkpoint.format_epoch(epoch)}: val loss {values['loss']:.4f}, accuracy {values['accuracy']:.2f} %"
    )
    if state.improved(values, config.early_stopping) and config.keep_best and run.hw.dist.main:
        checkpoint.save_snapshot(run.out_dir, run.learner.model, snapshot_meta(run), stem="best")
    if not state.should_stop_early(config):
        return False
    run.report.log(
        f"Early stopping: {config.early_stopping} has not improved for {config.early_stopping_patience} validations."
    )
    return True


def write_snapshot(run: Run) -> None:
    """Weights + json, then the resume state; rank 0 writes, every rank takes part."""
    states = run.hw.dist.gather_objects(rng.capture(run.learner.generator))
    if not run.hw.dist.main:
        return
    state = run.state
    epoch = state.epoch(run.plan)
    path = checkpoint.save_snapshot(run.out_dir, run.learner.model, snapshot_meta(run))
    state.snapshots.append(round(epoch, 3))
    checkpoint.save_resume(
        run.out_dir,
        {
            **run.learner.state_dict(),
            "rng": states,
            "seed": run.seed,
            "state": asdict(state),
            "epoch": round(epoch, 3),
            "iteration": state.iteration,
            "config": run.config.to_dict(),
        },
    )
    reason = " (early stop)" if state.stopped_early else ""
    run.report.log(f"Snapshot saved at epoch {checkpoint.format_epoch(epoch)}: {path.name}{reason}")
    run.report.snapshot(round(epoch, 3), str(path), state.latest())


def snapshot_meta(run: Run) -> dict[str, Any]:
    """What a snapshot's json says: enough to rebuild the network and preprocess its input."""
    pre, labels = run.data.pre, run.data.labels
    in_h, in_w = pre.input_size
    return checkpoint.snapshot_meta(
        **run.network.meta(),
        num_classes=len(labels),
        in_channels=pre.channels,
        height=in_h,
        width=in_w,
        labels=labels,
        preprocess=pre.to_dict(),
        epoch=run.state.epoch(run.plan),
        iteration=run.state.iteration,
        metrics=run.state.latest(),
        config=run.config.to_dict(),
    )


def stop_if_asked(run: Run) -> None:
    """Raise Stopped once the reporter asks (an abort); the last snapshot stays the resume point."""
    dist = run.hw.dist
    # under torchrun the flag is all-reduced, so check it only every 10 iterations there
    if (dist.world == 1 or run.state.iteration % 10 == 0) and dist.any(run.report.should_stop()):
        run.report.log(f"Aborted at epoch {run.state.epoch(run.plan):.2f}; the last snapshot is kept.")
        raise Stopped("training aborted")


def report_train(run: Run, window: LossWindow) -> None:
    """Mean train loss since the last report (all ranks), the learning rate, the progress."""
    loss = window.take(run.hw.dist)
    if loss is None:
        return
    state, plan = run.state, run.plan
    epoch = state.epoch(plan)
    if not math.isfinite(loss):
        raise TrainingDiverged(
            f"Training diverged at epoch {epoch:.2f} (iteration {state.iteration}): the loss became "
            f"{loss}. Lower the learning rate (it was {run.config.learning_rate:g}) and train again."
        )
    values = {"loss": loss, "lr": run.learner.optimizer.param_groups[0]["lr"]}
    state.record(epoch, "train", values)
    run.report.metrics(round(epoch, 3), values, "train")
    run.report.progress(min(1.0, epoch / plan.epochs), f"Epoch {epoch:.2f} of {plan.epochs:g}, loss {loss:.4f}")


def log_start(run: Run) -> None:
    config, plan, pre, feed, report = run.config, run.plan, run.data.pre, run.data.train, run.report
    h, w = pre.input_size
    report.log(
        f"Training {config.network} on {len(feed)} images ({pre.channels}x{h}x{w}), "
        f"{len(run.data.labels)} classes, mean {pre.use_mean}" + (f", crop {pre.crop_size}" if pre.crop_size else "")
    )
    report.log(
        f"Batch {plan.batch} x accumulation {plan.accumulation}: {plan.iters_per_epoch} iterations "
        f"per epoch, {plan.max_iter} in all; {config.solver_type}, learning rate "
        f"{config.learning_rate:g} ({config.lr_policy})"
    )
    report.log(
        f"Device {run.hw.describe()}; data {'in memory' if feed.in_memory else 'read from disk'} "
        f"({feed.nbytes / 1e6:.1f} MB)"
    )
    if config.recipe != "none":
        report.log(f"Recipe: {config.recipe} (kiln.training.recipe filled in the fields this run shows)")
    report.log(f"Augmentations: {run.learner.augment.describe()}")
    if config.balance_classes != "none":
        report.log(balance.describe(config.balance_classes, feed.targets, len(run.data.labels)))
    for note in getattr(run.learner.augment, "notes", []):
        report.log(f"Augmentation: {note}")
    if run.state.iteration:
        report.log(f"Resuming at epoch {run.state.epoch(plan):.3g} (iteration {run.state.iteration})")
    if config.early_stopping != "none" and not plan.has_val:
        report.log("Early stopping needs validation (a val split and val_interval > 0); it is off.")


# ------------------------------------------------------------------------------------------------
# Iteration arithmetic (DIGITS' Caffe path, reference 2.2)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """How many iterations, of which batches, and when to report, validate and snapshot."""

    batch: int  # per process
    accumulation: int
    world: int
    epochs: float
    iters_per_epoch: int
    max_iter: int
    display_every: int
    val_batch: int
    val_interval: float  # epochs; 0 = never
    snapshot_interval: float  # epochs; 0 = only the final snapshot
    has_val: bool  # a val split to validate on, and a val_interval

    @classmethod
    def make(
        cls, config: TrainConfig, n_train: int, network: NetworkInfo, world: int = 1, has_val: bool = False
    ) -> Plan:
        batch = int(config.batch_size or network.default_batch)
        accumulation = int(config.batch_accumulation or 1)
        if batch < 1 or accumulation < 1:
            raise ValueError(f"batch_size and batch_accumulation must be at least 1 (got {batch} and {accumulation})")
        if not config.train_epochs > 0:
            raise ValueError(f"train_epochs must be above 0, got {config.train_epochs}")
        per_rank = math.ceil(n_train / world)
        ipe = math.ceil(per_rank / (batch * accumulation))
        max_iter = max(1, math.ceil(ipe * config.train_epochs - 1e-9))
        # DIGITS' Caffe `display`: at most ~8 points per epoch, and at least one per 5000 images
        display = max(1, min(ipe // 8, math.ceil(5000 / (batch * accumulation * world))))
        return cls(
            batch,
            accumulation,
            world,
            float(config.train_epochs),
            ipe,
            max_iter,
            display,
            val_batch=max(network.default_val_batch, batch),
            val_interval=config.val_interval,
            snapshot_interval=config.snapshot_interval,
            has_val=has_val,
        )

    def micro_batches(self, order: np.ndarray, step: int) -> list[np.ndarray]:
        """The index arrays of iteration `step` of an epoch: up to `accumulation` of up to `batch`."""
        size = self.batch * self.accumulation
        chunk = order[step * size : (step + 1) * size]
        return [chunk[i : i + self.batch] for i in range(0, len(chunk), self.batch)]

    def rest_of_epoch(self, order: np.ndarray, iteration: int) -> list[list[np.ndarray]]:
        """The micro-batches of every iteration from `iteration` (completed so far) to the end of
        its epoch, or to max_iter when training stops within it."""
        epoch = iteration // self.iters_per_epoch
        last = min(self.iters_per_epoch, self.max_iter - epoch * self.iters_per_epoch)
        return [self.micro_batches(order, step) for step in range(iteration % self.iters_per_epoch, last)]

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

    def val_due(self, iteration: int) -> bool:
        return self.has_val and (self.due(iteration, self.val_interval) or iteration == self.max_iter)

    def snapshot_due(self, iteration: int) -> bool:
        return self.due(iteration, self.snapshot_interval) or iteration == self.max_iter


def epoch_order(seed: int, epoch: int, n: int, shuffle: bool, dist: Dist) -> np.ndarray:
    """This rank's share of the epoch's order. Derived from (seed, epoch) alone, so a resumed run
    and a straight run see the same order without storing it."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    return dist.shard(order)


# ------------------------------------------------------------------------------------------------
# Training state: counters, metric history, best value, early stopping
# ------------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """What a run has done so far; saved in resume.pt as plain data."""

    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # {"epoch", "phase", **values}
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
        return {
            "epochs": round(self.epoch(plan), 3),
            "iterations": self.iteration,
            "iterations_per_epoch": plan.iters_per_epoch,
            "batch_size": plan.batch,
            "batch_accumulation": plan.accumulation,
            "world_size": plan.world,
            "seed": seed,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": best["accuracy"] if best else None,
            "best_val_loss": best["loss"] if best else None,
            "final": self.latest(),
            "stopped_early": self.stopped_early,
            "snapshots": list(self.snapshots),
        }


class LossWindow:
    """Sum of per-iteration losses since the last report, kept on the device (no sync per step)."""

    def __init__(self, device: torch.device) -> None:
        self.sum = torch.zeros((), dtype=torch.float64, device=device)
        self.count = 0

    def add(self, loss: torch.Tensor) -> None:
        self.sum += loss
        self.count += 1

    def take(self, dist: Dist) -> float | None:
        """The mean over all ranks, then reset; None when nothing was added."""
        if self.count == 0:
            return None
        total = dist.sum(torch.stack([self.sum, self.sum.new_tensor(float(self.count))]))
        self.sum.zero_()
        self.count = 0
        return float(total[0] / total[1])


class Stopwatch:
    """Seconds spent training (not validating or saving) and images seen: the summary's images/s."""

    def __init__(self) -> None:
        self.seconds, self.images = 0.0, 0
        self._tick: float | None = None

    def start(self) -> None:
        self._tick = time.perf_counter()

    def stop(self) -> None:
        if self._tick is not None:
            self.seconds += time.perf_counter() - self._tick
            self._tick = None

    def rate(self) -> float | None:
        return round(self.images / self.seconds, 1) if self.seconds > 0 else None
