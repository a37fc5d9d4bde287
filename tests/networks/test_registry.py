"""The registry takes any plain builder and names the known networks when asked for an unknown one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import FrozenInstanceError

import pytest
import torch
from torch import nn

import kiln.networks  # noqa: F401  (registers the standard networks)
from kiln.networks import registry
from kiln.networks.registry import (
    NetworkInfo,
    count_parameters,
    create_network,
    get_network_info,
    list_networks,
    register_builder,
    register_network,
)


@pytest.fixture
def clean_registry() -> Iterator[None]:
    saved = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)


def test_unknown_network_names_the_known_ones() -> None:
    with pytest.raises(KeyError) as excinfo:
        create_network("lenett", 10, 1, 28, 28)
    message = str(excinfo.value)
    assert "lenett" in message and "lenet" in message and "googlenet" in message
    with pytest.raises(KeyError, match="alexnet"):
        get_network_info("nope")


def test_decorator_registers_a_builder_with_its_info(clean_registry: None) -> None:
    calls = []

    @register_network(
        "tiny",
        label="Tiny",
        intended_size=(8, 8, 1),
        default_batch=4,
        default_val_batch=2,
        default_crop=None,
        default_lr=0.1,
        default_solver="ADAM",
    )
    def tiny(num_classes: int, in_channels: int, height: int, width: int) -> nn.Module:
        calls.append((num_classes, in_channels, height, width))
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * height * width, num_classes))

    model = create_network("tiny", 3, 1, 8, 8)
    assert calls == [(3, 1, 8, 8)]
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    info = get_network_info("tiny")
    assert (info.label, info.default_solver, info.default_lr, info.source) == ("Tiny", "ADAM", 0.1, "python")
    assert list_networks()[-1] is info
    with pytest.raises(FrozenInstanceError):
        info.label = "changed"  # type: ignore[misc]


def test_register_builder_takes_any_callable(clean_registry: None) -> None:
    class Compiled:  # stands for a network compiled from prototxt text
        def __call__(self, num_classes: int, in_channels: int, height: int, width: int) -> nn.Module:
            return nn.Linear(in_channels, num_classes)

    register_builder("custom", Compiled(), NetworkInfo(name="custom", label="Custom", source="prototxt"))
    assert isinstance(create_network("custom", 2, 5, 1, 1), nn.Linear)
    with pytest.raises(ValueError, match="already registered"):
        register_builder("custom", Compiled(), NetworkInfo(name="custom", label="Custom"))
    register_builder("custom", Compiled(), NetworkInfo(name="custom", label="Again"), overwrite=True)
    assert get_network_info("custom").label == "Again"
    with pytest.raises(ValueError, match="named"):
        register_builder("other", Compiled(), NetworkInfo(name="custom", label="Custom"))


def test_count_parameters() -> None:
    layer = nn.Linear(3, 2)
    assert count_parameters(layer) == 8
    layer.bias.requires_grad_(False)
    assert count_parameters(layer) == 8 and count_parameters(layer, trainable_only=True) == 6
