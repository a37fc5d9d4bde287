"""One registry of networks, in the style of timm's register_model / create_model / list_models.

A builder is any plain callable ``fn(num_classes, in_channels, height, width) -> nn.Module``: the
registry does not care whether it is Python code or a network compiled from prototxt text.
``height`` and ``width`` are what the network is fed: the crop size when cropping, else the
dataset's image size. Builders raise ValueError for images too small for the network.

Module contract for every builder's result:
- input: float NCHW at raw pixel scale (0-255, mean already subtracted by the caller, as in
  DIGITS); channels_last memory format may be used;
- ``forward`` returns logits ``(N, num_classes)``;
- ``aux_weights``: a list of loss weights for auxiliary heads (``[]`` for none). A network with
  auxiliary heads returns ``(logits, aux1_logits, ...)`` in training mode and logits in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

Builder = Callable[[int, int, int, int], nn.Module]


@dataclass(frozen=True)
class NetworkInfo:
    """What the New Model page and the train loop need to know about a network before building it."""

    name: str
    label: str  # shown in the Standard Networks table
    description: str = ""
    paper_url: str = ""
    year: int | None = None
    intended_size: tuple[int, int, int] | None = None  # (H, W, C); None = any size
    default_batch: int = 16  # DIGITS' DEFAULT_BATCH_SIZE when unset
    default_val_batch: int = 16
    default_crop: int | None = None
    default_lr: float = 0.01
    default_solver: str = "SGD"
    source: str = "python"  # python | prototxt
    listed: bool = True  # False: builds old snapshots only; not offered on forms


_REGISTRY: dict[str, tuple[Builder, NetworkInfo]] = {}


def register_builder(name: str, builder: Builder, info: NetworkInfo, *, overwrite: bool = False) -> None:
    """Register ``builder`` under ``name``; ``info.name`` must be ``name``."""
    if info.name != name:
        raise ValueError(f"network info is named {info.name!r} but registered as {name!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"network {name!r} is already registered")
    _REGISTRY[name] = (builder, info)


def register_network(
    name: str,
    *,
    label: str,
    description: str = "",
    paper_url: str = "",
    year: int | None = None,
    intended_size: tuple[int, int, int] | None = None,
    default_batch: int = 16,
    default_val_batch: int = 16,
    default_crop: int | None = None,
    default_lr: float = 0.01,
    default_solver: str = "SGD",
    source: str = "python",
    listed: bool = True,
) -> Callable[[Builder], Builder]:
    """Decorator form of :func:`register_builder`; the keywords are :class:`NetworkInfo`'s fields."""
    info = NetworkInfo(
        name,
        label,
        description,
        paper_url,
        year,
        intended_size,
        default_batch,
        default_val_batch,
        default_crop,
        default_lr,
        default_solver,
        source,
        listed,
    )

    def decorate(builder: Builder) -> Builder:
        register_builder(name, builder, info)
        return builder

    return decorate


def _lookup(name: str) -> tuple[Builder, NetworkInfo]:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "(none)"
        raise KeyError(f"unknown network {name!r}; known networks: {known}") from None


def create_network(name: str, num_classes: int, in_channels: int, height: int, width: int) -> nn.Module:
    """Build a fresh, initialised network for images of ``in_channels`` x ``height`` x ``width``."""
    builder, _ = _lookup(name)
    return builder(num_classes, in_channels, height, width)


def get_network_info(name: str) -> NetworkInfo:
    return _lookup(name)[1]


def list_networks(include_unlisted: bool = False) -> list[NetworkInfo]:
    """The networks forms offer, in registration order (LeNet, AlexNet, GoogLeNet first, as DIGITS)."""
    return [info for _, info in _REGISTRY.values() if info.listed or include_unlisted]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of learned values (Caffe's count of weights and biases)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
