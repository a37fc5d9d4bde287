"""The random streams of a training run: how they are seeded, and their capture and restore so
that a resumed run continues bit-exactly. States are stored as tensors and plain numbers, so
resume.pt loads with weights_only=True.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def new_seed(configured: int | None) -> int:
    """The configured seed, or a fresh one when none was set."""
    return configured if configured is not None else random.SystemRandom().randrange(2**31)


def seed_rank(seed: int, rank: int, device: torch.device) -> torch.Generator:
    """Per-rank streams: the returned generator draws crops and augmentations, torch's global
    stream drives dropout. Call after the network is built (its weights use `seed` alone)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1000 + rank)
    torch.manual_seed(seed + rank)
    return generator


def capture(generator: torch.Generator) -> dict[str, Any]:
    """This process's torch, CUDA, NumPy and Python states, and the augmentation generator's."""
    np_state: Any = np.random.get_state()  # (name, keys, pos, has_gauss, cached)
    version, internal, gauss = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [version, list(internal), gauss],
    }
    if torch.cuda.is_available() and generator.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(generator.device)
    return states


def restore(per_rank: list[dict[str, Any]], rank: int, generator: torch.Generator) -> None:
    """Put back what `capture` saw on this rank (one entry per rank of the saving run)."""
    if rank >= len(per_rank):  # resumed with more processes than before: fresh streams
        return
    s = per_rank[rank]
    torch.set_rng_state(s["torch"])
    generator.set_state(s["generator"])
    name, key, pos, has_gauss, cached = s["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = s["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in s and generator.device.type == "cuda":
        torch.cuda.set_rng_state(s["cuda"], generator.device)
