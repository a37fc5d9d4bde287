"""Page latency while heavy work runs, against the same pages on the idle server in the same run.

    python bench/bench_latency.py                # 60,000-image classify_many + a training job
    python bench/bench_latency.py --quick        # 6,000 images, fewer samples (a minute or two)
    python bench/bench_latency.py --write-docs   # ... and rewrites the "Page latency under load" section

A real `kiln serve` process (its own data dir, loopback, default settings) gets a small dataset
(10 classes of 28x28 grey PNGs) and a LeNet trained on it. Then, from one client with keep-alive,
`/`, the model's page and `/index.json` are requested in turn, with a short pause between rounds:
  (a) idle: nothing else runs on the server;
  (b) loaded: a second model trains (its worker process runs all along) while one classify_many
      request classifies a list of N images (the dataset's PNGs named over and over).
Each page's p50 and p99 are reported for both phases, and their ratio. The target is p99 <= 100 ms
on 2 cores while loaded. The client, the server, the training worker and the classify thread all
share the machine's cores: the latencies include that competition, as a user's browser would see it.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from docs_section import replace_section  # bench/ is on sys.path when a bench runs
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
HEADING = "Page latency under load"
TARGET_P99_MS = 100.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_images(root: Path, classes: int = 10, per_class: int = 30) -> Path:
    """root/c<k>/<i>.png, 28x28 grey, a class-dependent band so a LeNet can learn them."""
    rng = np.random.default_rng(0)
    for k in range(classes):
        folder = root / f"c{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 40, (28, 28), dtype=np.uint8)
            img[k * 28 // classes : (k + 1) * 28 // classes, :] = 220
            Image.fromarray(img).save(folder / f"{i:03d}.png")
    return root


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir.parent / "server.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kiln", "--data-dir", str(data_dir), "serve", "--port", str(self.port)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kiln serve exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/index.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError("kiln serve did not answer within 120 s")
        self.client = httpx.Client(base_url=self.url, timeout=600)
        res = self.client.post("/login", data={"username": "bench"}, follow_redirects=False)
        assert res.status_code in (200, 302, 303), res.text

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait()

    def wait(self, job_id: str, until: tuple[str, ...], timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.client.get(f"/jobs/{job_id}/status").json()
            if status["status"] in until:
                return status
            if status["status"] in ("Error", "Aborted", "Interrupted"):
                raise RuntimeError(f"job {job_id}: {status}")
            time.sleep(0.2)
        raise RuntimeError(f"job {job_id} not {until} after {timeout} s")

    def model(self, dataset_id: str, name: str, epochs: int) -> str:
        res = self.client.post(
            "/models/images/classification.json",
            data={
                "dataset": dataset_id,
                "model_name": name,
                "standard_networks": "lenet",
                "train_epochs": str(epochs),
                "learning_rate": "0.01",
                "random_seed": "1",
                "device": "cpu",
            },
        )
        assert res.status_code == 200, res.text
        return res.json()["id"]


def sample(server: Server, pages: list[str], keep_going: Any, min_rounds: int, pause: float) -> dict[str, list[float]]:
    """Latency in ms of each page, round after round, while keep_going() (at least min_rounds)."""
    out: dict[str, list[float]] = {p: [] for p in pages}
    keep_going = keep_going or (lambda: False)
    rounds = 0
    while rounds < min_rounds or keep_going():
        for page in pages:
            start = time.perf_counter()
            res = server.client.get(page)
            out[page].append(1000 * (time.perf_counter() - start))
            assert res.status_code == 200, (page, res.status_code)
            time.sleep(pause)
        rounds += 1
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q, method="higher"))  # nearest rank: a value that was seen


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-latency-"))
    folder = write_images(work / "images")
    images = sorted(str(p) for p in folder.glob("*/*.png"))
    server = Server(work / "data")
    try:
        res = server.client.post(
            "/datasets/images/classification.json",
            data={
                "dataset_name": "latency",
                "folder_train": str(folder),
                "resize_channels": "1",
                "resize_width": "28",
                "resize_height": "28",
                "folder_pct_val": "20",
            },
        )
        assert res.status_code == 200, res.text
        dataset_id = res.json()["id"]
        server.wait(dataset_id, ("Done",))
        model_id = server.model(dataset_id, "classifier", 2)
        server.wait(model_id, ("Done",))
        pages = ["/", f"/models/{model_id}", "/index.json"]

        # warm-up: the predictor is loaded and cached, every page rendered once
        with open(images[0], "rb") as f:
            res = server.client.post(
                "/models/images/classification/classify_one.json",
                data={"job_id": model_id},
                files={"image_file": ("a.png", f.read(), "image/png")},
            )
        assert res.status_code == 200, res.text
        sample(server, pages, None, 3, 0)

        idle = sample(server, pages, None, args.idle_rounds, args.pause)

        trainer = server.model(dataset_id, "trains meanwhile", 100_000)
        server.wait(trainer, ("Running",))
        time.sleep(3)  # past the worker's start-up: training steps are running
        listing = "".join(f"{images[i % len(images)]} {i % len(images) // 30}\n" for i in range(args.images))
        result: dict[str, Any] = {}

        def classify() -> None:
            start = time.perf_counter()
            r = server.client.post(
                "/models/images/classification/classify_many.json",
                data={"job_id": model_id},
                files={"image_list": ("list.txt", listing.encode(), "text/plain")},
            )
            result.update(seconds=time.perf_counter() - start, status=r.status_code)
            if r.status_code == 200:
                result["top1"] = r.json().get("top1_accuracy")
            else:
                result["error"] = r.text[:300]

        worker = threading.Thread(target=classify)
        worker.start()
        loaded = sample(server, pages, worker.is_alive, 1, args.pause)
        worker.join()
        training_status = server.client.get(f"/jobs/{trainer}/status").json()["status"]
        server.client.post(f"/models/{trainer}/abort")
    finally:
        server.stop()
    return {
        "pages": pages,
        "idle": idle,
        "loaded": loaded,
        "classify": result,
        "images": args.images,
        "training_status": training_status,
    }


# What one run cannot show; from the runs made while tuning (same machine, same day).
NOTES = [
    "Notes: the machine was shared (load averages above). p99 over ~750 loaded samples is about the "
    "8th-slowest answer, so a single run moves it by tens of ms. A full run with CPython's default 5 ms "
    "switch interval (load 5.9 to 8.1) gave loaded p99 169 / 131 / 103 ms and p50 30 / 28 / 26 ms for "
    "`/`, the model page and `/index.json`; alternating `--quick --images 10000` runs (load 6.5 to 8.6) "
    "gave loaded p99 of 188-437 ms with 5 ms, 73-485 ms with 1 ms, and 116-275 ms with PyTorch limited "
    "to one thread in the server (not kept: it would change the server's numbers for big networks). "
    "Heavy threads at a lower CPU priority (nice 10) were tried and dropped (see kiln/web/offload.py). "
    "classify_many's own speed (about 470 images/s here, with training on the same cores) is decoding "
    "and path checks per image, not the network.",
    "",
]


def render(r: dict[str, Any], command: str) -> str:
    c = r["classify"]
    lines = [
        f"## {HEADING}",
        "",
        f"Command: `{command}` on {platform.machine()} with {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}. One real `kiln serve` (default settings: KILN_HEAVY_THREADS=2); one "
        "client requests `/`, a model page and `/index.json` in turn with keep-alive, "
        f"pausing {r['pause'] * 1000:.0f} ms between requests. *Idle*: nothing else runs. *Loaded*: a LeNet "
        f"trains in its worker process while one classify_many request classifies {r['images']:,} images "
        "(28x28 PNGs, the dataset's 300 files named over and over). Both phases in the same run, "
        "on the same server; the client, the server, the worker and the classify thread share the cores.",
        "",
        "| page | idle p50 | idle p99 | loaded p50 | loaded p99 | p99 loaded / idle | samples (idle / loaded) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    worst = 0.0
    for page, shown in zip(r["pages"], ("`/`", "`/models/<id>`", "`/index.json`")):
        idle, loaded = r["idle"][page], r["loaded"][page]
        worst = max(worst, pct(loaded, 99))
        lines.append(
            f"| {shown} | {pct(idle, 50):.1f} ms | {pct(idle, 99):.1f} ms | {pct(loaded, 50):.1f} ms | "
            f"**{pct(loaded, 99):.1f} ms** | {pct(loaded, 99) / pct(idle, 99):.1f}x | {len(idle)} / {len(loaded)} |"
        )
    verdict = "met" if worst <= TARGET_P99_MS else "**not met**"
    lines += [
        "",
        f"classify_many: {r['images']:,} images in {c.get('seconds', 0):.1f} s "
        f"({r['images'] / max(c.get('seconds', 1e-9), 1e-9):,.0f} images/s), answer {c.get('status')}; the "
        f"training job was {r['training_status']} when it ended. Target p99 <= {TARGET_P99_MS:.0f} ms while "
        f"loaded: {verdict} (worst page p99 {worst:.1f} ms). The machine's 1-minute load average was "
        f"{r['load'][0]:.1f} before the run and {r['load'][1]:.1f} after it (above 2, other processes "
        "were competing for the 2 cores too).",
        "",
        "How: classify one/many, the LR preview, model sweeps and dataset checks run on kiln's own "
        "worker threads (`kiln/web/offload.py`, KILN_HEAVY_THREADS at a time, KILN_HEAVY_QUEUE waiting, "
        "then 503), never on the event loop, with a 1 ms GIL switch interval in the server once they exist (5 ms is CPython's default; in alternating quick runs on this shared machine it gave the lowest loaded p99); classify_many decodes "
        "at most 256 images (and 16 M input values) at a time, whatever the list's length or the "
        "model's batch size. Before this, the same 60,000-image classify_many ran on the event loop "
        "and stopped every page and the live charts for its whole duration (11 s, issue 7).",
        "",
        *NOTES,
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6,000 images and fewer idle rounds")
    parser.add_argument("--images", type=int, help="images in the classify_many list (default 60,000)")
    parser.add_argument("--idle-rounds", type=int, help="rounds of the three pages on the idle server")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds between two requests")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    args.images = args.images or (6_000 if args.quick else 60_000)
    args.idle_rounds = args.idle_rounds or (60 if args.quick else 300)
    load_before = os.getloadavg()[0]
    result = run(args)
    result.update(pause=args.pause, load=(load_before, os.getloadavg()[0]))
    command = ("python bench/bench_latency.py " + " ".join(sys.argv[1:])).strip()
    section = render(result, command)
    print(section)
    if args.write_docs:
        print(f"wrote {replace_section(HEADING, section)}", file=sys.stderr)


if __name__ == "__main__":
    main()
