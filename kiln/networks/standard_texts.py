"""kiln's standard LeNet, AlexNet and GoogLeNet: the network texts in kiln/networks/texts/.

What a student customizes ("Customize" copies the text into the editor) is exactly what the
standard network runs. Their data layers carry DIGITS' defaults: AlexNet crops 227 and GoogLeNet
224, both mirror in training.
"""

from __future__ import annotations

from torch import nn

from .prototxt import build_from_text, standard_text
from .registry import Builder, NetworkInfo, register_builder


def _text_builder(name: str) -> Builder:
    def build(num_classes: int, in_channels: int, height: int, width: int) -> nn.Module:
        module, _ = build_from_text(standard_text(name), num_classes, (in_channels, height, width))
        return module

    return build


_INFOS = (
    NetworkInfo(
        "lenet",
        "LeNet",
        "Two convolutions and two fully connected layers; the MNIST hello world.",
        "http://yann.lecun.com/exdb/publis/pdf/lecun-01a.pdf",
        1998,
        intended_size=(28, 28, 1),
        default_batch=64,
        default_val_batch=32,
        source="prototxt",
    ),
    NetworkInfo(
        "alexnet",
        "AlexNet",
        "Five convolutions and three fully connected layers; the 2012 ImageNet winner.",
        "https://papers.nips.cc/paper/4824-imagenet-classification-with-deep-convolutional-neural-networks",
        2012,
        intended_size=(256, 256, 3),
        default_batch=128,
        default_val_batch=32,
        default_crop=227,
        source="prototxt",
    ),
    NetworkInfo(
        "googlenet",
        "GoogLeNet",
        "22 layers of inception modules with two auxiliary classifiers; the 2014 ImageNet winner.",
        "https://arxiv.org/abs/1409.4842",
        2014,
        intended_size=(256, 256, 3),
        default_batch=32,
        default_val_batch=16,
        default_crop=224,
        source="prototxt",
    ),
)

for _info in _INFOS:
    register_builder(_info.name, _text_builder(_info.name), _info)
