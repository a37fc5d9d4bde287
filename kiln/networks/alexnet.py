"""AlexNet as DIGITS' standard-networks/caffe/alexnet.prototxt (BVLC's, with grouped convolutions)."""

from __future__ import annotations

import torch
from torch import nn

from .caffe_conventions import conv_out, fill_, pool_out
from .registry import register_network


def _feature_size(size: int) -> int:
    """Spatial size entering fc6: conv1 11/4, pool, conv2 (same), pool, conv3-5 (same), pool."""
    return pool_out(pool_out(pool_out(conv_out(size, 11, 4), 3, 2), 3, 2), 3, 2)


def _lrn() -> nn.LocalResponseNorm:
    # Caffe's LRN(local_size 5, alpha 1e-4, beta 0.75, k 1) divides alpha by the size, as PyTorch does
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


class AlexNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, height: int = 227, width: int = 227) -> None:
        super().__init__()
        if min(height, width) < 55:  # every 3x3 pooling needs at least a 3x3 input
            raise ValueError(f"AlexNet needs images of at least 55x55 pixels, got {height}x{width}")
        self.aux_weights: list[float] = []
        self.features = nn.Sequential()
        layers = self.features
        layers.add_module("conv1", nn.Conv2d(in_channels, 96, 11, stride=4))
        layers.add_module("relu1", nn.ReLU(inplace=True))
        layers.add_module("norm1", _lrn())
        layers.add_module("pool1", nn.MaxPool2d(3, 2, ceil_mode=True))
        layers.add_module("conv2", nn.Conv2d(96, 256, 5, padding=2, groups=2))
        layers.add_module("relu2", nn.ReLU(inplace=True))
        layers.add_module("norm2", _lrn())
        layers.add_module("pool2", nn.MaxPool2d(3, 2, ceil_mode=True))
        layers.add_module("conv3", nn.Conv2d(256, 384, 3, padding=1))
        layers.add_module("relu3", nn.ReLU(inplace=True))
        layers.add_module("conv4", nn.Conv2d(384, 384, 3, padding=1, groups=2))
        layers.add_module("relu4", nn.ReLU(inplace=True))
        layers.add_module("conv5", nn.Conv2d(384, 256, 3, padding=1, groups=2))
        layers.add_module("relu5", nn.ReLU(inplace=True))
        layers.add_module("pool5", nn.MaxPool2d(3, 2, ceil_mode=True))
        h, w = _feature_size(height), _feature_size(width)
        self.classifier = nn.Sequential()
        head = self.classifier
        head.add_module("fc6", nn.Linear(256 * h * w, 4096))
        head.add_module("relu6", nn.ReLU(inplace=True))
        head.add_module("drop6", nn.Dropout(0.5))
        head.add_module("fc7", nn.Linear(4096, 4096))
        head.add_module("relu7", nn.ReLU(inplace=True))
        head.add_module("drop7", nn.Dropout(0.5))
        head.add_module("fc8", nn.Linear(4096, num_classes))
        self._init_caffe()

    def _init_caffe(self) -> None:
        """The prototxt's fillers: gaussian std 0.01 (fc6/fc7 0.005), bias 0 or 0.1."""
        f, c = self.features, self.classifier
        for layer, std, bias in (
            (f.conv1, 0.01, 0.0),
            (f.conv2, 0.01, 0.1),
            (f.conv3, 0.01, 0.0),
            (f.conv4, 0.01, 0.1),
            (f.conv5, 0.01, 0.1),
            (c.fc6, 0.005, 0.1),
            (c.fc7, 0.005, 0.1),
            (c.fc8, 0.01, 0.0),
        ):
            fill_(layer, std, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


# kiln 0.1 trained this hand-written AlexNet; snapshots saved before the network texts (no
# "network_text" in their json) are rebuilt with it. New jobs run kiln/networks/texts/alexnet.prototxt.
@register_network("alexnet-v0", label="AlexNet (kiln 0.1, Python)", listed=False)
def alexnet_v0(num_classes: int, in_channels: int, height: int, width: int) -> nn.Module:
    return AlexNet(num_classes, in_channels, height, width)
