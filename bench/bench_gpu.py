"""GPU training throughput: kiln's loop against a plain PyTorch loop, on the same card, in the same run.

    python bench/bench_gpu.py               # on a GPU machine, about 3-6 minutes (stops itself at 7.5)
    python bench/bench_gpu.py --cpu-smoke   # tiny settings on the CPU: checks that the script works

Cases, each run by kiln's ``train()`` and by a plain loop (same network, batch, data, solver, crop):
  lenet    MNIST-like synthetic data: 60,000 grey 28x28 images, 10 classes, batch 256
  alexnet  a synthetic 256x256 colour dataset: 6,400 images, 100 classes, batch 128, crop 227 + mirror
each in fp32 (TF32 matmuls and cuDNN autotuning in both loops, as kiln sets them) and in mixed
precision (kiln's precision=auto: bf16 where the GPU has it, else fp16 with a GradScaler; the plain
loop the same). With several GPUs, kiln on all of them against one (a torchrun group each, batch
per process, so all GPUs see N x the images per step).

What is measured: images/s over the steady part of each run, from its first training report
(about 1/8 epoch in, synced) to its end (synced); the plain loop is timed over the same iterations.
GPU utilisation is NVML's, sampled every 0.1 s over that window; peak memory is torch's. A markdown
table goes to stdout and, with $OUT set, JSON to $OUT/bench_gpu.json (and --json PATH).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kiln.datasets import packed_format as fmt  # noqa: E402
from kiln.datasets.reader import PackedDataset  # noqa: E402
from kiln.hardware import gpu_stats, nvml_gpus  # noqa: E402
from kiln.reporting import RecordingReporter  # noqa: E402

BUDGET_S = 450.0  # the whole run; later cases are skipped past it


@dataclass(frozen=True)
class Spec:
    name: str
    network: str
    images: int
    size: int  # square images
    channels: int
    classes: int
    batch: int
    epochs: float


GPU_SPECS = [
    Spec("lenet", "lenet", 60_000, 28, 1, 10, 256, 2),
    Spec("alexnet", "alexnet", 6_400, 256, 3, 100, 128, 2),
]
SMOKE_SPECS = [
    Spec("lenet", "lenet", 512, 28, 1, 10, 32, 1),
    Spec("alexnet", "alexnet", 16, 256, 3, 10, 4, 1),
]


# -- data -------------------------------------------------------------------------------------------
def make_dataset(spec: Spec, folder: Path) -> PackedDataset:
    """A packed raw dataset (kiln's format) of class-dependent noise: a brighter band per class."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, spec.classes, spec.images)
    shape = (spec.images, spec.size, spec.size, spec.channels)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.memmap(fmt.PackedFiles(folder).raw("train"), dtype=np.uint8, mode="w+", shape=shape)
    band = max(1, spec.size // spec.classes)
    chunk = 512
    for start in range(0, spec.images, chunk):
        y = labels[start : start + chunk]
        block = rng.integers(0, 96, (len(y), spec.size, spec.size, spec.channels), dtype=np.uint8)
        for i, c in enumerate(y):
            row = (int(c) * band) % spec.size
            block[i, row : row + band] += 120
        pixels[start : start + len(y)] = block
    pixels.flush()
    mean = _mean(pixels)
    fmt.write_split_arrays(
        folder,
        "train",
        {"labels": labels, "inverted": np.zeros(spec.images, bool), "source": np.arange(spec.images)},
    )
    fmt.write_mean(folder, mean.astype(np.float32))
    names = [f"class{i}" for i in range(spec.classes)]
    fmt.write_lists(folder, names, {"train": [(f"synthetic/{i}.png", int(c)) for i, c in enumerate(labels)]})
    fmt.write_manifest(
        folder,
        {
            "version": fmt.MANIFEST_VERSION,
            "labels": names,
            "image": {"width": spec.size, "height": spec.size, "channels": spec.channels, "resize_mode": "squash"},
            "splits": {"train": {"count": spec.images, "storage": "raw"}},
            "mean_pixel": [float(v) for v in mean.reshape(-1, spec.channels).mean(axis=0)],
            "errors": [],
            "error_count": 0,
        },
    )
    return PackedDataset(folder)


def _mean(pixels: np.ndarray) -> np.ndarray:
    total = np.zeros(pixels.shape[1:], np.float64)
    for start in range(0, len(pixels), 4096):
        total += pixels[start : start + 4096].sum(axis=0, dtype=np.float64)
    return total / len(pixels)


# -- measuring --------------------------------------------------------------------------------------
class Utilisation:
    """Mean NVML utilisation of some GPUs while it runs (None without NVML)."""

    def __init__(self, nvml_ids: list[int]) -> None:
        self.ids, self.samples = nvml_ids, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            readings = [g.get("utilization") for g in gpu_stats(self.ids)]
            if readings and all(r is not None for r in readings):
                self.samples.append(float(np.mean(readings)))

    def start(self) -> None:
        if self.ids:
            self._thread.start()

    def stop(self) -> float | None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return round(float(np.mean(self.samples)), 1) if self.samples else None


class TimedReporter(RecordingReporter):
    """Times kiln's training reports (each follows a device sync) and samples utilisation from the first."""

    def __init__(self, util: Utilisation) -> None:
        super().__init__()
        self.util, self.reports = util, []

    def metrics(self, epoch: float, values: dict[str, float], phase: str = "train") -> None:
        super().metrics(epoch, values, phase)
        if phase == "train":
            if not self.reports:
                self.util.start()
            self.reports.append((time.perf_counter(), epoch))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    if device.type != "cuda" or precision == "fp32":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def kiln_config(spec: Spec, precision: str, device: str, epochs: float | None = None) -> dict[str, Any]:
    return {
        "network": spec.network,
        "train_epochs": epochs or spec.epochs,
        "batch_size": spec.batch,
        "solver_type": "SGD",
        "learning_rate": 0.01,
        "lr_policy": "fixed",
        "val_interval": 0,
        "snapshot_interval": 0,
        "random_seed": 0,
        "precision": "auto" if precision == "mixed" else "fp32",
        "device": device,
    }


def case_kiln(
    spec: Spec, dataset: PackedDataset, precision: str, device: torch.device, nvml: list[int]
) -> dict[str, Any]:
    from kiln.training.config import TrainConfig
    from kiln.training.loop import train

    util = Utilisation(nvml)
    reporter = TimedReporter(util)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    config = TrainConfig.from_dict(kiln_config(spec, precision, str(device)))
    with tempfile.TemporaryDirectory() as out:
        summary = train(config, dataset, Path(out), reporter)
    busy = util.stop()
    (t0, e0), (t1, e1) = reporter.reports[0], reporter.reports[-1]
    per_epoch = summary["iterations_per_epoch"] * summary["batch_size"] * summary["world_size"]
    first_iter = round(e0 * summary["iterations_per_epoch"])
    return {
        "images_per_second": round((e1 - e0) * per_epoch / (t1 - t0), 1),
        "kiln_summary_images_per_second": summary["images_per_second"],
        "iterations": summary["iterations"],
        "timed_from_iteration": first_iter,
        "gpu_utilisation": busy,
        "peak_memory_gb": _peak(device),
        "device_log": next((ln for ln in reporter.lines if ln.startswith("Device")), ""),
    }


def case_plain(
    spec: Spec, dataset: PackedDataset, precision: str, device: torch.device, nvml: list[int], iters: int, warm: int
) -> dict[str, Any]:
    """A good plain loop: the uint8 array pinned in RAM, a random batch per step copied asynchronously,
    crop (one offset per batch) and mirror on the device, mean image, SGD, autocast + GradScaler."""
    from kiln.networks.definition import NetworkDef

    network = NetworkDef(spec.network)
    crop = network.default_crop() or spec.size
    torch.manual_seed(0)
    model = network.build(spec.classes, (spec.channels, crop, crop)).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    dtype = amp_dtype(device, precision)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    x_all = torch.from_numpy(np.asarray(dataset.images("train")))
    if device.type == "cuda":
        x_all = x_all.pin_memory()
    y_all = torch.from_numpy(np.asarray(dataset.targets("train"), dtype=np.int64))
    mean = torch.from_numpy(dataset.mean_image()).permute(2, 0, 1)[None].to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    util = Utilisation(nvml)
    n, t0 = len(y_all), 0.0
    perm = torch.randperm(n)
    for step in range(iters):
        if step == warm:
            sync(device)
            t0 = time.perf_counter()
            util.start()
        start = (step * spec.batch) % max(1, n - spec.batch + 1)
        idx = perm[start : start + spec.batch]
        xb = x_all[idx].to(device, non_blocking=True).permute(0, 3, 1, 2).float()
        yb = y_all[idx].to(device, non_blocking=True)
        oy, ox = np.random.randint(0, spec.size - crop + 1, 2)
        xb = (xb - mean)[:, :, oy : oy + crop, ox : ox + crop]
        if network.mirror():
            flip = torch.rand(len(idx), device=device) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
        xb = xb.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(xb).float(), yb)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    sync(device)
    seconds = time.perf_counter() - t0
    return {
        "images_per_second": round((iters - warm) * spec.batch / seconds, 1),
        "iterations": iters,
        "timed_from_iteration": warm,
        "gpu_utilisation": util.stop(),
        "peak_memory_gb": _peak(device),
    }


def _peak(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 1e9, 2) if device.type == "cuda" else None


def case_group(
    spec: Spec, dataset: PackedDataset, precision: str, nproc: int, cuda: bool, nvml: list[int], min_steps: int = 48
) -> dict[str, Any]:
    """kiln on `nproc` GPUs (or CPU processes): a torchrun group of `python -m kiln.training`, timed
    from its first training report line to its last, as they arrive."""
    per_rank = math.ceil(spec.images / nproc / spec.batch)
    epochs = max(spec.epochs, math.ceil(min_steps / per_rank))  # enough steps per rank to time
    config = kiln_config(spec, precision, "cuda" if cuda else "cpu", epochs)
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "kiln.jobs.group", "torchrun", "--standalone", f"--nproc-per-node={nproc}"]
        cmd += ["-m", "kiln.jobs.group", "train", "--dataset", str(dataset.dir), "--out", out]
        cmd += ["--config", json.dumps(config)]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if not cuda:
            env["CUDA_VISIBLE_DEVICES"] = ""
        util = Utilisation(nvml)
        reports: list[tuple[float, float]] = []
        lines: list[str] = []
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("[train] epoch "):
                if not reports:
                    util.start()
                reports.append((time.perf_counter(), float(line.split()[2].rstrip(":"))))
        proc.wait()
    busy = util.stop()
    if proc.returncode != 0 or len(reports) < 2:
        raise RuntimeError("torchrun group failed:\n" + "\n".join(lines[-30:]))
    summary = json.loads(next(ln for ln in reversed(lines) if ln.startswith("{")))
    (t0, e0), (t1, e1) = reports[0], reports[-1]
    per_epoch = summary["iterations_per_epoch"] * summary["batch_size"] * summary["world_size"]
    return {
        "images_per_second": round((e1 - e0) * per_epoch / (t1 - t0), 1),
        "kiln_summary_images_per_second": summary["images_per_second"],
        "iterations": summary["iterations"],
        "world_size": summary["world_size"],
        "gpu_utilisation": busy,
    }


# -- the run ----------------------------------------------------------------------------------------
def machine(device: torch.device) -> dict[str, Any]:
    gpus = nvml_gpus()
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "gpus": [g.name for g in gpus],
        "gpu_count": torch.cuda.device_count() if device.type == "cuda" else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "bf16": bool(device.type == "cuda" and torch.cuda.is_bf16_supported()),
        "cpus": os.cpu_count(),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    cuda = torch.cuda.is_available() and not args.cpu_smoke
    if not cuda and not args.cpu_smoke:
        raise SystemExit("no CUDA GPU here: run with --cpu-smoke to check the script on the CPU")
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:  # the same math in both loops: what kiln's Hardware.setup sets
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    nvml_first = [g.nvml for g in nvml_gpus()[:1]] if cuda else []
    nvml_all = [g.nvml for g in nvml_gpus()] if cuda else []
    specs = SMOKE_SPECS if args.cpu_smoke else GPU_SPECS
    result: dict[str, Any] = {"machine": machine(device), "cpu_smoke": args.cpu_smoke, "cases": [], "skipped": []}
    with tempfile.TemporaryDirectory(prefix="kiln-bench-gpu-") as work:
        for spec in specs:
            print(
                f"building {spec.name}: {spec.images} x {spec.size}x{spec.size}x{spec.channels} ...",
                file=sys.stderr,
                flush=True,
            )
            dataset = make_dataset(spec, Path(work) / spec.name)
            for precision in ("fp32", "mixed"):
                if time.monotonic() - started > BUDGET_S:
                    result["skipped"].append(f"{spec.name} {precision}: over the time budget")
                    continue
                k = case_kiln(spec, dataset, precision, device, nvml_first)
                p = case_plain(spec, dataset, precision, device, nvml_first, k["iterations"], k["timed_from_iteration"])
                k["vs_plain"] = round(k["images_per_second"] / p["images_per_second"], 3)
                for loop, values in (("kiln", k), ("plain", p)):
                    row = {"network": spec.name, "precision": precision, "loop": loop, "gpus": 1 if cuda else 0}
                    result["cases"].append({**row, "batch": spec.batch, **values})
                    print(json.dumps(result["cases"][-1]), file=sys.stderr, flush=True)
                if cuda:
                    torch.cuda.empty_cache()
            scaling = (torch.cuda.device_count() if cuda else 2) if spec.name == ("alexnet" if cuda else "lenet") else 0
            if scaling > 1:
                for precision in ("fp32", "mixed") if cuda else ("fp32",):
                    if time.monotonic() - started > BUDGET_S:
                        result["skipped"].append(f"{spec.name} {precision} x{scaling}: over the time budget")
                        continue
                    steps = 48 if cuda else 16
                    one = case_group(spec, dataset, precision, 1, cuda, nvml_first, steps)
                    many = case_group(spec, dataset, precision, scaling, cuda, nvml_all, steps)
                    many["vs_one"] = round(many["images_per_second"] / one["images_per_second"], 3)
                    for n, values in ((1, one), (scaling, many)):
                        row = {"network": spec.name, "precision": precision, "loop": "kiln torchrun", "gpus": n}
                        result["cases"].append({**row, "batch": spec.batch, **values})
                        print(json.dumps(result["cases"][-1]), file=sys.stderr, flush=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def table(result: dict[str, Any]) -> str:
    m = result["machine"]
    what = "CPU smoke run (tiny settings; the numbers mean nothing)" if result["cpu_smoke"] else m["device"]
    lines = [
        f"**{what}** — torch {m['torch']}, CUDA {m['cuda']}, bf16 {'yes' if m['bf16'] else 'no'}, "
        f"{m['gpu_count']} GPU(s), {m['cpus']} CPUs; {result['seconds']} s",
        "",
        "| Network | Precision | Loop | GPUs (processes) | Batch each | images/s | vs plain | vs 1 | GPU util % | Peak GB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in result["cases"]:
        lines.append(
            f"| {c['network']} | {c['precision']} | {c['loop']} | {c['gpus']} | {c['batch']} | "
            f"{c['images_per_second']:,.0f} | {c.get('vs_plain', '')} | {c.get('vs_one', '')} | "
            f"{'' if c.get('gpu_utilisation') is None else c['gpu_utilisation']} | "
            f"{'' if c.get('peak_memory_gb') is None else c['peak_memory_gb']} |"
        )
    lines += [f"- skipped: {s}" for s in result["skipped"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny settings on the CPU (no GPU needed)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    result = run(args)
    print(table(result))
    targets = [args.json] if args.json else []
    if os.environ.get("OUT"):
        targets.append(Path(os.environ["OUT"]) / "bench_gpu.json")
    for path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
