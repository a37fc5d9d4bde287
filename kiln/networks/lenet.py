"""LeNet exactly as DIGITS' standard-networks/caffe/lenet.prototxt."""

from __future__ import annotations

import torch
from torch import nn

from .caffe_conventions import conv_out, fill_, pool_out
from .registry import register_network


class Scale(nn.Module):
    """Caffe's Power layer with power 1 and shift 0: a fixed multiply (DIGITS: 0.0125 ~ 1/std of MNIST)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def _pooled(size: int) -> int:
    """Spatial size after conv 5x5 and max pool 2/2."""
    return pool_out(conv_out(size, 5), 2, 2)


class LeNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 1, height: int = 28, width: int = 28) -> None:
        super().__init__()
        if min(height, width) < 13:  # conv2 needs a 5x5 input after conv1 and pool1
            raise ValueError(f"LeNet needs images of at least 13x13 pixels, got {height}x{width}")
        h, w = _pooled(_pooled(height)), _pooled(_pooled(width))
        self.aux_weights: list[float] = []
        self.scale = Scale(0.0125)
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.ip1 = nn.Linear(50 * h * w, 500)
        self.relu1 = nn.ReLU(inplace=True)
        self.ip2 = nn.Linear(500, num_classes)
        for layer in (self.conv1, self.conv2, self.ip1, self.ip2):
            fill_(layer, "xavier")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(self.scale(x)))
        x = self.pool2(self.conv2(x))
        # flatten in Caffe's C,H,W order so weights stay interchangeable with Caffe's ip1
        x = torch.flatten(x, 1)
        return self.ip2(self.relu1(self.ip1(x)))


# kiln 0.1 trained this hand-written LeNet; snapshots saved before the network texts (no
# "network_text" in their json) are rebuilt with it. New jobs run kiln/networks/texts/lenet.prototxt.
@register_network("lenet-v0", label="LeNet (kiln 0.1, Python)", listed=False)
def lenet_v0(num_classes: int, in_channels: int, height: int, width: int) -> nn.Module:
    return LeNet(num_classes, in_channels, height, width)
