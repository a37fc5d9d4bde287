"""Training speed and time-to-accuracy on MNIST, against baselines measured in the same run.

    python bench/bench_train.py                 # throughput + time-to-accuracy, prints a report
    python bench/bench_train.py --write-docs    # ... and rewrites the "Training" section of docs/benchmarks.md
    python bench/bench_train.py --only throughput|accuracy [--rounds 3] [--profile]
    python bench/bench_train.py --sweep         # time-to-accuracy of several candidate recipes

Throughput (images per second over the same number of MNIST training images, batch 256, SGD):
  (a) kiln: kiln.training.loop.train() called exactly as a model job calls it (RecordingReporter),
      data held in RAM and data read from the memory map;
  (b) plain: the best hand-written PyTorch loop on the same network object type: the split as
      one uint8 tensor in RAM, channels_last, fancy-indexed batches, SGD;
  (c) the machine's fp32 peak (fastest of a 4096^3 matmul and a 1x1 convolution), times the
      network's training FLOPs per image, gives each loop's fraction of peak.
Each case runs in its own process (so peak RSS is its own) and the cases alternate for
`--rounds` rounds; the best round counts, as other load on the machine only slows things down.

Time-to-accuracy: the full MNIST (60,000 train, 10,000 test used as the val split), LeNet, the
recipe kiln offers by default for it; wall time of the whole train() call, and test accuracy.
"""

from __future__ import annotations

import argparse
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
def register_variants() -> None:
    """LeNet with conv1=75 and conv2=100 filters: the lab's "Customize" experiment."""
    from torch import nn

    from kiln.networks.caffe_conventions import fill_
    from kiln.networks.lenet import LeNet
    from kiln.networks.registry import NetworkInfo, list_networks, register_builder

    if any(info.name == "lenet-75-100" for info in list_networks()):
        return

    def build(num_classes: int, in_channels: int, height: int, width: int) -> nn.Module:
        net = LeNet(num_classes, in_channels, height, width)
        spatial = net.ip1.in_features // net.conv2.out_channels
        net.conv1 = nn.Conv2d(in_channels, 75, 5)
        net.conv2 = nn.Conv2d(75, 100, 5)
        net.ip1 = nn.Linear(100 * spatial, 500)
        for layer in (net.conv1, net.conv2, net.ip1):
            fill_(layer, "xavier")
        return net

    register_builder(
        "lenet-75-100",
        build,
        NetworkInfo(
            name="lenet-75-100", label="LeNet 75/100", intended_size=(28, 28, 1), default_batch=64, default_val_batch=32
        ),
    )


def train_flops(network: str) -> float:
    """FLOPs per training image (forward + backward; conv1 needs no input gradient), 28x28 grey."""
    c1, c2 = (75, 100) if network == "lenet-75-100" else (20, 50)
    conv1, conv2 = 24 * 24 * c1 * 25, 8 * 8 * c2 * c1 * 25
    fc = c2 * 16 * 500 + 500 * 10
    macs = conv1 + conv2 + fc
    return 2.0 * (3 * macs - conv1)  # lenet: 13.18 MFLOP


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
        from kiln.datasets.spec import DatasetSpec
        from kiln.datasets.stdsets import SourceMissing, write_mnist
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
    spec = DatasetSpec(
        folder_train=str(work / "mnist" / "train"),
        has_val_folder=True,
        folder_val=str(work / "mnist" / "test"),
        folder_pct_val=0,
        resize_channels=1,
        resize_width=28,
        resize_height=28,
    )
    build_dataset(spec, packed, RecordingReporter(), workers=os.cpu_count() or 2)
    return PackedDataset(packed)


# ------------------------------------------------------------------------------------------------
# The cases, each run in a child process
# ------------------------------------------------------------------------------------------------
def step_stats(ticks: list[float], images: int, seconds: float) -> dict[str, Any]:
    """Overall images/s, and images/s of the median iteration after warm-up: on a shared machine
    the median shrugs off bursts of other load that the overall rate absorbs."""
    steps = np.diff(np.asarray(ticks))[5:]
    return {
        "images_per_second": images / seconds,
        "median_images_per_second": BATCH / float(np.median(steps)),
        "images": images,
        "train_s": seconds,
    }


class TimingReporter:
    """A RecordingReporter that notes the time of every should_stop() call: once per iteration."""

    def __init__(self) -> None:
        from kiln.reporting import RecordingReporter

        self.inner, self.ticks = RecordingReporter(), []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def should_stop(self) -> bool:
        self.ticks.append(time.perf_counter())
        return False


def case_kiln(dataset: Any, network: str, images: int, in_memory: bool) -> dict[str, Any]:
    from kiln.training.config import TrainConfig
    from kiln.training.loop import train

    config = TrainConfig(
        network=network,
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
    reporter = TimingReporter()
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        summary = train(config, dataset, Path(out), reporter)
        wall = time.perf_counter() - t
    seen = summary["iterations"] * BATCH
    return {**step_stats(reporter.ticks, seen, seen / summary["images_per_second"]), "wall_s": wall}


def case_plain(dataset: Any, network: str, images: int) -> dict[str, Any]:
    """The best plain loop we know on this machine; no reporting, no snapshots, no mean."""
    import torch.nn.functional as F

    from kiln.networks.registry import create_network

    torch.manual_seed(0)
    x_all = torch.from_numpy(np.array(dataset.images("train")))  # uint8 N,H,W,C in RAM
    y_all = torch.from_numpy(np.asarray(dataset.targets("train"), dtype=np.int64))
    model = create_network(network, 10, 1, 28, 28).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    steps = -(-images // BATCH)
    perm = torch.randperm(len(y_all))
    ticks = [time.perf_counter()]
    for i in range(steps):
        idx = perm[(i * BATCH) % len(perm) :][:BATCH]
        x = x_all[idx].permute(0, 3, 1, 2).float()  # channels_last float
        loss = F.cross_entropy(model(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ticks.append(time.perf_counter())
    return step_stats(ticks, steps * BATCH, ticks[-1] - ticks[0])


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
    result = {"kiln": case_kiln, "plain": case_plain, "accuracy": case_accuracy}[kind](dataset, **spec)
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
        network=network,
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
    cmd = [sys.executable, __file__, "--work", args.work, "--case", json.dumps(case)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"case {case} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------
def throughput(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, float]]:
    peaks = [measure_peak()]
    cases = []
    for network, images in (("lenet", args.images), ("lenet-75-100", args.images // 4)):
        cases += [
            {"kind": "plain", "network": network, "images": images},
            {"kind": "kiln", "network": network, "images": images, "in_memory": True},
        ]
        if network == "lenet":
            cases.append({"kind": "kiln", "network": network, "images": images, "in_memory": False})
    best: dict[str, dict[str, Any]] = {}
    for r in range(args.rounds):
        for case in cases:
            result = spawn(args, dict(case))
            key = json.dumps(case, sort_keys=True)
            print(
                f"  round {r + 1}: {case} -> {result['images_per_second']:.0f} img/s "
                f"(median step {result['median_images_per_second']:.0f}), {result['peak_rss_mb']:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
            if key not in best or result["median_images_per_second"] > best[key]["median_images_per_second"]:
                best[key] = {**case, **result}
    peaks.append(measure_peak())
    peak = {k: max(p[k] for p in peaks) for k in peaks[0]}
    rows = list(best.values())
    for row in rows:
        row["gflops"] = row["median_images_per_second"] * train_flops(row["network"]) / 1e9
        row["fraction_of_peak"] = row["gflops"] / peak["peak"]
    return rows, peak


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
        out.append({"recipe": recipe, **result})
    return out


def render(rows: list[dict[str, Any]], peak: dict[str, float] | None, acc: list[dict[str, Any]], command: str) -> str:
    lines = [
        "## Training",
        "",
        f"Command: `{command}` on {platform.machine()} with {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}. Each table comes from one run (the throughput table's baselines "
        "were measured in the same run, each case in its own process, cases alternating, best round "
        "kept: other load on a shared machine only slows a case down).",
        "",
    ]
    if rows and peak:
        lines += [
            f"Machine fp32 peak (same run): **{peak['peak']:.0f} GFLOP/s** "
            f"(4096^3 matmul {peak['matmul']:.0f}, 1x1 conv {peak['conv1x1']:.0f}). "
            "FLOPs per training image (forward + backward, no input gradient for conv1): LeNet 13.18 M, "
            f"LeNet with conv1=75, conv2=100 filters {train_flops('lenet-75-100') / 1e6:.2f} M. "
            f'Batch {BATCH}, SGD momentum 0.9. "images/s" is over the whole run; "median step" is '
            "the median iteration after warm-up, which the ratios and GFLOP/s use.",
            "",
            "| network | loop | images/s | median step, images/s | vs plain | GFLOP/s | of peak | peak RSS |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for network in ("lenet", "lenet-75-100"):
            plain = next(r for r in rows if r["network"] == network and r["kind"] == "plain")
            for r in [x for x in rows if x["network"] == network]:
                name = (
                    "plain PyTorch"
                    if r["kind"] == "plain"
                    else ("kiln, data in RAM" if r.get("in_memory") else "kiln, data from memmap")
                )
                ratio = r["median_images_per_second"] / plain["median_images_per_second"]
                lines.append(
                    f"| {network} | {name} | {r['images_per_second']:.0f} | "
                    f"{r['median_images_per_second']:.0f} | {ratio:.2f}x | {r['gflops']:.1f} | "
                    f"{100 * r['fraction_of_peak']:.0f} % | {r['peak_rss_mb']:.0f} MB |"
                )
        lines.append("")
    if acc:
        lines += [
            "Time to accuracy: full MNIST (60,000 train; the 10,000 test images are the val split, "
            "so val accuracy is test accuracy), LeNet; wall time of the whole `train()` call "
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
    "- **kiln vs plain.** The loop feeds the network straight from the packed uint8 array (one fancy "
    "index, one uint8->float conversion, channels_last); its own work per iteration (batch indexing, "
    "mean subtraction, scheduler, loss bookkeeping, abort check) is 1-2 % of a LeNet step in the "
    "profile. Two full runs of this bench gave kiln/plain = 1.02x and 0.96x for LeNet, 0.96x and 0.97x "
    "for LeNet 75/100: parity within this machine's run-to-run noise (about 5 %), not a demonstrated "
    "win. Data read from the memory map instead of RAM measured 0.87x and 1.00x; kiln holds a split "
    "in RAM when it needs at most a quarter of the free memory (MNIST train: 47 MB).",
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
    "slow down by up to 3x; the best of several rounds is the closest estimate of the machine's own "
    "speed, and a single run can be far slower.",
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
    "the time budget.",
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
    parser.add_argument("--profile", action="store_true", help="profile kiln's LeNet step and exit")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.case:
        run_case(args)
        return
    if args.profile:
        args.case = json.dumps({"kind": "kiln", "network": "lenet"})
        run_case(args)
        return
    register_variants()
    mnist_dataset(Path(args.work))  # build the cache once, before timing
    # a partial run (--only) keeps the other part's results from the last run, with its command
    cache = Path(args.work) / "bench_train_results.json"
    results = json.loads(cache.read_text()) if cache.exists() and args.only else {}
    command = ("python bench/bench_train.py " + " ".join(sys.argv[1:])).strip()
    if args.only != "accuracy":
        rows, peak = throughput(args)
        results["throughput"] = {"rows": rows, "peak": peak, "command": command}
    if args.only != "throughput":
        results["accuracy"] = {"rows": accuracy(args), "command": command}
    atomic_write_text(cache, json.dumps(results, default=str))
    tp, acc = results.get("throughput", {}), results.get("accuracy", {})
    commands = sorted({part["command"] for part in (tp, acc) if part})
    section = render(tp.get("rows", []), tp.get("peak"), acc.get("rows", []), "`, `".join(commands))
    print(section)
    print(json.dumps(results, default=str), file=sys.stderr)
    if args.write_docs:
        print(f"wrote {write_docs(section)}", file=sys.stderr)


if __name__ == "__main__":
    main()
