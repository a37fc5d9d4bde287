"""Snapshots built directly (random weights: parity needs no training), test images, predict.py runs."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from kiln.networks.definition import NetworkDef
from kiln.preprocess import Preprocess
from kiln.training import checkpoint

# Runs predict.py as `python -I predict.py ...` would, with kiln made unimportable: the venv's
# editable install would otherwise put it on sys.path even in isolated mode.
NO_KILN = """
import runpy, sys
class NoKiln:
    def find_spec(self, name, path=None, target=None):
        if name == "kiln" or name.startswith("kiln."):
            raise ImportError("predict.py must not import kiln")
sys.meta_path.insert(0, NoKiln())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def make_snapshot(
    job_dir: Path,
    network: str,
    *,
    channels: int,
    size: tuple[int, int],
    resize_mode: str = "squash",
    use_mean: str = "none",
    crop: int | None = None,
    classes: int = 3,
    text: str = "",
    epoch: float = 1.0,
    seed: int = 0,
) -> Path:
    """A snapshot with random weights and a random mean, as a training job would leave it."""
    torch.manual_seed(seed)
    height, width = size
    rng = np.random.default_rng(seed)
    mean = None
    if use_mean == "image":
        mean = rng.uniform(0, 255, (height, width, channels)).astype(np.float32)
    elif use_mean == "pixel":
        mean = rng.uniform(0, 255, (channels,)).astype(np.float32)
    pre = Preprocess(channels, height, width, resize_mode, use_mean, mean, crop)
    net = NetworkDef("custom", text, "prototxt") if text else NetworkDef(network)
    shape = (channels, *pre.input_size)
    model = net.build(classes, shape).eval()
    meta = checkpoint.snapshot_meta(
        num_classes=classes,
        in_channels=channels,
        height=shape[1],
        width=shape[2],
        labels=[f"class {i}" for i in range(classes)],
        preprocess=pre.to_dict(),
        epoch=epoch,
        iteration=10,
        metrics={},
        config={},
        **net.meta(),
    )
    job_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.save_snapshot(job_dir, model, meta)
    return job_dir


def write_images(folder: Path, mode: str = "RGB", seed: int = 0) -> list[Path]:
    """Images of several shapes and modes (wide, tall, square, with alpha, a JPEG) to test resizing and channels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i, (w, h) in enumerate([(50, 30), (30, 47), (40, 40), (77, 61)]):
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        arr[h // 3 : h // 2, :, i % 3] = 255  # some structure, so classes differ
        img = Image.fromarray(arr).convert(mode)
        path = folder / f"img{i}.png"
        img.save(path)
        out.append(path)
    rgba = rng.integers(0, 256, (33, 45, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    Image.fromarray(rng.integers(0, 256, (36, 52, 3), dtype=np.uint8)).save(folder / "photo.jpg", quality=90)
    return [*out, folder / "alpha.png", folder / "photo.jpg"]


def extract(archive: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tf:
        tf.extractall(dest, filter="data")
    return dest


def run_predict(folder: Path, images: list[Path], *flags: str) -> list[dict[str, Any]]:
    """predict.py in a fresh isolated interpreter that cannot import kiln; one JSON object per image."""
    cmd = [sys.executable, "-I", "-c", NO_KILN, str(folder / "predict.py"), *flags, *map(str, images)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=folder)
    assert res.returncode in (0, 1), res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread: None) -> None:
    """Small exports and predictions on 2 busy cores run faster on one thread."""
