"""Training speed and time-to-accuracy on MNIST, against baselines measured in the same run.

    python bench/bench_train.py                 # throughput + time-to-accuracy, prints a report
    python bench/bench_train.py --write-docs    # ... and rewrites the "Training" section of docs/benchmarks.md
    python bench/bench_train.py --only throughput|accuracy [--rounds 3] [--images 60000]
    python bench/bench_train.py --profile [lenet|lenet-v0|lenet-75-100|custom:lenet-75-100]
    python bench/bench_train.py --sweep         # time-to-accuracy of several candidate recipes

Throughput (images per second over the same number of MNIST training images, batch 256, SGD):
  (a) kiln: kiln.training.loop.train() called exactly as a model job calls it (RecordingReporter),
      data held in RAM and data read from the memory map;
  (b) plain: the best hand-written PyTorch loop on a hand-written network class: the split as
      one uint8 tensor in RAM, channels_last, fancy-indexed batches, SGD;
  (c) the machine's fp32 peak (fastest of a 4096^3 matmul and a 1x1 convolution), times the
      network's training FLOPs per image, gives each loop's fraction of peak.
Networks: LeNet as kiln's network text ("lenet", a PrototxtNet) and as kiln 0.1's Python class
("lenet-v0"); the lab's 75/100 variant (conv1 75, conv2 100, a ReLU after pool1) as a Python class
("lenet-75-100", registered here) and as a custom network text derived from kiln's LeNet text.
kiln vs plain on the same Python class measures the loop; text vs class measures the network text.
Each case runs in its own process (so peak RSS is its own); the cases of one network run at the
same time, taking turns an iteration at a time (`--steps-per-turn`) through a pipe, each timing
only its own iterations. The table keeps each case's best of `--rounds` rounds, as other load on
the machine only slows things down; the ratios pair the i-th iterations of two cases of the same
round (which met the same load) and give the median and spread over rounds.

Time-to-accuracy: the full MNIST (60,000 train, 10,000 test used as the val split), LeNet, the
recipe kiln offers by default for it; wall time of the whole train() call, and test accuracy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from docs_section import replace_section  # bench/ is on sys.path when a bench runs

from kiln.atomic import atomic_write_text
from kiln.datasets import packed_format

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 256
# The recipe kiln recommends for LeNet on MNIST (see docs/benchmarks.md, "Training").
MNIST_RECIPE: dict[str, Any] = dict(
    network="lenet",
    train_epochs=3,
    batch_size=128,
    solver_type="ADAM",
    learning_rate=0.002,
    lr_policy="cosine",
    use_mean="image",
    val_interval=1,
    snapshot_interval=1,
    random_seed=1,
)


# ------------------------------------------------------------------------------------------------
# Networks and their FLOPs
# ------------------------------------------------------------------------------------------------
# The lab's "Customize" experiment: LeNet with conv1=75 and conv2=100 filters and one more ReLU,
# after pool1. Built twice, as the same computation: a hand-written Python class (trained by the
# plain loop and by kiln as "lenet-75-100") and a network text derived from kiln's own LeNet text
# (trained by kiln as a custom network, as a student's edited text is).
VARIANT = "lenet-75-100"


def register_variants() -> None:
    """Register the hand-written 75/100 variant as "lenet-75-100" (a subclass of the "lenet-v0" class)."""
    from torch import nn

    from kiln.networks.caffe_conventions import fill_
    from kiln.networks.lenet import LeNet
    from kiln.networks.registry import NetworkInfo, list_networks, register_builder

    if any(info.name == VARIANT for info in list_networks(include_unlisted=True)):
        return

    class LeNet75100(LeNet):
        def __init__(self, num_classes: int, in_channels: int, height: int, width: int) -> None:
            super().__init__(num_classes, in_channels, height, width)
            spatial = self.ip1.in_features // self.conv2.out_channels
            self.conv1 = nn.Conv2d(in_channels, 75, 5)
            self.relu_pool1 = nn.ReLU(inplace=True)  # in place, as the text's ReLU runs
            self.conv2 = nn.Conv2d(75, 100, 5)
            self.ip1 = nn.Linear(100 * spatial, 500)
            for layer in (self.conv1, self.conv2, self.ip1):
                fill_(layer, "xavier")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu_pool1(self.pool1(self.conv1(self.scale(x))))
            x = self.pool2(self.conv2(x))
            return self.ip2(self.relu1(self.ip1(torch.flatten(x, 1))))

    register_builder(
        VARIANT,
        LeNet75100,
        NetworkInfo(
            name=VARIANT, label="LeNet 75/100", intended_size=(28, 28, 1), default_batch=64, default_val_batch=32
        ),
    )


def variant_text() -> str:
    """The 75/100 variant as a network text: kiln's LeNet text with three edits, as a student makes them."""
    from kiln.networks.prototxt import standard_text

    text = standard_text("lenet")
    pool1 = 'top: "pool1"\n  pooling_param { pool: MAX kernel_size: 2 stride: 2 }\n}\n'
    relu = 'layer {\n  name: "relu_pool1"\n  type: "ReLU"\n  bottom: "pool1"\n  top: "pool1"\n}\n'
    for old, new in (
        ("num_output: 20\n", "num_output: 75\n"),
        ("num_output: 50\n", "num_output: 100\n"),
        (pool1, pool1 + relu),
    ):
        if text.count(old) != 1:
            raise RuntimeError(f"kiln's LeNet text changed: {old!r} is not in it exactly once")
        text = text.replace(old, new)
    return text


def network_config(network: str) -> dict[str, str]:
    """TrainConfig fields for a case's network: a registered name, or "custom:<variant>" for a text."""
    if network == f"custom:{VARIANT}":
        return {"network": "custom", "network_text": variant_text()}
    return {"network": network}


def family(network: str) -> str:
    """lenet or lenet-75-100: what the computation is, whichever class or text runs it."""
    return VARIANT if VARIANT in network else "lenet"


def network_class(network: str) -> str:
    """What runs a case's network, for the report."""
    return {
        "lenet": "PrototxtNet (texts/lenet.prototxt)",
        "lenet-v0": "LeNet (Python)",
        VARIANT: "LeNet75100 (Python, a LeNet subclass)",
        f"custom:{VARIANT}": "PrototxtNet (custom text)",
    }.get(network, network)


def train_flops(network: str) -> float:
    """FLOPs per training image (forward + backward; conv1 needs no input gradient), 28x28 grey."""
    c1, c2 = (75, 100) if family(network) == VARIANT else (20, 50)
    conv1, conv2 = 24 * 24 * c1 * 25, 8 * 8 * c2 * c1 * 25
    fc = c2 * 16 * 500 + 500 * 10
    macs = conv1 + conv2 + fc
    return 2.0 * (3 * macs - conv1)  # lenet: 13.18 MFLOP (ReLUs and pooling not counted)


def measure_peak() -> dict[str, float]:
    """The machine's fp32 peak as the fastest of a large matmul and a large 1x1 convolution."""

    def best(fn, flops: float, reps: int = 5) -> float:
        fn()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return flops / min(times) / 1e9

    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    matmul = best(lambda: a @ b, 2 * 4096**3)
    x = torch.randn(32, 256, 56, 56).to(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(256, 256, 1, bias=False).to(memory_format=torch.channels_last)
    with torch.no_grad():
        conv_gf = best(lambda: conv(x), 2 * 32 * 256 * 256 * 56 * 56)
    return {"matmul": matmul, "conv1x1": conv_gf, "peak": max(matmul, conv_gf)}


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------
class ArrayDataset:
    """Synthetic stand-in with PackedDataset's interface, used only when MNIST is not installed."""

    def __init__(self, n_train: int = 60000, n_val: int = 10000) -> None:
        rng = np.random.default_rng(0)
        self.labels = [str(i) for i in range(10)]
        self.image_shape = (28, 28, 1)
        self.splits = ["train", "val"]
        self._y = {"train": rng.integers(0, 10, n_train), "val": rng.integers(0, 10, n_val)}
        self._x = {
            s: (rng.integers(0, 60, (len(y), 28, 28, 1)) + (y[:, None, None, None] * 19)).astype(np.uint8)
            for s, y in self._y.items()
        }
        self.manifest = {"image": {"resize_mode": "squash"}}

    def count(self, split: str) -> int:
        return len(self._y[split])

    def images(self, split: str) -> np.ndarray:
        return self._x[split]

    def targets(self, split: str) -> np.ndarray:
        return self._y[split]

    def mean_image(self) -> np.ndarray:
        return self._x["train"].mean(0).round().astype(np.float32)

    def mean_pixel(self) -> np.ndarray:
        return self.mean_image().mean((0, 1))


def mnist_dataset(work: Path) -> Any:
    """The packed MNIST dataset (60k train, 10k test as val), built once under work/."""
    from kiln.datasets.reader import PackedDataset

    packed = work / "mnist-packed"
    if packed_format.is_complete(packed):
        return PackedDataset(packed)
    try:
        from kiln.datasets.pack import build_dataset
        from kiln.datasets.stdsets import SourceMissing, folders_spec, write_mnist
        from kiln.reporting import RecordingReporter
    except ImportError as exc:
        print(f"(kiln.datasets incomplete: {exc}; using synthetic data)", file=sys.stderr)
        return ArrayDataset()
    try:
        print("writing MNIST image folders ...", file=sys.stderr, flush=True)
        write_mnist(work / "mnist")
    except SourceMissing as exc:
        print(f"({exc}; using synthetic data)", file=sys.stderr)
        return ArrayDataset()
    print("packing MNIST ...", file=sys.stderr, flush=True)
    spec = folders_spec(work / "mnist")
    build_dataset(spec, packed, RecordingReporter(), workers=os.cpu_count() or 2)
    return PackedDataset(packed)


# ------------------------------------------------------------------------------------------------
# The cases, each run in a child process
# ------------------------------------------------------------------------------------------------
WARMUP_STEPS = 5  # the first includes building the network and the first oneDNN kernel choices


class StepClock:
    """Times a case's own iterations; with a baton, hands the machine to the next case of its group
    every ``per_turn`` iterations and stops its clock while it waits for its turn again.

    Baton protocol on two pipe descriptors: the child writes b"r" when its imports are done and
    b"d" after each turn, and runs only after reading b"g" from the parent (which goes round the
    group's cases in turn). Without a baton (``--case`` by hand) the clock just runs.
    """

    def __init__(self, baton: str | None, per_turn: int) -> None:
        self.fds = tuple(int(fd) for fd in baton.split(",")) if baton else None
        self.per_turn, self.steps, self.waited = per_turn, 0, 0.0
        self.ticks: list[float] = []
        if self.fds:
            os.write(self.fds[1], b"r")
            self._wait()
        self.ticks.append(self.now())

    def now(self) -> float:
        """Seconds this case has run, its waits left out."""
        return time.perf_counter() - self.waited

    def _wait(self) -> None:
        assert self.fds is not None
        t = time.perf_counter()
        if os.read(self.fds[0], 1) != b"g":
            raise SystemExit("bench parent went away")
        self.waited += time.perf_counter() - t

    def step(self) -> None:
        """Call once per iteration, right after it."""
        self.ticks.append(self.now())
        self.steps += 1
        if self.fds and self.steps % self.per_turn == 0:
            os.write(self.fds[1], b"d")
            self._wait()

    def stats(self) -> dict[str, Any]:
        """images/s of the mean and of the median iteration after warm-up: on a shared machine the
        median shrugs off bursts of other load that the mean absorbs."""
        steps = np.diff(np.asarray(self.ticks))[WARMUP_STEPS:]
        return {
            "images_per_second": BATCH / float(np.mean(steps)),
            "median_images_per_second": BATCH / float(np.median(steps)),
            "images": self.steps * BATCH,
            "step_s": [round(float(t), 6) for t in steps],
        }


class TimingReporter:
    """A RecordingReporter whose should_stop() (called once per iteration) ticks a StepClock."""

    def __init__(self, clock: StepClock) -> None:
        from kiln.reporting import RecordingReporter

        self.inner, self.clock = RecordingReporter(), clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def should_stop(self) -> bool:
        self.clock.step()
        return False


def case_kiln(dataset: Any, clock: StepClock, network: str, images: int, in_memory: bool) -> dict[str, Any]:
    from kiln.training.config import TrainConfig
    from kiln.training.loop import train

    config = TrainConfig(
        **network_config(network),
        train_epochs=images / dataset.count("train"),
        batch_size=BATCH,
        solver_type="SGD",
        learning_rate=0.01,
        lr_policy="fixed",
        val_interval=0,
        snapshot_interval=0,
        random_seed=0,
        extra={"data_in_memory": in_memory},
    )
    with tempfile.TemporaryDirectory() as out:
        summary = train(config, dataset, Path(out), TimingReporter(clock))
    assert summary["iterations"] == clock.steps
    return clock.stats()


def case_plain(dataset: Any, clock: StepClock, network: str, images: int) -> dict[str, Any]:
    """The best plain loop we know on this machine; no reporting, no snapshots, no mean.

    ``network`` is a registered Python class ("lenet-v0", "lenet-75-100"): the plain loop is the
    hand-written baseline, one param group, no network text."""
    import torch.nn.functional as F

    from kiln.networks.registry import create_network

    torch.manual_seed(0)
    x_all = torch.from_numpy(np.array(dataset.images("train")))  # uint8 N,H,W,C in RAM
    y_all = torch.from_numpy(np.asarray(dataset.targets("train"), dtype=np.int64))
    model = create_network(network, 10, 1, 28, 28).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    steps = -(-images // BATCH)
    perm = torch.randperm(len(y_all))
    for i in range(steps):
        idx = perm[(i * BATCH) % len(perm) :][:BATCH]
        x = x_all[idx].permute(0, 3, 1, 2).float()  # channels_last float
        loss = F.cross_entropy(model(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        clock.step()
    return clock.stats()


def case_accuracy(dataset: Any, recipe: dict[str, Any]) -> dict[str, Any]:
    from kiln.reporting import RecordingReporter
    from kiln.training.config import TrainConfig
    from kiln.training.loop import train

    reporter = RecordingReporter()
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        summary = train(TrainConfig(**recipe), dataset, Path(out), reporter)
        wall = time.perf_counter() - t
    vals = [(e, v["accuracy"]) for e, v, phase in reporter.rows if phase == "val"]
    return {
        "wall_s": wall,
        "test_accuracy": summary["final"]["val_accuracy"],
        "images_per_second": summary["images_per_second"],
        "val_curve": vals,
    }


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would include the parent's from before exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(args: argparse.Namespace) -> None:
    """Child process: run one case, print one JSON line with its own peak RSS."""
    register_variants()
    torch.set_flush_denormal(True)
    dataset = mnist_dataset(Path(args.work))
    spec = json.loads(args.case)
    kind = spec.pop("kind")
    if args.profile and kind == "kiln":
        profile_kiln(dataset, spec["network"])
        return
    if kind == "accuracy":
        result = case_accuracy(dataset, **spec)
    else:
        clock = StepClock(args.baton, args.steps_per_turn)  # waits for the first turn
        result = {"kiln": case_kiln, "plain": case_plain}[kind](dataset, clock, **spec)
    result["peak_rss_mb"] = peak_rss_mb()
    print("RESULT " + json.dumps(result), flush=True)


def profile_kiln(dataset: Any, network: str) -> None:
    """Where kiln's training step spends its time (torch.profiler, 20 iterations after warm-up)."""
    from torch.profiler import profile

    from kiln.reporting import RecordingReporter
    from kiln.training.config import TrainConfig
    from kiln.training.loop import train

    class Profiled(RecordingReporter):
        def __init__(self) -> None:
            super().__init__()
            self.calls, self.prof = 0, profile()

        def should_stop(self) -> bool:  # called once per iteration
            self.calls += 1
            if self.calls == 10:
                self.prof.__enter__()
            if self.calls == 30:
                self.prof.__exit__(None, None, None)
                print(self.prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
            return False

    config = TrainConfig(
        **network_config(network),
        train_epochs=40 * BATCH / dataset.count("train"),
        batch_size=BATCH,
        solver_type="SGD",
        lr_policy="fixed",
        val_interval=0,
        snapshot_interval=0,
    )
    with tempfile.TemporaryDirectory() as out:
        train(config, dataset, Path(out), Profiled())


def spawn(args: argparse.Namespace, case: dict[str, Any]) -> dict[str, Any]:
    """Run one case on its own (the accuracy runs)."""
    cmd = [sys.executable, __file__, "--work", args.work, "--case", json.dumps(case)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"case {case} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def run_interleaved(args: argparse.Namespace, group: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run a group of cases as concurrent processes that take turns: one runs ``--steps-per-turn``
    iterations while the others wait (blocked on a pipe, using no CPU), round and round, so every
    case of the group meets the same load on a shared machine. Returns the results in order."""
    with contextlib.ExitStack() as stack:
        procs, pipes, logs = [], [], []
        for case in group:
            child_r, parent_w = os.pipe()
            parent_r, child_w = os.pipe()
            for fd in (parent_w, parent_r):
                stack.callback(os.close, fd)
            log = stack.enter_context(tempfile.TemporaryFile(mode="w+"))
            cmd = [sys.executable, __file__, "--work", args.work, "--case", json.dumps(case)]
            cmd += ["--baton", f"{child_r},{child_w}", "--steps-per-turn", str(args.steps_per_turn)]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, pass_fds=(child_r, child_w))
            stack.callback(lambda proc=proc: proc.poll() is None and (proc.kill(), proc.wait()))
            os.close(child_r)
            os.close(child_w)
            procs.append(proc)
            pipes.append((parent_w, parent_r))
            logs.append(log)

        def failed(i: int) -> RuntimeError:
            procs[i].wait()
            logs[i].seek(0)
            return RuntimeError(f"case {group[i]} failed:\n{logs[i].read()[-4000:]}")

        for i, (_, read_fd) in enumerate(pipes):  # every case imported and loaded before any runs
            if os.read(read_fd, 1) != b"r":
                raise failed(i)
        running = list(range(len(group)))
        while running:
            for i in list(running):
                write_fd, read_fd = pipes[i]
                os.write(write_fd, b"g")
                if os.read(read_fd, 1) != b"d":  # the case ended: its last turn, snapshot and exit
                    running.remove(i)
                    if procs[i].wait() != 0:
                        raise failed(i)
        results = []
        for i, log in enumerate(logs):
            log.seek(0)
            lines = [line for line in log.read().splitlines() if line.startswith("RESULT ")]
            if not lines:
                raise failed(i)
            results.append(json.loads(lines[-1][7:]))
        return results


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------
# The throughput cases, run per network as one interleaved group. kiln vs plain on one Python class
# measures the loop; kiln on a network text vs kiln (or plain) on the Python class measures the text.
def cases(args: argparse.Namespace) -> list[dict[str, Any]]:
    lenet, variant = args.images, max(args.images // 4, 24 * BATCH)  # 75/100: ~6x the FLOPs per image
    return [
        {"kind": "plain", "network": "lenet-v0", "images": lenet},
        {"kind": "kiln", "network": "lenet-v0", "images": lenet, "in_memory": True},
        {"kind": "kiln", "network": "lenet", "images": lenet, "in_memory": True},
        {"kind": "kiln", "network": "lenet", "images": lenet, "in_memory": False},
        {"kind": "plain", "network": VARIANT, "images": variant},
        {"kind": "kiln", "network": VARIANT, "images": variant, "in_memory": True},
        {"kind": "kiln", "network": f"custom:{VARIANT}", "images": variant, "in_memory": True},
    ]


def case_key(case: dict[str, Any]) -> str:
    return json.dumps(case, sort_keys=True)


# (name, numerator case, denominator case, target): images/s ratios of two cases of the same round
def comparisons(args: argparse.Namespace) -> list[tuple[str, dict[str, Any], dict[str, Any], float | None]]:
    plain, kiln_v0, kiln_text, kiln_memmap, plain_v, kiln_v, kiln_vtext = cases(args)
    return [
        ("LeNet: kiln loop / plain loop, same Python class (lenet-v0)", kiln_v0, plain, None),
        ("LeNet: kiln, network text (lenet) / kiln, Python class (lenet-v0)", kiln_text, kiln_v0, 0.98),
        ("LeNet: kiln, network text (lenet) / plain loop, Python class", kiln_text, plain, None),
        ("LeNet: kiln, network text, data from memmap / data in RAM", kiln_memmap, kiln_text, None),
        ("75/100: kiln loop / plain loop, same Python class", kiln_v, plain_v, None),
        ("75/100: kiln, custom network text / plain loop, Python class", kiln_vtext, plain_v, 0.98),
        ("75/100: kiln, custom network text / kiln, Python class", kiln_vtext, kiln_v, None),
    ]


def paired_ratio(top: list[float], bottom: list[float]) -> float:
    """images/s of ``top`` over ``bottom``: the median over i of bottom's i-th step time over top's.
    Both cases' i-th steps ran in the same turn of the same group, so they met the same load."""
    n = min(len(top), len(bottom))
    return float(np.median(np.asarray(bottom[:n]) / np.asarray(top[:n])))


def throughput(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, float], list[dict[str, Any]]]:
    """Per round, the LeNet cases interleaved (run_interleaved), then the 75/100 cases; odd rounds
    reverse the turn order. Ratios pair two cases of the same round."""
    peaks = [measure_peak()]
    order = cases(args)
    best: dict[str, dict[str, Any]] = {}
    rounds: list[dict[str, list[float]]] = []  # case key -> its step times after warm-up, per round
    for r in range(args.rounds):
        this: dict[str, float] = {}
        for name in ("lenet", VARIANT):
            group = [c for c in order if family(c["network"]) == name]
            group = group if r % 2 == 0 else group[::-1]
            for case, result in zip(group, run_interleaved(args, group)):
                key = case_key(case)
                this[key] = result["step_s"]
                print(
                    f"  round {r + 1}: {case} -> {result['images_per_second']:.0f} img/s "
                    f"(median step {result['median_images_per_second']:.0f}), {result['peak_rss_mb']:.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )
                if key not in best or result["median_images_per_second"] > best[key]["median_images_per_second"]:
                    best[key] = {**case, **result}
        rounds.append(this)
    peaks.append(measure_peak())
    peak = {k: max(p[k] for p in peaks) for k in peaks[0]}
    rows = [best[case_key(case)] for case in order]
    for row in rows:
        row["gflops"] = row["median_images_per_second"] * train_flops(row["network"]) / 1e9
        row["fraction_of_peak"] = row["gflops"] / peak["peak"]
    ratios = []
    for name, top, bottom, target in comparisons(args):
        values = [paired_ratio(rnd[case_key(top)], rnd[case_key(bottom)]) for rnd in rounds]
        ratios.append({"name": name, "values": values, "median": float(np.median(values)), "target": target})
        print(f"  {name}: {' '.join(f'{v:.3f}' for v in values)}", file=sys.stderr, flush=True)
    return rows, peak, ratios


def accuracy(args: argparse.Namespace) -> list[dict[str, Any]]:
    recipes = [{**MNIST_RECIPE, "random_seed": int(seed)} for seed in args.seeds.split(",")]
    if args.sweep:
        recipes += [
            {**MNIST_RECIPE, "batch_size": 64},
            {**MNIST_RECIPE, "batch_size": 256, "learning_rate": 0.003},
            {**MNIST_RECIPE, "train_epochs": 3},
            {**MNIST_RECIPE, "solver_type": "SGD", "learning_rate": 0.05, "lr_policy": "cosine"},
            {**MNIST_RECIPE, "solver_type": "NESTEROV", "learning_rate": 0.05},
            dict(network="lenet", train_epochs=4, random_seed=1),  # DIGITS' defaults
        ]
    out = []
    for recipe in recipes:
        result = spawn(args, {"kind": "accuracy", "recipe": recipe})
        print(f"  {recipe} -> {result['test_accuracy']:.2f} % in {result['wall_s']:.1f} s", file=sys.stderr, flush=True)
        out.append({"recipe": recipe, "network_class": network_class(recipe["network"]), **result})
    return out


def render(
    rows: list[dict[str, Any]],
    peak: dict[str, float] | None,
    acc: list[dict[str, Any]],
    command: str,
    ratios: list[dict[str, Any]] | None = None,
) -> str:
    lines = [
        "## Training",
        "",
        f"Command: `{command}` on {platform.machine()} with {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}. Each table comes from one run. Throughput: the cases of one network "
        "(LeNet, or the 75/100 variant) run as concurrent processes that take turns one iteration at a "
        "time (a waiting case blocks on a pipe and uses no CPU), each timing only its own iterations, so "
        "all of them meet the same load on a shared machine; the table keeps each case's best round, as "
        "other load only slows a case down.",
        "",
    ]
    if rows and peak:
        lines += [
            f"Machine fp32 peak (same run): **{peak['peak']:.0f} GFLOP/s** "
            f"(4096^3 matmul {peak['matmul']:.0f}, 1x1 conv {peak['conv1x1']:.0f}). "
            "FLOPs per training image (forward + backward, no input gradient for conv1): LeNet 13.18 M, "
            f"LeNet with conv1=75, conv2=100 filters (and a ReLU after pool1) "
            f"{train_flops(VARIANT) / 1e6:.2f} M. "
            f'Batch {BATCH}, SGD momentum 0.9. "images/s" is from the mean iteration after {WARMUP_STEPS} of '
            'warm-up, "median step" from the median one, which GFLOP/s use. '
            f"{rows[0]['images']:,} training images per LeNet case, "
            f"{next(r['images'] for r in rows if family(r['network']) == VARIANT):,} per 75/100 case.",
            "",
            "Network classes: *LeNet (Python)* is kiln 0.1's hand-written `kiln.networks.lenet.LeNet`, "
            'registered as "lenet-v0" (old snapshots only); *PrototxtNet (texts/lenet.prototxt)* is what '
            "kiln's standard \"lenet\" runs now, compiled from its network text (param groups from the text's "
            "`lr_mult`: biases at 2x, which changes learning, not speed). The 75/100 variant is the lab's "
            "Customize experiment (conv1 75, conv2 100 filters, one more ReLU after pool1): *LeNet75100* "
            "subclasses the Python LeNet in this bench; the *custom text* is kiln's LeNet text with those "
            'three edits, trained as `network="custom"`. The plain loop always trains a Python class.',
            "",
            "| network | class | loop | images/s | median step, images/s | GFLOP/s | of peak | peak RSS |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            loop = (
                "plain PyTorch"
                if r["kind"] == "plain"
                else ("kiln, data in RAM" if r.get("in_memory") else "kiln, data from memmap")
            )
            lines.append(
                f"| {family(r['network'])} | {network_class(r['network'])} | {loop} | {r['images_per_second']:.0f} | "
                f"{r['median_images_per_second']:.0f} | {r['gflops']:.1f} | "
                f"{100 * r['fraction_of_peak']:.0f} % | {r['peak_rss_mb']:.0f} MB |"
            )
        lines.append("")
    if ratios:
        lines += [
            "Ratios of images/s, two cases of the same group and round: in each round, the median over "
            "i of the two cases' i-th step times (the i-th steps of a group's cases run one right after "
            "the other, so each pair met the same load); then the median over the "
            f"{len(ratios[0]['values'])} rounds, the spread (lowest - highest) and every round's value.",
            "",
            "| comparison | ratio (median) | spread | per round | target |",
            "|---|---:|---:|---|---|",
        ]
        for q in ratios:
            values, target = q["values"], q["target"]
            verdict = "" if target is None else f">= {target:.2f}x: **{'met' if q['median'] >= target else 'missed'}**"
            lines.append(
                f"| {q['name']} | **{q['median']:.3f}x** | {min(values):.3f} - {max(values):.3f} | "
                f"{', '.join(f'{v:.3f}' for v in values)} | {verdict} |"
            )
        lines.append("")
    if acc:
        lines += [
            "Time to accuracy: full MNIST (60,000 train; the 10,000 test images are the val split, "
            f"so val accuracy is test accuracy), LeNet, network class {' / '.join(sorted({a['network_class'] for a in acc}))}; "
            "wall time of the whole `train()` call "
            "(model build, data load, training, a validation and a snapshot per epoch).",
            "",
            "| recipe | seed | test accuracy by epoch | final | wall | images/s |",
            "|---|---:|---|---:|---:|---:|",
        ]
        for a in acc:
            r = a["recipe"]
            text = ", ".join(
                f"{k}={v}"
                for k, v in r.items()
                if k not in ("network", "random_seed", "val_interval", "snapshot_interval")
            )
            curve = " / ".join(f"{v:.2f}" for _, v in a["val_curve"])
            lines.append(
                f"| {text} | {r.get('random_seed')} | {curve} | **{a['test_accuracy']:.2f} %** | "
                f"{a['wall_s']:.1f} s | {a['images_per_second']:.0f} |"
            )
        lines.append("")
    lines += NOTES
    return "\n".join(lines)


# What the numbers mean; written from `--profile`, `--sweep` and the experiments they list.
NOTES = [
    "Notes:",
    "",
    "- **Network text vs Python class (issue 8; measured 2026-11-28, 1-minute load 1-2 on the 2 cores).** "
    "Targets: kiln training the text-built LeNet at >= 0.98x of kiln training the Python LeNet, and the "
    "lab's 75/100 variant as a custom text at >= 0.98x of the plain loop on the Python 75/100 class. "
    "LeNet: **met**, 0.993x (0.953-1.001) in the run above. 75/100: **missed as measured**, 0.870x "
    "(0.863-0.920); an earlier run the same day under heavier load gave 0.957x (0.888-0.975). The "
    "shortfall is not the network text. In the same rounds kiln on the *Python* 75/100 class measured "
    "0.878x, 1.003x and 0.870x of plain, and the text measured 0.885-0.999x of kiln on the class. In one "
    "process, alternating step by step, PrototxtNet and the Python classes take the same time (forward, "
    "forward + backward, full SGD step; LeNet and 75/100; batch 256, and batch 1 where a fixed per-layer "
    "cost would show: forward 0.47 vs 0.48 ms), so `PrototxtNet._run`'s Python loop over the layers costs "
    "nothing measurable. Both get the same optimizer (two param groups of four tensors, fused SGD). "
    "kiln's own work per 75/100 step adds about 0.1 ms of ~340 ms: batch fetch +0.06 ms, uint8 to float, "
    "mean and augmentation 0.07 ms, scheduler 0.03 ms, while its fused SGD is 0.1 ms faster than the "
    "plain loop's per-parameter SGD; a mean-subtracted input trains as fast as a raw one (0.995x). What "
    "limits the 75/100 comparison is the spread between *processes*: two processes running the identical "
    "75/100 case, interleaved step by step, differed by up to 9 % (0.907x, 0.944x), and kiln beat plain "
    "by 4-5 % in one such round. So one process per case per round cannot resolve 2 % on 75/100 here. "
    "A likely source: a 75/100 step takes ~13,200 minor page faults (conv1's 44 MB output and its "
    "gradient are above glibc's 32 MB mmap ceiling, so they are mapped and unmapped every step; LeNet "
    "takes none). With `MALLOC_MMAP_THRESHOLD_` raised, the faults go to 0 and the fastest step drops "
    "from 372 to 340 ms; one A/A round with it had every pair within 2.2 % (a round under heavier load "
    "did not).",
    "- **kiln vs plain** (same Python class). The loop feeds the network straight from the packed uint8 "
    "array (one fancy index, one uint8->float conversion, channels_last). Paired by step it measured "
    "1.017x (0.972-1.028) for LeNet and 0.878x (0.870-1.003) for 75/100, where the A/A spread above "
    "applies. The 0.66x for LeNet measured earlier the same day (one process after another; a 30 ms "
    "fixed cost per step suspected) did not reproduce with interleaved steps, and kiln's extra work per "
    "step measures about 0.1 ms in isolation. Earlier full runs of this bench (one process after "
    "another) gave 1.02x and 0.96x for LeNet, 0.96x and 0.97x for 75/100. Data from the memory map vs "
    "RAM: 1.006x (0.974-1.048); the memory map's read-ahead thread can work while other cases have "
    "their turn, which flatters it a little. kiln holds a split in RAM when it needs at most a quarter "
    "of the free memory (MNIST train: 47 MB).",
    "- **Fraction of peak.** `python bench/bench_train.py --profile` (LeNet, batch 256): about 64 % of a "
    "step is oneDNN convolution (backward 44 %, forward 20 %), 10 % max pooling, 8 % the two "
    "fully-connected layers, 3-5 % tensor copies and zero fills inside those ops, 2-5 % the fused "
    "optimizer. LeNet's 20- and 50-channel convolutions on 24x24 and 8x8 maps fill AVX-512's 16-float "
    "vectors poorly and make tiny GEMMs, so they run at about a third of the matmul peak; the 75/100 "
    "variant, with 6x the FLOPs per image, gets close to half of it. The > 50 % aim for LeNet is not "
    "reached: what is left to win is in the convolution kernels, not in the loop. Tried and rejected on "
    "this machine: oneDNN off (3x slower), NCHW instead of channels_last (0.85x), batch 512 (+5 %), "
    "two single-thread torchrun processes (no gain: the gloo all-reduce eats it), torch.compile (loses "
    "to eager channels_last, per the project's earlier measurements), fused optimizers are fastest "
    "(SGD 0.7 ms, Adam 1.0 ms per LeNet step vs 1.1 / 4.3 ms for the per-parameter loop).",
    "- **Shared machine.** When other processes compete for the two cores, OpenMP parallel regions "
    "slow down by up to 3x, and more for LeNet's small operations (5x in runs at load 3-4). Interleaving "
    "the cases step by step gives them the same load, and pairing their steps removes most of it from "
    "the ratios, but not the spread between processes (above). The table's absolute speeds are the "
    "best of the rounds; LeNet ran at 3,200-3,400 images/s here against about 3,700 on a quiet machine.",
    "- **Recommended MNIST recipe** (LeNet): batch 128, ADAM, learning rate 0.002, cosine policy, "
    "3 epochs, mean image, validation and snapshot every epoch. Over seeds 1-5 it reached 99.35, "
    "99.28, 99.28, 99.20 and 99.16 % test accuracy (mean 99.25 %). Its wall time depends on what else "
    "runs on the two cores: 51-64 s in the table above, 60.4 s in another quiet run (54.5 s of "
    "training at 3,300 images/s, 2.6 s of start-up, of which ~1.5 s is PyTorch importing its compiler "
    "at the first optimizer, and 3 x 1.2 s of validation and snapshots), 72-105 s in runs while other "
    "jobs shared the machine. So the <= 60 s target is met on a quiet machine most of the time (not "
    "always: the margin is ~5 %), and >= 99.2 % by 4 seeds in 5. Candidates that lost in the sweep "
    "(3 epochs, seed 1 unless noted): ADAM lr 0.001 99.24 %; batch 64 99.24 % and slower; batch 256 "
    "(lr 0.002-0.003) 99.18-99.26 % over three seeds; NESTEROV lr 0.05 99.29 % but diverged with "
    "seed 2; SGD lr 0.05 99.16 %; ADAMW decay 0.05 99.27 %; 4 epochs at batch 256 no better and over "
    "the time budget. The time-to-accuracy table above was measured with the Python LeNet, before "
    "kiln's LeNet became a network text (whose biases learn at 2x the base rate, Caffe's `lr_mult`); "
    "`--only accuracy` measures the text.",
    "",
]


def write_docs(section: str) -> Path:
    return replace_section("Training", section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "kiln-bench"),
        help="cache for the MNIST folders and packed dataset",
    )
    parser.add_argument("--only", choices=("throughput", "accuracy"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=60000, help="training images per LeNet case")
    parser.add_argument("--seeds", default="1,2,3", help="random seeds of the recommended recipe's runs")
    parser.add_argument("--sweep", action="store_true", help="also time other recipes")
    parser.add_argument(
        "--profile",
        nargs="?",
        const="lenet",
        metavar="NETWORK",
        help=f"profile kiln's step on NETWORK (default lenet; lenet-v0, {VARIANT}, custom:{VARIANT}) and exit",
    )
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--render", action="store_true", help="only print (and with --write-docs write) the last runs' cached results"
    )
    parser.add_argument(
        "--steps-per-turn", type=int, default=1, help="iterations a case runs before the next case of its group"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--baton", help=argparse.SUPPRESS)
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.case:
        run_case(args)
        return
    if args.profile:
        args.case = json.dumps({"kind": "kiln", "network": args.profile})
        run_case(args)
        return
    register_variants()
    mnist_dataset(Path(args.work))  # build the cache once, before timing
    # a partial run (--only) keeps the other part's results from the last run, with its command
    cache = Path(args.work) / "bench_train_results.json"
    results = json.loads(cache.read_text()) if cache.exists() and args.only else {}
    command = ("python bench/bench_train.py " + " ".join(sys.argv[1:])).strip()
    if args.render:
        results = json.loads(cache.read_text())
    elif args.only != "accuracy":
        rows, peak, ratios = throughput(args)
        results["throughput"] = {"rows": rows, "peak": peak, "ratios": ratios, "command": command}
    if args.only != "throughput" and not args.render:
        results["accuracy"] = {"rows": accuracy(args), "command": command}
    atomic_write_text(cache, json.dumps(results, default=str))
    tp, acc = results.get("throughput", {}), results.get("accuracy", {})
    commands = sorted({part["command"] for part in (tp, acc) if part})
    section = render(tp.get("rows", []), tp.get("peak"), acc.get("rows", []), "`, `".join(commands), tp.get("ratios"))
    print(section)
    print(json.dumps(results, default=str), file=sys.stderr)
    if args.write_docs:
        print(f"wrote {write_docs(section)}", file=sys.stderr)


if __name__ == "__main__":
    main()
