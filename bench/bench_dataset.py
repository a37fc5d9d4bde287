"""Dataset creation speed and memory: kiln's build_dataset against a plain Pillow loop, same run.

    python bench/bench_dataset.py [--cache DIR] [--workers 2] [--rounds 5]

Writes the 70,000 MNIST PNGs once under --cache (kiln.datasets.stdsets.write_mnist), warms the
page cache, then alternates, --rounds times: a single-process Pillow decode + resize loop over
the 70,000 files, and build_dataset (grey 28x28, squash, encoding none) over the same folders.
Each round prints its ratio and the load average (a shared machine makes single rounds noisy);
the median round is tabled, plus the peak resident memory of the build (parent + worker
processes, sampled every 100 ms) for 10,000 against 70,000 images.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kiln.datasets.pack import build_dataset  # noqa: E402
from kiln.datasets.spec import DatasetSpec  # noqa: E402
from kiln.datasets.stdsets import write_mnist  # noqa: E402
from kiln.reporting import NullReporter  # noqa: E402


class PeakRSS:
    """Samples, in a thread, the summed RSS of this process and all its descendants, and the CPU
    seconds each descendant has used (so the build's CPU time includes its worker processes)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.me = interval, psutil.Process()
        self.peak = self.peak_parent = self.peak_children = 0
        self.child_cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        parent = self.me.memory_info().rss
        children = 0
        for child in self.me.children(recursive=True):
            try:
                with child.oneshot():
                    children += child.memory_info().rss
                    times = child.cpu_times()
                self.child_cpu[child.pid] = times.user + times.system
            except psutil.Error:
                pass
        self.peak_parent = max(self.peak_parent, parent)
        self.peak_children = max(self.peak_children, children)
        self.peak = max(self.peak, parent + children)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._cpu0 = time.process_time()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = time.process_time() - self._cpu0 + sum(self.child_cpu.values())


def mb(n: int) -> str:
    return f"{n / 2**20:.0f} MB"


def file_list(root: Path) -> list[str]:
    paths = []
    for split in ("train", "test"):
        for line in (root / f"{split}.txt").read_text().splitlines():
            paths.append(line.rsplit(" ", 1)[0])
    return paths


def baseline(paths: list[str]) -> tuple[float, float]:
    """What a person would write: open, convert, resize if needed, into one array. (wall s, CPU s)"""
    out = np.empty((len(paths), 28, 28), dtype=np.uint8)
    start, cpu = time.perf_counter(), time.process_time()
    for i, path in enumerate(paths):
        img = Image.open(path).convert("L")
        if img.size != (28, 28):
            img = img.resize((28, 28), Image.Resampling.BILINEAR)
        out[i] = np.asarray(img)
    return time.perf_counter() - start, time.process_time() - cpu


def spec_for(root: Path, per_class: int | None) -> DatasetSpec:
    return DatasetSpec(dataset_name="bench", folder_train=str(root / "train"), folder_pct_val=25,
                       folder_train_max_per_class=per_class, has_test_folder=True,
                       folder_test=str(root / "test"),
                       folder_test_max_per_class=per_class // 9 if per_class else None,
                       resize_channels=1, resize_width=28, resize_height=28, encoding="none")


def kiln_build(spec: DatasetSpec, job_dir: Path, workers: int) -> tuple[float, int, PeakRSS]:
    """(wall s, images, sampler with peak RSS and CPU s of parent + workers)"""
    shutil.rmtree(job_dir, ignore_errors=True)
    with PeakRSS() as rss:
        start = time.perf_counter()
        manifest = build_dataset(spec, job_dir, NullReporter(), workers=workers)
        seconds = time.perf_counter() - start
    count = sum(s["count"] for s in manifest["splits"].values()) + manifest["error_count"]
    return seconds, count, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "kiln-bench")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    root = args.cache / "mnist"
    t = time.perf_counter()
    write_mnist(root)
    print(f"MNIST PNGs ready in {root} ({time.perf_counter() - t:.1f} s)")
    paths = file_list(root)
    for path in paths:  # warm the page cache so both sides read from memory
        with open(path, "rb") as f:
            f.read()
    jobs = args.cache / "jobs"

    rows = []  # (baseline wall, baseline cpu, kiln wall, kiln sampler, load average)
    for _ in range(args.rounds):
        load = os.getloadavg()[0]
        base_wall, base_cpu = baseline(paths)
        seconds, count, rss = kiln_build(spec_for(root, None), jobs / "full", args.workers)
        assert count == len(paths), (count, len(paths))
        rows.append((base_wall, base_cpu, seconds, rss, load))
        print(f"round: baseline {base_wall:.2f} s ({base_cpu / base_wall:.2f} CPUs busy), kiln {seconds:.2f} s "
              f"({rss.cpu / seconds:.2f} CPUs busy), ratio {base_wall / seconds:.2f}x, load average {load:.1f}",
              flush=True)
    seconds10, count10, rss10 = kiln_build(spec_for(root, 900), jobs / "small", args.workers)

    n = len(paths)
    ratios = sorted(r[0] / r[2] for r in rows)
    median = ratios[len(ratios) // 2]
    base_wall, base_cpu, kiln, rss70, _ = next(r for r in rows if r[0] / r[2] == median)
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"Pillow {Image.__version__}, NumPy {np.__version__}")
    print(f"command: python bench/bench_dataset.py --workers {args.workers} --rounds {args.rounds}")
    print(f"median round of {len(rows)}:\n")
    print("| run | images | wall s | images/s | CPU s (all processes) | peak RSS (parent + workers) |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| plain Pillow loop, 1 process | {n} | {base_wall:.2f} | {n / base_wall:,.0f} | {base_cpu:.2f} | |")
    print(f"| kiln build_dataset, workers={args.workers} | {n} | {kiln:.2f} | {n / kiln:,.0f} | {rss70.cpu:.2f} | "
          f"{mb(rss70.peak)} ({mb(rss70.peak_parent)} + {mb(rss70.peak_children)}) |")
    print(f"| kiln build_dataset, workers={args.workers} | {count10} | {seconds10:.2f} | "
          f"{count10 / seconds10:,.0f} | {rss10.cpu:.2f} | {mb(rss10.peak)} ({mb(rss10.peak_parent)} + "
          f"{mb(rss10.peak_children)}) |")
    print(f"\nspeed-up: median {median:.2f}x, best {ratios[-1]:.2f}x, all {', '.join(f'{r:.2f}' for r in ratios)} "
          f"(target >= 1.7x); CPU per image: baseline {base_cpu / n * 1e6:.0f} us, kiln {rss70.cpu / n * 1e6:.0f} us")

if __name__ == "__main__":
    main()
