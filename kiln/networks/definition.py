"""What network a job trains, as one value: a standard network's name, or a network text.

A :class:`NetworkDef` is read from a TrainConfig (``network``, ``network_text``,
``network_language``) or from a snapshot's json, and is what the train loop, the model form, the
Visualize button and inference build from. Standard networks written as text (LeNet, AlexNet,
GoogLeNet) and custom prototxt texts share every rule here: their data layers' crop and mirror
are the training defaults, and their layers are listed for the model page.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from torch import nn

from .prototxt import STANDARD_TEXTS, DataHints, NetSummary, build_from_text, data_hints, standard_text, summarize
from .python_network import PythonNetworkError, build_python_network
from .registry import NetworkInfo, create_network, get_network_info

CUSTOM = "custom"  # the network name of a job whose network is its own text
LANGUAGES = {"prototxt": "Caffe prototxt", "python": "Python"}
TEXT_FILES = {"prototxt": "network.prototxt", "python": "network.py"}
MAX_TEXT_CHARS = 1_000_000  # GoogLeNet's text is about 40,000


class PythonNetworksOff(PythonNetworkError):
    """A Python network on a server that does not allow running users' code."""

    def __init__(self) -> None:
        super().__init__(
            "Python networks run arbitrary code on the server, so they are off; an administrator can allow "
            "them by starting kiln with KILN_ALLOW_PYTHON_NETWORKS=1"
        )


@dataclass(frozen=True)
class NetworkDef:
    name: str = "lenet"  # a registered network, or CUSTOM
    text: str = ""  # the custom network's text; "" for a registered network
    language: str = "prototxt"  # of the text: prototxt | python

    @classmethod
    def of_config(cls, config: Any) -> NetworkDef:
        return cls(config.network, config.network_text, config.network_language or "prototxt")

    @classmethod
    def of_dict(cls, config: dict[str, Any]) -> NetworkDef:
        """From a job's stored config (``job.params["config"]``)."""
        return cls(
            config.get("network", "lenet"),
            config.get("network_text") or "",
            config.get("network_language") or "prototxt",
        )

    @classmethod
    def of_meta(cls, meta: dict[str, Any]) -> NetworkDef:
        """From a snapshot's json; snapshots from before network texts rebuild kiln 0.1's Python class."""
        if "network_text" not in meta and meta["network"] in STANDARD_TEXTS:
            return cls(f"{meta['network']}-v0")
        return cls(meta["network"], meta.get("network_text") or "", meta.get("network_language") or "prototxt")

    # -- the text -----------------------------------------------------------------------------------
    @property
    def source(self) -> str | None:
        """The text that runs: the custom text, a standard network's own text, or None (Python classes)."""
        if self.text:
            return self.text
        return standard_text(self.name) if self.name in STANDARD_TEXTS else None

    @property
    def is_prototxt(self) -> bool:
        return self.source is not None and (self.language == "prototxt" or not self.text)

    @property
    def text_file(self) -> str | None:
        """The file name kiln writes the text to in a model's folder."""
        return TEXT_FILES["python" if self.text and self.language == "python" else "prototxt"] if self.source else None

    # -- what the data layers ask for -------------------------------------------------------------
    def hints(self) -> dict[str, DataHints]:
        source = self.source
        return _hints(source) if source is not None and self.is_prototxt else {}

    def default_crop(self) -> int | None:
        """The crop the train data layer asks for (DIGITS' AlexNet 227, GoogLeNet 224); None for none."""
        return self.hints().get("train", DataHints()).crop_size

    def mirror(self) -> bool:
        """Whether training flips images left-right at random (the train data layer's ``mirror``)."""
        return self.hints().get("train", DataHints()).mirror

    def default_batch(self) -> int:
        batch = self.hints().get("train", DataHints()).batch_size
        if batch:
            return batch
        return get_network_info(self.name).default_batch if self.name != CUSTOM else 16

    def default_val_batch(self) -> int:
        batch = self.hints().get("val", DataHints()).batch_size
        if batch:
            return batch
        return get_network_info(self.name).default_val_batch if self.name != CUSTOM else 16

    def info(self) -> NetworkInfo:
        """The registry's info with this text's data-layer defaults (batch sizes, crop)."""
        base = get_network_info(self.name) if self.name != CUSTOM else NetworkInfo(CUSTOM, "Custom network")
        return NetworkInfo(
            base.name,
            base.label,
            default_batch=self.default_batch(),
            default_val_batch=self.default_val_batch(),
            default_crop=self.default_crop(),
            source="prototxt" if self.is_prototxt else "python",
        )

    # -- building -------------------------------------------------------------------------------------
    def build(
        self, num_classes: int, shape: tuple[int, int, int], *, allow_python: bool = True, device: str = "cpu"
    ) -> nn.Module:
        """A fresh network for ``shape`` (C, H, W) inputs; PrototxtError / PythonNetworkError / ValueError."""
        if not self.text:
            return create_network(self.name, num_classes, *shape)
        if self.language == "python":
            if not allow_python:
                raise PythonNetworksOff()
            return build_python_network(self.text, num_classes, shape)
        module, _ = build_from_text(self.text, num_classes, shape, device=device)
        return module

    def check(self, num_classes: int, shape: tuple[int, int, int], *, allow_python: bool) -> NetSummary | None:
        """Raise the problem a job would meet building this network; the train stage's summary."""
        if self.is_prototxt:
            return self.summary(num_classes, shape)
        self.build(num_classes, shape, allow_python=allow_python, device="meta")
        return None

    def summary(self, num_classes: int, shape: tuple[int, int, int], stage: str = "train") -> NetSummary | None:
        """Every layer with its output shape and parameters (prototxt networks; None for Python ones)."""
        source = self.source
        if source is None or not self.is_prototxt:
            return None
        return summarize(source, num_classes, shape, stage)

    def meta(self) -> dict[str, Any]:
        """What a snapshot's json records so that it rebuilds without kiln's current texts."""
        return {"network": self.name, "network_text": self.source or "", "network_language": self.language}


@functools.lru_cache(maxsize=64)  # crop, mirror and batch sizes all ask; parse a text once
def _hints(text: str) -> dict[str, DataHints]:
    return data_hints(text)
