"""The exported ONNX model in ONNX Runtime against kiln's PyTorch predictor, on CPU, in the same run.

    python bench/bench_export.py                 # LeNet, with 1 and 2 threads per runtime
    python bench/bench_export.py --quick         # fewer repetitions (seconds)
    python bench/bench_export.py --networks lenet,alexnet --threads 2   # AlexNet too (minutes on 2 cores)
    python bench/bench_export.py --write-docs    # ... and rewrites the "Export: ONNX Runtime vs PyTorch
                                                 #     predictor" section of docs/benchmarks.md

For each network a snapshot is written the way training writes one (`checkpoint.save_snapshot`:
safetensors weights and meta, a mean image; fresh random weights, since speed does not depend on
their values), exported with `kiln.export.export_onnx` (dynamic batch axis, checked in ONNX
Runtime) and loaded both ways. Three sides see the same images:

  predictor   `Predictor.probabilities(uint8 NHWC batch)`: what the server runs (kiln's
              preprocessing on torch: float, mean subtraction, crop; the model; softmax)
  pytorch     the predictor's own model on the already preprocessed float batch, softmax
  onnxruntime `InferenceSession.run` (CPU provider) on that same preprocessed batch, softmax

Batch 1: p50 latency over many single-image calls. Batch 256: images/s from the median of a few
rounds. Every repetition runs each side once, rotating which goes first, so load on a shared
machine falls on all sides alike; one untimed call of each warms them. Both runtimes get the same
thread count (each count in --threads is a run of its own), and both wait passively
(OMP_WAIT_POLICY=PASSIVE, as `kiln serve` sets for itself; ONNX Runtime's intra-op spinning off)
unless --spin. AlexNet is left out by default: its batch-256 rounds take minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HEADING = "Export: ONNX Runtime vs PyTorch predictor"
SIDES = ("predictor", "pytorch", "onnxruntime")
# network: (channels, stored height/width, crop, batch-1 repetitions, batch-256 rounds)
CASES: dict[str, tuple[int, int, int | None, int, int]] = {
    "lenet": (1, 28, None, 300, 7),
    "alexnet": (3, 256, 227, 30, 3),
}
BIG = 256


def write_snapshot(job_dir: Path, network: str, channels: int, size: int, crop: int | None) -> None:
    """A snapshot as a training job leaves it: fresh weights, a random mean image, 10 labels."""
    import numpy as np
    import torch

    from kiln.networks.definition import NetworkDef
    from kiln.preprocess import Preprocess
    from kiln.training import checkpoint

    torch.manual_seed(0)
    mean = np.random.default_rng(0).uniform(0, 255, (size, size, channels)).astype(np.float32)
    pre = Preprocess(channels, size, size, "squash", "image", mean, crop)
    net = NetworkDef(network)
    shape = (channels, *pre.input_size)
    model = net.build(10, shape).eval()
    labels = [f"class {i}" for i in range(10)]
    meta = checkpoint.snapshot_meta(
        num_classes=10, in_channels=channels, height=shape[1], width=shape[2], labels=labels,
        preprocess=pre.to_dict(), epoch=1.0, iteration=1, metrics={}, config={}, **net.meta(),
    )  # fmt: skip
    job_dir.mkdir(parents=True)
    checkpoint.save_snapshot(job_dir, model, meta)


def sides(job_dir: Path, work: Path, threads: int, spin: bool) -> tuple[dict[str, Any], Callable, dict[str, Any]]:
    """The three ways to score a uint8 batch; the preprocessing the two runtimes share (cached); export facts."""
    import numpy as np
    import onnxruntime
    import torch

    from kiln.export import export_onnx, load_for_export
    from kiln.inference.predictor import Predictor

    predictor = Predictor.from_job_dir(job_dir)
    started = time.perf_counter()
    onnx_path = export_onnx(*load_for_export(job_dir), work / "model.onnx")
    facts = {"export_s": time.perf_counter() - started, "onnx_bytes": onnx_path.stat().st_size}
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    prepared: dict[int, tuple[torch.Tensor, np.ndarray]] = {}  # id(batch) -> the same input, torch and numpy

    def prepare(batch: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        if id(batch) not in prepared:
            x = predictor.preprocess.batch_to_tensor(batch)
            prepared[id(batch)] = (x, np.ascontiguousarray(x.numpy(), np.float32))
        return prepared[id(batch)]

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def run_pytorch(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(predictor.model(prepare(batch)[0]).float(), dim=1).numpy()

    fns = {
        "predictor": lambda batch: predictor.probabilities(batch, len(batch)),
        "pytorch": run_pytorch,
        "onnxruntime": lambda batch: softmax(session.run(None, {name: prepare(batch)[1]})[0]),
    }
    return fns, prepare, facts


def interleaved(fns: dict[str, Callable[[Any], Any]], batch: Any, reps: int) -> dict[str, list[float]]:
    """Seconds per call of each side, every repetition running each side once in a rotating order."""
    for fn in fns.values():
        fn(batch)  # warm: first-call allocations, ORT's arena
    times: dict[str, list[float]] = {side: [] for side in fns}
    order = list(fns)
    for rep in range(reps):
        for side in order[rep % len(order) :] + order[: rep % len(order)]:
            start = time.perf_counter()
            fns[side](batch)
            times[side].append(time.perf_counter() - start)
    return times


def measure(network: str, work: Path, threads: int, spin: bool, quick: bool) -> dict[str, Any]:
    import numpy as np
    import torch

    torch.set_num_threads(threads)

    channels, size, crop, reps1, rounds = CASES[network]
    if quick:
        reps1, rounds = max(20, reps1 // 5), max(2, rounds // 2)
    job_dir = work / f"{network}-{threads}" / "job"
    write_snapshot(job_dir, network, channels, size, crop)
    fns, prepare, facts = sides(job_dir, job_dir.parent, threads, spin)
    rng = np.random.default_rng(1)
    one = rng.integers(0, 256, (1, size, size, channels), dtype=np.uint8)
    big = rng.integers(0, 256, (BIG, size, size, channels), dtype=np.uint8)
    prepare(big)  # preprocessing for the two runtimes is done once, outside the timings
    diff = float(np.abs(fns["onnxruntime"](big) - fns["predictor"](big)).max())
    return {
        "network": network,
        "threads": threads,
        "input": f"{channels}x{crop or size}x{crop or size}",
        "reps1": reps1,
        "rounds": rounds,
        "one": interleaved(fns, one, reps1),
        "big": interleaved(fns, big, rounds),
        "max_diff": diff,
        **facts,
    }


def summary(m: dict[str, Any]) -> dict[str, dict[str, float]]:
    out = {}
    for side in SIDES:
        p50 = statistics.median(m["one"][side]) * 1000
        p90 = sorted(m["one"][side])[int(0.9 * (len(m["one"][side]) - 1))] * 1000
        out[side] = {"p50": p50, "p90": p90, "ips": BIG / statistics.median(m["big"][side])}
    return out


# What one run cannot show; from the runs made while writing this (same machine, same day).
NOTES = [
    "Notes: AlexNet (3x227x227 crop of 256x256, 217 MiB model.onnx, 38 s to export and check) measured with "
    "`--networks alexnet --threads 2 --quick` (20 batch-1 repetitions, 2 batch-256 rounds) at a load average "
    "near 9.6: batch-1 p50 239 ms predictor, 241 ms pytorch, 199 ms onnxruntime (**1.20x**); batch 256: 5, 5 "
    "and 10 images/s (**1.91x**); the run took 10 minutes, hence not in the default set. The predictor's "
    "preprocessing of one 28x28 image (`batch_to_tensor`) takes about 0.02 ms, so the predictor and pytorch "
    "rows differ by noise and by what the predictor adds around the model (no_grad, softmax, a copy to "
    "NumPy), not by preprocessing. On a busy machine ONNX Runtime's p90 stays much closer to its p50 than "
    "the torch sides' do.",
    "",
]


def render(results: list[dict[str, Any]], command: str, spin: bool, load: tuple[float, float]) -> str:
    import numpy as np
    import onnxruntime
    import torch

    niceness = f" (niceness {os.nice(0)})" if os.nice(0) else ""
    wait = "spinning as each runtime does by default" if spin else "OMP_WAIT_POLICY=PASSIVE and ORT spinning off"
    lines = [
        f"## {HEADING}",
        "",
        f"Command: `{command}`{niceness} on {platform.machine()} with {os.cpu_count()} CPU cores, Python "
        f"{platform.python_version()}, PyTorch {torch.__version__}, ONNX Runtime {onnxruntime.__version__}, "
        f"NumPy {np.__version__}; both runtimes get the same number of threads, {wait}. A snapshot per network written "
        "as training writes one (fresh weights, a mean image, 10 classes), exported by `kiln.export.export_onnx` "
        "(dynamic batch axis). *predictor*: `Predictor.probabilities` on a uint8 batch (kiln's preprocessing, "
        "model, softmax: what the server runs). *pytorch*: the predictor's model on the already preprocessed "
        "batch. *onnxruntime*: `InferenceSession.run` (CPU provider) on that same preprocessed batch, softmax. "
        "Each repetition runs all three, rotating which goes first. Batch 1: p50 of single-image calls; "
        f"batch {BIG}: images/s from the median round. *x predictor*: how many times faster than the predictor "
        "(above 1: faster).",
        "",
        f"| network | input | threads | side | batch-1 p50 | p90 | x predictor (batch 1) | batch-{BIG} images/s "
        f"| x predictor (batch {BIG}) |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        s = summary(m)
        base = s["predictor"]
        for side in SIDES:
            v = s[side]
            bold = "**" if side == "onnxruntime" else ""
            lines.append(
                f"| {m['network']} | {m['input']} | {m['threads']} | {side} | {v['p50']:.2f} ms | "
                f"{v['p90']:.2f} ms | {bold}{base['p50'] / v['p50']:.2f}x{bold} | {v['ips']:,.0f} | "
                f"{bold}{v['ips'] / base['ips']:.2f}x{bold} |"
            )
    lines.append("")
    for m in results:
        lines.append(
            f"- {m['network']}, {m['threads']} thread(s): {m['reps1']} batch-1 repetitions, {m['rounds']} "
            f"batch-{BIG} rounds; export took {m['export_s']:.1f} s (with its ONNX Runtime check), "
            f"model.onnx {m['onnx_bytes'] / 2**20:.1f} MiB; "
            f"max |probability difference| ONNX Runtime vs predictor on the {BIG} images: {m['max_diff']:.1e}."
        )
    lines += [
        "",
        *NOTES,
        f"The machine's 1-minute load average was {load[0]:.1f} before the run and {load[1]:.1f} after it "
        f"(above {os.cpu_count()}, other processes were competing for the cores; the interleaving spreads "
        "that load over all sides, the ratios are what to read).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--networks", default="lenet", help=f"comma-separated, of {', '.join(CASES)} (default lenet)")
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 1}", help="comma-separated thread counts")
    parser.add_argument("--spin", action="store_true", help="let both runtimes' threads spin while they wait")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    if not args.spin:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP
    from docs_section import replace_section  # bench/ is on sys.path when a bench runs

    networks = [n for n in args.networks.split(",") if n]
    counts = sorted({int(t) for t in args.threads.split(",") if t})
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-export-"))
    try:
        results = []
        for network in networks:
            for threads in counts:
                results.append(measure(network, work, threads, args.spin, args.quick))
                print(f"{network} with {threads} thread(s) done", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    command = ("python bench/bench_export.py " + " ".join(sys.argv[1:])).strip()
    section = render(results, command, args.spin, (load_before, os.getloadavg()[0]))
    print(section)
    if args.write_docs:
        print(f"wrote {replace_section(HEADING, section)}", file=sys.stderr)


if __name__ == "__main__":
    main()
