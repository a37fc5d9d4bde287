"""Every registered network builds, runs forward and backward, and matches DIGITS' layer facts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kiln.networks  # noqa: F401  (registers the standard networks)
from kiln.networks.registry import count_parameters, create_network, get_network_info, list_networks

# the smallest input of the networks that have one; the forward + backward test uses it to stay quick
# (the network texts use Caffe's ceil rounding of pooled sizes; kiln 0.1's Python classes floor some)
SMALLEST = {"lenet": 13, "alexnet": 39, "googlenet": 47, "lenet-v0": 13, "alexnet-v0": 55, "googlenet-v0": 79}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_standard_networks_are_registered_in_digits_order() -> None:
    names = [info.name for info in list_networks()]
    assert names[:4] == ["lenet", "alexnet", "googlenet", "resnet18"]


@pytest.mark.parametrize("name", [info.name for info in list_networks(include_unlisted=True)])
def test_every_network_trains_a_step_in_channels_last(name: str) -> None:
    size = SMALLEST.get(name, 16)
    torch.manual_seed(0)
    model = create_network(name, 7, 3, size, size).to(memory_format=torch.channels_last)
    x = (torch.rand(2, 3, size, size) * 255 - 128).to(memory_format=torch.channels_last)
    model.train()
    out = model(x)
    heads = out if isinstance(out, tuple) else (out,)
    assert len(heads) == 1 + len(model.aux_weights)
    assert all(h.shape == (2, 7) for h in heads)
    loss = sum(
        w * nn.functional.cross_entropy(h, torch.tensor([1, 4])) for w, h in zip([1.0, *model.aux_weights], heads)
    )
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 7)


@pytest.mark.parametrize("name", sorted(SMALLEST))
def test_networks_reject_too_small_images(name: str) -> None:
    size = SMALLEST[name]
    with pytest.raises(ValueError, match="at least|gives 0x0"):
        model = create_network(name, 3, 1, size - 1, size - 1)
        model(torch.zeros(1, 1, size - 1, size - 1))


def test_lenet_is_digits_lenet() -> None:
    model = create_network("lenet-v0", 10, 1, 28, 28)
    assert count_parameters(model) == 431_080
    assert [count_parameters(m) for m in (model.conv1, model.conv2, model.ip1, model.ip2)] == [
        520,
        25_050,
        400_500,
        5_010,
    ]
    assert model.scale.scale == 0.0125
    assert model.aux_weights == []
    # Caffe's xavier: uniform within sqrt(3 / fan_in), biases 0
    bound = (3 / 800) ** 0.5
    assert model.ip1.weight.abs().max() <= bound and model.ip1.weight.abs().max() > 0.9 * bound
    assert model.ip1.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.02)
    assert all((m.bias == 0).all() for m in (model.conv1, model.conv2, model.ip1, model.ip2))


def test_lenet_scales_its_input_like_digits_power_layer() -> None:
    model = create_network("lenet-v0", 10, 1, 28, 28).eval()
    x = torch.rand(3, 1, 28, 28) * 255
    expected = model.ip2(
        torch.relu(model.ip1(torch.flatten(model.pool2(model.conv2(model.pool1(model.conv1(x * 0.0125)))), 1)))
    )
    torch.testing.assert_close(model(x), expected)


def test_lenet_takes_other_sizes_and_colour() -> None:
    model = create_network("lenet-v0", 4, 3, 32, 40)
    assert model.ip1.in_features == 50 * 5 * 7  # 32 -> 28 -> 14 -> 10 -> 5; 40 -> 36 -> 18 -> 14 -> 7
    assert model(torch.zeros(2, 3, 32, 40)).shape == (2, 4)


def test_lenet_channels_last_matches_contiguous() -> None:
    model = create_network("lenet", 10, 1, 28, 28).eval()
    x = torch.rand(4, 1, 28, 28) * 255
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected)


def test_alexnet_is_digits_alexnet() -> None:
    model = create_network("alexnet-v0", 1000, 3, 227, 227)
    assert count_parameters(model) == 60_965_224
    f, c = model.features, model.classifier
    assert c.fc6.in_features == 256 * 6 * 6
    assert (f.conv1.out_channels, f.conv1.kernel_size, f.conv1.stride) == (96, (11, 11), (4, 4))
    assert (f.conv2.groups, f.conv4.groups, f.conv5.groups) == (2, 2, 2)
    norm = f.norm1
    assert (norm.size, norm.alpha, norm.beta, norm.k) == (5, 1e-4, 0.75, 1.0)
    assert [m.p for m in c if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    # Caffe fillers: gaussian 0.01 (fc6/fc7 0.005), bias 0 or 0.1
    assert f.conv1.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert c.fc6.weight.std().item() == pytest.approx(0.005, rel=0.01)
    assert [
        float(layer.bias.detach()[0]) for layer in (f.conv1, f.conv2, f.conv3, f.conv4, f.conv5, c.fc6, c.fc7, c.fc8)
    ] == pytest.approx([0, 0.1, 0, 0.1, 0.1, 0.1, 0.1, 0])


def test_googlenet_is_digits_googlenet() -> None:
    model = create_network("googlenet-v0", 1000, 3, 224, 224)
    aux = count_parameters(model.aux1) + count_parameters(model.aux2)
    assert count_parameters(model) == 13_378_280
    assert count_parameters(model) - aux == 6_998_552  # deploy: ~7.0 M
    assert model.aux_weights == [0.3, 0.3]
    assert model.aux1.fc.in_features == 128 * 4 * 4  # 14x14 after 4a, avg pool 5/3 -> 4x4
    counts = {
        name: (
            m.b1x1[0].out_channels,
            m.b3x3_reduce[0].out_channels,
            m.b3x3[0].out_channels,
            m.b5x5_reduce[0].out_channels,
            m.b5x5[0].out_channels,
            m.pool_proj[0].out_channels,
        )
        for name, m in model.named_children()
        if name.startswith("inception")
    }
    assert counts["inception_3a"] == (64, 96, 128, 16, 32, 32)
    assert counts["inception_4d"] == (112, 144, 288, 32, 64, 64)
    assert counts["inception_5b"] == (384, 192, 384, 48, 128, 128)
    assert model.drop.p == 0.4 and model.aux1.drop.p == 0.7
    assert float(model.inception_4a.b1x1[0].bias.detach()[0]) == pytest.approx(0.2)
    assert float(model.classifier.bias.detach().abs().max()) == 0


def test_googlenet_shapes_at_the_intended_crop() -> None:
    model = create_network("googlenet-v0", 5, 3, 224, 224)
    shapes = {}
    hooks = [
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: shapes.__setitem__(name, o.shape))
        for name in ("pool1", "pool2", "inception_3b", "pool3", "inception_4e", "pool4", "inception_5b")
    ]
    with torch.no_grad():
        assert model.train()(torch.zeros(1, 3, 224, 224))[1].shape == (1, 5)
    for hook in hooks:
        hook.remove()
    assert shapes == {
        "pool1": (1, 64, 56, 56),
        "pool2": (1, 192, 28, 28),
        "inception_3b": (1, 480, 28, 28),
        "pool3": (1, 480, 14, 14),
        "inception_4e": (1, 832, 14, 14),
        "pool4": (1, 832, 7, 7),
        "inception_5b": (1, 1024, 7, 7),
    }


def test_resnet_adapts_its_stem_to_small_images() -> None:
    small = create_network("resnet18", 10, 1, 28, 28)
    large = create_network("resnet18", 1000, 3, 224, 224)
    assert small.stem[0].kernel_size == (3, 3) and not any(isinstance(m, nn.MaxPool2d) for m in small.stem)
    assert large.stem[0].kernel_size == (7, 7) and isinstance(large.stem[-1], nn.MaxPool2d)
    assert count_parameters(large) == 11_689_512  # the ResNet-18 of the paper
    assert small(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_network_info_carries_digits_defaults() -> None:
    lenet, alexnet, googlenet = (get_network_info(n) for n in ("lenet", "alexnet", "googlenet"))
    assert (lenet.intended_size, lenet.default_batch, lenet.default_val_batch, lenet.default_crop) == (
        (28, 28, 1),
        64,
        32,
        None,
    )
    assert (alexnet.intended_size, alexnet.default_batch, alexnet.default_val_batch, alexnet.default_crop) == (
        (256, 256, 3),
        128,
        32,
        227,
    )
    assert (googlenet.intended_size, googlenet.default_batch, googlenet.default_val_batch, googlenet.default_crop) == (
        (256, 256, 3),
        32,
        16,
        224,
    )
    assert all(info.label and info.paper_url and info.year for info in list_networks())
