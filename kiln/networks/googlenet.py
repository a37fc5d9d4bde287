"""GoogLeNet as DIGITS' standard-networks/caffe/googlenet.prototxt (BVLC's, with both auxiliary heads).

One deliberate change: the final 7x7 average pooling is a global average pooling, which is the same
at the intended 224x224 crop and lets other image sizes train without resizing the classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from .caffe_conventions import conv_out, fill_, pool_out
from .registry import register_network


def _conv_relu(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Sequential:
    # a Sequential so that a hook on it sees the rectified blob, as Caffe's in-place ReLU leaves it
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.ReLU(inplace=True))


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)


class Inception(nn.Module):
    """Four parallel branches concatenated on channels: 1x1, 1x1-3x3, 1x1-5x5, pool-1x1."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cpool: int) -> None:
        super().__init__()
        self.b1x1 = _conv_relu(cin, c1, 1)
        self.b3x3_reduce = _conv_relu(cin, c3r, 1)
        self.b3x3 = _conv_relu(c3r, c3, 3, padding=1)
        self.b5x5_reduce = _conv_relu(cin, c5r, 1)
        self.b5x5 = _conv_relu(c5r, c5, 5, padding=2)
        self.pool = nn.MaxPool2d(3, 1, padding=1, ceil_mode=True)
        self.pool_proj = _conv_relu(cin, cpool, 1)
        self.out_channels = c1 + c3 + c5 + cpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.b1x1(x),
                self.b3x3(self.b3x3_reduce(x)),
                self.b5x5(self.b5x5_reduce(x)),
                self.pool_proj(self.pool(x)),
            ],
            1,
        )


class AuxHead(nn.Module):
    """loss1 / loss2: avg pool 5/3, conv 128@1x1, fc 1024, dropout 0.7, classifier."""

    def __init__(self, cin: int, num_classes: int, height: int, width: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(5, 3, ceil_mode=True)
        self.conv = _conv_relu(cin, 128, 1)
        self.fc = nn.Linear(128 * pool_out(height, 5, 3) * pool_out(width, 5, 3), 1024)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.7)
        self.classifier = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.pool(x)), 1)
        return self.classifier(self.drop(self.relu(self.fc(x))))


def _size_at_4a(size: int) -> int:
    """Spatial size entering inception 4a (14 for a 224 crop)."""
    size = pool_out(conv_out(size, 7, 2, 3), 3, 2)  # conv1, pool1
    return pool_out(pool_out(size, 3, 2), 3, 2)  # pool2, pool3


class GoogLeNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, height: int = 224, width: int = 224) -> None:
        super().__init__()
        h, w = _size_at_4a(height), _size_at_4a(width)
        if min(h, w) < 5:  # the auxiliary heads' 5x5 pooling
            raise ValueError(f"GoogLeNet needs images of at least 79x79 pixels, got {height}x{width}")
        self.aux_weights = [0.3, 0.3]
        self.conv1 = _conv_relu(in_channels, 64, 7, 2, 3)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.norm1 = _lrn()
        self.conv2_reduce = _conv_relu(64, 64, 1)
        self.conv2 = _conv_relu(64, 192, 3, padding=1)
        self.norm2 = _lrn()
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception_3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception_3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.pool3 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception_4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.aux1 = AuxHead(512, num_classes, h, w)
        self.inception_4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception_4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception_4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.aux2 = AuxHead(528, num_classes, h, w)
        self.inception_4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.pool4 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.inception_5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception_5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.pool5 = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.4)
        self.classifier = nn.Linear(1024, num_classes)
        self._init_caffe()

    def _init_caffe(self) -> None:
        """The prototxt's fillers: xavier everywhere, bias 0.2, classifiers' bias 0."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fill_(module, "xavier", 0.2)
        for classifier in (self.classifier, self.aux1.classifier, self.aux2.classifier):
            fill_(classifier, "xavier", 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        x = self.norm1(self.pool1(self.conv1(x)))
        x = self.pool2(self.norm2(self.conv2(self.conv2_reduce(x))))
        x = self.pool3(self.inception_3b(self.inception_3a(x)))
        x = self.inception_4a(x)
        aux1 = self.aux1(x) if self.training else None
        x = self.inception_4d(self.inception_4c(self.inception_4b(x)))
        aux2 = self.aux2(x) if self.training else None
        x = self.pool4(self.inception_4e(x))
        x = self.inception_5b(self.inception_5a(x))
        logits = self.classifier(self.drop(torch.flatten(self.pool5(x), 1)))
        if self.training:
            return logits, aux1, aux2
        return logits


# kiln 0.1 trained this hand-written GoogLeNet; snapshots saved before the network texts (no
# "network_text" in their json) are rebuilt with it. New jobs run kiln/networks/texts/googlenet.prototxt.
@register_network("googlenet-v0", label="GoogLeNet (kiln 0.1, Python)", listed=False)
def googlenet_v0(num_classes: int, in_channels: int, height: int, width: int) -> nn.Module:
    return GoogLeNet(num_classes, in_channels, height, width)
