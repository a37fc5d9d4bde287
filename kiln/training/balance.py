"""Balancing classes of different sizes: a class-weighted loss, or balanced sampling.

``weights``: each class's loss counts N / (K * n_c), so every class weighs the same in total.
``sampling``: each epoch draws N images with replacement, each class equally likely; the draw
comes from (seed, epoch) alone, so a resumed run sees the same images as a straight one.
The dataset page suggests either when its largest class is over IMBALANCE_RATIO times its smallest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from kiln.fields import Field

BALANCE = {
    "none": "None",
    "weights": "Class-weighted loss",
    "sampling": "Balanced sampling",
}
FIELDS = {
    "balance_classes": Field(
        "balance_classes",
        "Balance classes",
        str,
        "for classes of different sizes: weight each class's loss by 1/its size, or sample every class equally often",
        choices=BALANCE,
    )
}
IMBALANCE_RATIO = 3.0  # largest / smallest class above which the dataset page suggests balancing


def class_counts(targets: np.ndarray | torch.Tensor, num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes)[:num_classes]


def loss_weights(targets: np.ndarray | torch.Tensor, num_classes: int) -> torch.Tensor:
    """N / (K * n_c) per class (K: the classes present); 0 for a class with no images."""
    counts = class_counts(targets, num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def balanced_order(seed: int, epoch: int, targets: np.ndarray | torch.Tensor) -> np.ndarray:
    """An epoch of len(targets) indices drawn with replacement, every present class equally likely."""
    y = np.asarray(targets, dtype=np.int64)
    counts = np.bincount(y)
    p = 1.0 / counts[y]
    p /= p.sum()
    return np.random.default_rng([seed, epoch, 0xBA1]).choice(len(y), size=len(y), replace=True, p=p)


def imbalance(per_class: Sequence[int]) -> float | None:
    """Largest over smallest class size (classes with images only); None for fewer than 2 such classes."""
    sizes = [int(n) for n in per_class if int(n) > 0]
    return max(sizes) / min(sizes) if len(sizes) >= 2 else None


def imbalance_hint(labels: Sequence[str], per_class: Sequence[int]) -> dict[str, Any] | None:
    """For the dataset page: the class sizes of a train split whose largest class is over
    IMBALANCE_RATIO times its smallest (classes with images only); None when balanced enough."""
    sizes = [(str(label), int(n)) for label, n in zip(labels, per_class) if int(n) > 0]
    ratio = imbalance([n for _, n in sizes])
    if ratio is None or ratio <= IMBALANCE_RATIO:
        return None
    order = sorted(sizes, key=lambda pair: pair[1])
    return {"ratio": ratio, "smallest": order[0], "largest": order[-1], "counts": sizes}


def describe(mode: str, targets: np.ndarray | torch.Tensor, num_classes: int) -> str:
    """The log's line for a balanced run: the mode and the class sizes it balances."""
    counts = class_counts(targets, num_classes)
    ratio = imbalance(counts.tolist())
    sizes = f"class sizes {int(counts.min())}-{int(counts.max())}" + (f" ({ratio:.1f}x)" if ratio else "")
    return f"Balancing classes by {BALANCE[mode].lower()}: {sizes}"
