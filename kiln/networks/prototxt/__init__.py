"""Caffe network text (prototxt) compiled to PyTorch, in DIGITS' all-in-one form.

Public API::

    module, summary = build_from_text(text, num_classes, input_shape=(C, H, W), stage="train")
    summary = summarize(text, num_classes, input_shape, stage="deploy")   # no tensors made
    summaries = check_text(text, num_classes, input_shape)               # all three stages
    hints = data_hints(text)             # the text's batch size / crop / mirror per stage
    text = standard_text("lenet")        # kiln's own LeNet, AlexNet, GoogLeNet texts

Every problem with a text is a :class:`PrototxtError` (a ValueError) with ``line`` and ``column``.
"""

from __future__ import annotations

from importlib import resources

from .graph import (
    STAGES,
    DataHints,
    LayerRow,
    NetSummary,
    PrototxtNet,
    build_from_text,
    check_text,
    data_hints,
    included,
    summarize,
)
from .layers import LAYER_TYPES
from .parse import Msg, PrototxtError, parse_net

STANDARD_TEXTS = ("lenet", "alexnet", "googlenet")


def standard_text(name: str) -> str:
    """The text of one of kiln's standard networks (kiln/networks/texts/<name>.prototxt)."""
    if name not in STANDARD_TEXTS:
        raise KeyError(f"no standard network text {name!r}; there are: {', '.join(STANDARD_TEXTS)}")
    return resources.files("kiln.networks").joinpath("texts", f"{name}.prototxt").read_text(encoding="utf-8")


def layer_types() -> list[str]:
    """The Caffe layer types kiln builds."""
    return sorted(LAYER_TYPES)


__all__ = [
    "STAGES",
    "STANDARD_TEXTS",
    "DataHints",
    "LayerRow",
    "Msg",
    "NetSummary",
    "PrototxtError",
    "PrototxtNet",
    "build_from_text",
    "check_text",
    "data_hints",
    "included",
    "layer_types",
    "parse_net",
    "standard_text",
    "summarize",
]
