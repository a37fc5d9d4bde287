"""Caffe conventions the standard networks follow: weight fillers and output-size arithmetic."""

from __future__ import annotations

import math
from typing import Any

import torch


def fan_in(weight: torch.Tensor) -> int:
    """Caffe's fan_in: count / num_output, i.e. input channels (per group) x kernel area."""
    return weight[0].numel()


@torch.no_grad()
def xavier_(weight: torch.Tensor) -> torch.Tensor:
    """Caffe "xavier" (variance_norm FAN_IN): uniform in +-sqrt(3 / fan_in)."""
    bound = math.sqrt(3.0 / fan_in(weight))
    return weight.uniform_(-bound, bound)


@torch.no_grad()
def fill_(layer: Any, weight: str | float, bias: float = 0.0) -> None:
    """Fill ``layer``: ``weight`` is "xavier" or the std of Caffe's "gaussian" filler; bias constant."""
    w, b = layer.weight, getattr(layer, "bias", None)
    assert isinstance(w, torch.Tensor), f"{type(layer).__name__} has no weight to fill"
    if weight == "xavier":
        xavier_(w)
    else:
        w.normal_(0.0, float(weight))
    if isinstance(b, torch.Tensor):
        b.fill_(bias)


def conv_out(size: int, kernel: int, stride: int = 1, pad: int = 0) -> int:
    """Caffe convolution output size (rounds down)."""
    return (size + 2 * pad - kernel) // stride + 1


def pool_out(size: int, kernel: int, stride: int = 1, pad: int = 0) -> int:
    """Caffe pooling output size: rounds up, but the last window must start inside the image."""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out
