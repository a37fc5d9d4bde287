"""Kiln's recipe: candidate settings for LeNet, judged on MNIST's test split and on stress sets made
from it (bench/stress_sets.py: dark on light, thick and thin strokes, blur, low resolution, off
centre, rotated/scaled/sheared, filling the frame, grey paper, and all of them at once).

    python bench/bench_recipe.py --candidates kiln,plain --data inverted       # full runs
    python bench/bench_recipe.py --candidates all --data inverted --train 20000 --epochs 2   # exploring
    python bench/bench_recipe.py --candidates kiln --seeds 1,2,3,4,5           # seed-to-seed spread
    python bench/bench_recipe.py --lab                                         # the lab's table
    python bench/bench_recipe.py --render [--write-docs]                       # tables from the cache
    python bench/bench_recipe.py --ceiling                                     # ms per training step

Every run trains with kiln.training.loop.train(), exactly as a model job does, on a packed
dataset built by kiln's own dataset job code from the MNIST image folders (`inverted`: full MNIST
with inverted copies, 120,000 images; `full`: 60,000; `small`: 600 per class), with MNIST's
test split as the val split. The final snapshot is then loaded by kiln's Predictor (the path
classify one and many use) and run on every stress set. Wall time is the whole train() call
(validation and snapshots included). Each run's result is kept in <work>/bench_recipe_results.json,
so runs can be made a few at a time and the tables rendered from all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Spinning OpenMP threads on 2 busy cores make small tensor work many times slower; kiln serve
# sets this for its workers too, so the bench measures what a model job gets.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a script

from docs_section import replace_section  # bench/ is on sys.path when a bench runs
from stress_sets import STRESSES, make_stress_sets

from kiln.training.recipe import KILN_RECIPES

# -- the candidates ----------------------------------------------------------------------------------
# Each is TrainConfig values on top of BASE. "kiln" is always what kiln ships (kiln.training.recipe).
BASE: dict[str, Any] = dict(network="lenet", val_interval=1, snapshot_interval=0, random_seed=1)
PREVIOUS = dict(
    train_epochs=3, batch_size=128, solver_type="ADAM", learning_rate=0.002, lr_policy="cosine", use_mean="image"
)
GEOMETRY = dict(aug_rot=12.0, aug_scale=0.1, aug_shear=10.0, aug_shift=0.1)
PHOTO = dict(aug_stroke=1.0, aug_blur=1.0, aug_contrast=0.5, aug_brightness=0.2)
CANDIDATES: dict[str, tuple[str, dict[str, Any]]] = {
    "digits": (
        "DIGITS' defaults for the lab: SGD 0.01, step, mean image, 10 epochs",
        dict(train_epochs=10, solver_type="SGD", learning_rate=0.01, lr_policy="step"),
    ),
    "plain": ("kiln's earlier LeNet recipe, no augmentation: Adam 0.002, cosine, batch 128, 3 epochs", PREVIOUS),
    "geometry": ("plain + rotation 12, scale 0.1, shear 10, shift 0.1", {**PREVIOUS, **GEOMETRY}),
    "photo": ("plain + stroke 1, blur 1, contrast 0.5, brightness 0.2", {**PREVIOUS, **PHOTO}),
    "geo+photo": ("plain + geometry + photo", {**PREVIOUS, **GEOMETRY, **PHOTO}),
    "geo+photo/relu": (
        "geo+photo, LeNet with a ReLU after each pooling",
        {**PREVIOUS, **GEOMETRY, **PHOTO, "network": "lenet:relu"},
    ),
    "geo+photo/bn": (
        "geo+photo, LeNet with BatchNorm and ReLU after each convolution",
        {**PREVIOUS, **GEOMETRY, **PHOTO, "network": "lenet:bn"},
    ),
    "kiln": ("kiln's recipe as shipped (kiln.training.recipe)", KILN_RECIPES["lenet"]),
}
LAB = [  # the lab's table: (row, candidate, data, extra values)
    ("small, DIGITS' defaults", "digits", "small", {}),
    ("full, DIGITS' defaults", "digits", "full", {}),
    ("full + inverted, DIGITS' defaults", "digits", "inverted", {}),
    ("full + inverted, customized 75/100", "digits", "inverted", {"network": "custom:lenet-75-100"}),
    ("full + inverted, kiln's recipe", "kiln", "inverted", {}),
]


# -- LeNet variants (network width and nonlinearity), as network texts edited like a student would --
def lenet_text(variant: str) -> str:
    """kiln's LeNet text edited: tokens joined by '-': 'relu' (a ReLU after each pooling), 'bn'
    (BatchNorm + Scale after each convolution, and the ReLUs), 'wA/B' (conv1 A and conv2 B filters),
    'dropD' (dropout D before ip2)."""
    from kiln.networks.prototxt import standard_text

    text = standard_text("lenet")
    tokens = variant.split("-")

    def edit(old: str, new: str) -> None:
        nonlocal text
        if text.count(old) != 1:
            raise RuntimeError(f"kiln's LeNet text changed: {old!r} is not in it exactly once")
        text = text.replace(old, new)

    def layer(body: str) -> str:
        return "layer {\n  " + body + "\n}\n"

    for token in tokens:
        if token.startswith("w"):
            a, b = token[1:].split("/")
            edit("num_output: 20\n", f"num_output: {a}\n")
            edit("num_output: 50\n", f"num_output: {b}\n")
        if token.startswith("drop"):
            drop = layer(
                f'name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param {{ dropout_ratio: {token[4:]} }}'
            )
            edit('layer {\n  name: "ip2"', drop + 'layer {\n  name: "ip2"')
    if "bn" in tokens:
        for conv in ("conv1", "conv2"):
            pool = "pool1" if conv == "conv1" else "pool2"
            bn = layer(
                f'name: "{conv}_bn" type: "BatchNorm" bottom: "{conv}" top: "{conv}" batch_norm_param {{ moving_average_fraction: 0.95 }}'
            )
            bn += layer(
                f'name: "{conv}_scale" type: "Scale" bottom: "{conv}" top: "{conv}" scale_param {{ bias_term: true }}'
            )
            edit(f'layer {{\n  name: "{pool}"', bn + f'layer {{\n  name: "{pool}"')
    if "relu" in tokens or "bn" in tokens:
        for pool in ("pool1", "pool2"):
            old = f'top: "{pool}"\n  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }}\n}}\n'
            edit(old, old + layer(f'name: "relu_{pool}" type: "ReLU" bottom: "{pool}" top: "{pool}"'))
    return text


# -- data ----------------------------------------------------------------------------------------
def mnist_folders(work: Path) -> Path:
    from kiln.datasets.stdsets import write_mnist

    folders = work / "mnist"
    write_mnist(folders)  # returns at once when the folders are complete
    return folders


def packed(work: Path, name: str) -> Any:
    """A packed MNIST dataset built by kiln's dataset job code, cached under work/."""
    from kiln.datasets import packed_format
    from kiln.datasets.pack import build_dataset
    from kiln.datasets.reader import PackedDataset
    from kiln.datasets.stdsets import folders_spec
    from kiln.reporting import RecordingReporter

    target = work / f"mnist-{name}"
    if not packed_format.is_complete(target):
        folders = mnist_folders(work)
        print(f"packing MNIST ({name}) ...", file=sys.stderr, flush=True)
        spec = folders_spec(
            folders, add_inverted=name == "inverted", folder_train_max_per_class=600 if name == "small" else None
        )
        build_dataset(spec, target, RecordingReporter(), workers=os.cpu_count() or 2)
    return PackedDataset(target)


class Subset:
    """The first `n` of a random order of a dataset's train split (same val split, same mean)."""

    def __init__(self, dataset: Any, n: int, seed: int = 0) -> None:
        self.dataset = dataset
        self.index = np.sort(np.random.default_rng(seed).permutation(dataset.count("train"))[:n])
        self.labels, self.image_shape, self.splits = dataset.labels, dataset.image_shape, dataset.splits
        self.manifest = dataset.manifest

    def count(self, split: str) -> int:
        return len(self.index) if split == "train" else self.dataset.count(split)

    def images(self, split: str) -> Any:
        return np.asarray(self.dataset.images(split))[self.index] if split == "train" else self.dataset.images(split)

    def targets(self, split: str) -> Any:
        return self.dataset.targets(split)[self.index] if split == "train" else self.dataset.targets(split)

    def mean_image(self) -> np.ndarray:
        return self.dataset.mean_image()

    def mean_pixel(self) -> np.ndarray:
        return self.dataset.mean_pixel()


def stress(work: Path, dataset: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The stress sets of the val split (MNIST's test split), cached in work/stress.npz."""
    cache = work / "stress.npz"
    if cache.exists():  # with its own labels: each packed dataset orders its val split its own way
        with np.load(cache) as z:
            if set(z.files) == {*STRESSES, "labels"}:
                return {k: z[k] for k in STRESSES}, z["labels"]
    print("making the stress sets ...", file=sys.stderr, flush=True)
    labels = np.asarray(dataset.targets("val"))
    sets = make_stress_sets(np.asarray(dataset.images("val")))
    np.savez_compressed(cache, labels=labels, **sets)
    return sets, labels


# -- one run ---------------------------------------------------------------------------------------
def run(
    work: Path, candidate: str, data: str, seed: int, train_n: int | None, epochs: float | None, extra: dict[str, Any]
) -> dict[str, Any]:
    from kiln.inference.predictor import Predictor
    from kiln.reporting import RecordingReporter
    from kiln.training.config import TrainConfig
    from kiln.training.loop import train

    dataset = packed(work, data)
    sets, labels = stress(work, dataset)
    values = {**BASE, **CANDIDATES[candidate][1], "random_seed": seed, **extra}
    if epochs is not None:
        values["train_epochs"] = epochs
    if str(values.get("network", "")).startswith("custom:"):
        from bench_train import variant_text

        values.update(network="custom", network_text=variant_text())
    elif str(values.get("network", "")).startswith("lenet:"):
        values.update(network="custom", network_text=lenet_text(values["network"][6:]))
    source = Subset(dataset, train_n) if train_n else dataset
    reporter = RecordingReporter()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        summary = train(TrainConfig(**values), source, Path(out), reporter)
        wall = time.perf_counter() - started
        predictor = Predictor.from_job_dir(out)
        accuracy = {
            name: round(100.0 * float((predictor.probabilities(images, 1000).argmax(1) == labels).mean()), 2)
            for name, images in sets.items()
        }
    return {
        "candidate": candidate,
        "data": data,
        "train_images": source.count("train"),
        "subset": bool(train_n),
        "epochs": values["train_epochs"],
        "seed": seed,
        "extra": extra,
        "val_accuracy": summary["final"].get("val_accuracy"),
        "val_curve": [(e, round(v["accuracy"], 2)) for e, v, phase in reporter.rows if phase == "val"],
        "accuracy": accuracy,
        "wall_s": round(wall, 1),
        "images_per_second": summary["images_per_second"],
        "load_before": round(load, 2),
        "threads": int(os.environ.get("OMP_NUM_THREADS") or 0) or None,  # None: kiln's own choice (all cores)
        "values": {k: v for k, v in values.items() if k != "network_text"},
    }


def key(row: dict[str, Any]) -> str:
    return json.dumps([row["candidate"], row["data"], row["train_images"], row["epochs"], row["seed"], row["extra"]])


def save(work: Path, row: dict[str, Any]) -> None:
    from kiln.atomic import atomic_write_text

    cache = work / "bench_recipe_results.json"
    rows = json.loads(cache.read_text()) if cache.exists() else []
    rows = [r for r in rows if key(r) != key(row)] + [row]
    atomic_write_text(cache, json.dumps(rows, indent=1))


# -- the compute ceiling -------------------------------------------------------------------------
def ceiling(variants: str = "lenet,lenet:w32/64,custom:lenet-75-100") -> list[str]:
    """Milliseconds per training step (forward, backward, Adam) of each network on random 28x28
    images, per batch size and memory format: the most images per second any recipe can have here."""
    import torch

    from kiln.networks.definition import NetworkDef
    from kiln.training.config import TrainConfig
    from kiln.training.solvers import make_optimizer

    lines = ["| network | batch | layout | ms per step | images/s |", "|---|---|---|---|---|"]
    for variant in variants.split(","):
        values: dict[str, Any] = {"network": variant}
        if variant.startswith("custom:"):
            from bench_train import variant_text

            values = {"network": "custom", "network_text": variant_text()}
        elif variant.startswith("lenet:"):
            values = {"network": "custom", "network_text": lenet_text(variant[6:])}
        config = TrainConfig(**values, solver_type="ADAM", learning_rate=0.001)
        for batch in (128, 256, 512):
            for layout in (torch.channels_last, torch.contiguous_format):
                torch.manual_seed(0)
                model = NetworkDef.of_config(config).build(10, (1, 28, 28)).to(memory_format=layout)
                optimizer = make_optimizer(model, config)
                x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=layout)
                y = torch.randint(0, 10, (batch,))
                times = []
                for _ in range(15):
                    started = time.perf_counter()
                    optimizer.zero_grad(set_to_none=True)
                    torch.nn.functional.cross_entropy(model(x), y).backward()
                    optimizer.step()
                    times.append(time.perf_counter() - started)
                ms = 1000 * statistics.median(times[3:])
                name = "channels_last" if layout == torch.channels_last else "NCHW"
                lines.append(f"| {variant} | {batch} | {name} | {ms:.0f} | {batch / ms * 1000:,.0f} |")
                print(lines[-1], flush=True)
    return lines


# -- reports -------------------------------------------------------------------------------------
COLUMNS = list(STRESSES)


def table(rows: list[dict[str, Any]], first: str, name: Any) -> list[str]:
    head = [first, "train images x epochs", *COLUMNS, "wall s", "load"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [name(r), f"{r['train_images']:,} x {r['epochs']:g}"]
        cells += [f"{r['accuracy'][c]:.2f}" for c in COLUMNS] + [f"{r['wall_s']:.0f}", f"{r['load_before']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def changes(row: dict[str, Any]) -> dict[str, Any]:
    """What a run changed from its candidate as it stands now (for "kiln": the recipe kiln ships
    today, so rows measured with an earlier recipe show how they differ from it)."""
    from dataclasses import asdict

    from kiln.training.config import TrainConfig

    if row["candidate"] != "kiln":
        return row["extra"]
    defaults = asdict(TrainConfig())
    now = {**defaults, **BASE, **CANDIDATES["kiln"][1]}
    ran = {**defaults, **row["values"], "network": row["extra"].get("network", row["values"]["network"])}
    skip = {"random_seed", "network_text", "extra"}
    outside = {k: v for k, v in row["extra"].items() if k not in now}  # e.g. a prototype's "ema"
    return {**{k: ran[k] for k in now if k not in skip and ran.get(k) != now[k]}, **outside}


def name_of(row: dict[str, Any]) -> str:
    diff = changes(row)
    return f"{row['candidate']} ({row['data']}, {row['seed']}{', ' + json.dumps(diff) if diff else ''})"


def spread(rows: list[dict[str, Any]]) -> list[str]:
    """Mean, min and max over the seeds of kiln's recipe (as shipped) on full MNIST with inverted copies."""
    by_seed = {  # the newest run of each seed
        r["seed"]: r
        for r in rows
        if r["candidate"] == "kiln" and r["data"] == "inverted" and r["train_images"] == 120000 and not changes(r)
    }
    runs = list(by_seed.values())
    if len(runs) < 2:
        return []
    lines = [f"| over {len(runs)} seeds | " + " | ".join(COLUMNS) + " | wall s |", "|" + "---|" * (len(COLUMNS) + 2)]
    for what, fn in (("mean", statistics.mean), ("min", min), ("max", max)):
        cells = [f"{fn([r['accuracy'][c] for r in runs]):.2f}" for c in COLUMNS]
        lines.append(f"| {what} | " + " | ".join(cells) + f" | {fn([r['wall_s'] for r in runs]):.0f} |")
    return lines


def render(rows: list[dict[str, Any]]) -> str:
    described = "\n".join(f"- `{name}`: {what}" for name, (what, _) in CANDIDATES.items())
    stresses = "\n".join(f"- `{name}`: {what}" for name, (what, _) in STRESSES.items())
    every = sorted(rows, key=lambda r: (r["data"], r["train_images"], r["candidate"], r["seed"]))
    lab: dict[str, dict[str, Any]] = {}  # the lab's rows: the newest seed-1 full-size run of each
    for name, c, d, e in LAB:
        for r in rows:
            kiln_now = not changes(r) if c == "kiln" else r["extra"] == e
            if (r["candidate"], r["data"], r["seed"]) == (c, d, 1) and kiln_now and not r.get("subset", True):
                lab[name] = r
    out = [
        "## Kiln's recipe",
        "",
        "Candidates:",
        described,
        "",
        "Stress sets (MNIST's test split, 10,000 each):",
        stresses,
        "",
    ]
    out += [
        "Every run (accuracy in %; for `kiln` rows, the changes are what the run set differently from the",
        "recipe kiln ships now; `load`: the load average when the run started):",
        "",
    ]
    out += table(every, "candidate (data, seed, changes)", name_of)
    if lab:
        names = {id(r): name for name, r in lab.items()}
        out += ["", "The lab's table:", ""] + table(list(lab.values()), "model", lambda r: names[id(r)])
    if spread(rows):
        out += ["", "Kiln's recipe on full MNIST with inverted copies, seed to seed:", ""] + spread(rows)
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--work",
        default=str(Path(tempfile.gettempdir()) / "kiln-recipe"),
        help="cache: folders, packed datasets, stress sets, results",
    )
    parser.add_argument("--candidates", default="kiln", help="comma list, or all")
    parser.add_argument("--data", default="inverted", choices=("inverted", "full", "small"))
    parser.add_argument("--seeds", default="1")
    parser.add_argument("--train", type=int, help="train on a random subset of this many images")
    parser.add_argument("--epochs", type=float, help="override the candidates' epochs")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON", help="extra TrainConfig values")
    parser.add_argument("--lab", action="store_true", help="run the lab's table")
    parser.add_argument("--ceiling", action="store_true", help="ms per training step of LeNet and its variants")
    parser.add_argument("--render", action="store_true")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    extra = {k: json.loads(v) for k, _, v in (s.partition("=") for s in args.set)}
    if args.ceiling:
        (work / "ceiling.md").write_text("\n".join(ceiling()) + "\n")
        return
    if args.lab:
        plan = [(c, d, 1, {**e, **extra}) for _, c, d, e in LAB]
    elif not args.render:
        names = list(CANDIDATES) if args.candidates == "all" else args.candidates.split(",")
        plan = [(c, args.data, int(s), extra) for c in names for s in args.seeds.split(",")]
    else:
        plan = []
    for candidate, data, seed, more in plan:
        row = run(work, candidate, data, seed, args.train, args.epochs, more)
        save(work, row)
        acc = "  ".join(f"{k} {v:.2f}" for k, v in row["accuracy"].items())
        print(
            f"{candidate} {data} seed {seed} {row['train_images']}x{row['epochs']:g}: {acc}  [{row['wall_s']:.0f} s]",
            flush=True,
        )
    cache = work / "bench_recipe_results.json"
    section = render(json.loads(cache.read_text()) if cache.exists() else [])
    print(section)
    if args.write_docs:
        print(f"wrote {replace_section(section.splitlines()[0][3:], section)}")


if __name__ == "__main__":
    main()
