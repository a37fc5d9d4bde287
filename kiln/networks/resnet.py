"""ResNet-18 with batch norm: the modern baseline DIGITS never had.

The stem adapts to the image: for images of at most 64 pixels (MNIST, CIFAR) a 3x3 stride-1
convolution without max pooling, so that 28x28 digits are not shrunk to 1x1 by the first layers;
for larger images the usual 7x7 stride-2 convolution and 3x3 max pooling.

Defaults: SGD (momentum 0.9) at learning rate 0.1, the setting batch-normalised ResNets are
trained with; kiln's step policy and weight decay (DIGITS: lr / 100 = 1e-3) work well with it.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_network


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut; a strided 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        height: int = 224,
        width: int = 224,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        self.aux_weights: list[float] = []
        if min(height, width) <= 64:
            stem = [nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
        else:
            stem = [
                nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            ]
        self.stem = nn.Sequential(*stem)
        stages, cin = [], 64
        for i, count in enumerate(blocks):
            cout = 64 * 2**i
            stage = [BasicBlock(cin, cout, 1 if i == 0 else 2)] + [BasicBlock(cout, cout) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            # each residual branch starts as identity, which makes early training stable
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_network(
    "resnet18",
    label="ResNet-18",
    description="18 layers with residual connections and batch norm; adapts its stem to small images.",
    paper_url="https://arxiv.org/abs/1512.03385",
    year=2015,
    intended_size=(224, 224, 3),
    default_batch=64,
    default_val_batch=32,
    default_crop=None,
    default_lr=0.1,
    default_solver="SGD",
)
def resnet18(num_classes: int, in_channels: int, height: int, width: int) -> nn.Module:
    return ResNet(num_classes, in_channels, height, width)
