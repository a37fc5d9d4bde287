"""kiln's own LeNet, AlexNet and GoogLeNet texts: DIGITS' parameter counts, the same functions as the
hand-written networks, and the lab's customized LeNet."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import kiln.networks  # noqa: F401  (registers the hand-written networks)
from kiln.networks.prototxt import STANDARD_TEXTS, build_from_text, check_text, standard_text, summarize
from kiln.networks.registry import count_parameters, create_network

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("name", "classes", "shape", "count"),
    [
        ("lenet", 10, (1, 28, 28), 431_080),
        ("alexnet", 1000, (3, 227, 227), 60_965_224),
        ("googlenet", 1000, (3, 224, 224), 13_378_280),
    ],
)
def test_standard_texts_build_to_digits_parameter_counts(
    name: str, classes: int, shape: tuple[int, int, int], count: int
) -> None:
    text = standard_text(name)
    summaries = check_text(text, classes, shape)
    assert summaries["train"].total_params == count
    assert summaries["val"].total_params == count
    model, _ = build_from_text(text, classes, shape, device="meta")
    assert count_parameters(model) == count


def test_parameter_counts_per_layer() -> None:
    lenet = summarize(standard_text("lenet"), 10, (1, 28, 28))
    assert [lenet.layer(n).params for n in ("conv1", "conv2", "ip1", "ip2")] == [520, 25_050, 400_500, 5_010]
    alexnet = summarize(standard_text("alexnet"), 1000, (3, 227, 227))
    assert alexnet.layer("fc6").params == 37_752_832
    assert [alexnet.layer(n).shapes[0] for n in ("conv1", "pool1", "conv2", "pool2", "conv5", "pool5")] == [
        (96, 55, 55),
        (96, 27, 27),
        (256, 27, 27),
        (256, 13, 13),
        (256, 13, 13),
        (256, 6, 6),
    ]
    googlenet = check_text(standard_text("googlenet"), 1000, (3, 224, 224))
    assert googlenet["deploy"].total_params == 6_998_552  # no auxiliary heads: ~7.0 M
    train = googlenet["train"]
    assert train.heads == (("loss3/classifier", 1.0), ("loss1/classifier", 0.3), ("loss2/classifier", 0.3))
    shapes = {row.name: row.shapes[0] for row in train.layers if row.shapes}
    assert shapes["conv1/7x7_s2"] == (64, 112, 112) and shapes["pool1/3x3_s2"] == (64, 56, 56)
    assert shapes["inception_3a/output"] == (256, 28, 28) and shapes["inception_3b/output"] == (480, 28, 28)
    assert shapes["inception_4a/output"] == (512, 14, 14) and shapes["inception_4e/output"] == (832, 14, 14)
    assert shapes["inception_5b/output"] == (1024, 7, 7) and shapes["pool5/7x7_s1"] == (1024, 1, 1)
    assert shapes["loss1/ave_pool"] == (512, 4, 4) and shapes["loss2/ave_pool"] == (528, 4, 4)


def test_every_standard_text_trains_a_step_on_its_smallest_input() -> None:
    for name, size in zip(STANDARD_TEXTS, (13, 55, 79)):
        torch.manual_seed(0)
        model, summary = build_from_text(standard_text(name), 7, (3, size, size))
        model.train()
        out = model(torch.rand(2, 3, size, size) * 255 - 128)
        heads = out if isinstance(out, tuple) else (out,)
        assert len(heads) == 1 + len(model.aux_weights) == len(summary.heads)
        loss = sum(w * nn.functional.cross_entropy(h, torch.tensor([1, 4])) for w, h in zip(model.loss_weights, heads))
        assert isinstance(loss, torch.Tensor)
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        model.eval()
        with torch.no_grad():
            assert model(torch.zeros(1, 3, size, size)).shape == (1, 7)


def _copy(src: nn.Module, dst: nn.Module, names: dict[str, str]) -> None:
    """Load src's weights into dst, renaming src's module prefixes by ``names``."""
    state = {}
    for key, value in src.state_dict().items():
        prefix, _, attr = key.rpartition(".")
        state[f"{names[prefix]}.{attr}"] = value
    dst.load_state_dict(state)


def test_lenet_text_is_the_hand_written_lenet() -> None:
    python = create_network("lenet-v0", 10, 1, 28, 28).eval()
    model, _ = build_from_text(standard_text("lenet"), 10, (1, 28, 28))
    model.load_state_dict(python.state_dict())  # the same parameter names
    model.eval()
    x = torch.rand(4, 1, 28, 28) * 255
    torch.testing.assert_close(model(x), python(x))


def test_alexnet_text_is_the_hand_written_alexnet() -> None:
    python = create_network("alexnet-v0", 6, 3, 67, 67).eval()
    model, _ = build_from_text(standard_text("alexnet"), 6, (3, 67, 67))
    names = {
        f"{part}.{n}": n
        for part in ("features", "classifier")
        for n in (["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"])
    }
    _copy(python, model, names)
    model.eval()
    x = torch.rand(2, 3, 67, 67) * 255 - 128
    torch.testing.assert_close(model(x), python(x), rtol=1e-4, atol=1e-5)


def test_googlenet_text_is_the_hand_written_googlenet_with_its_aux_heads() -> None:
    size = 96
    python = create_network("googlenet-v0", 5, 3, size, size)
    model, _ = build_from_text(standard_text("googlenet"), 5, (3, size, size))
    names = {
        "conv1.0": "conv1/7x7_s2",
        "conv2_reduce.0": "conv2/3x3_reduce",
        "conv2.0": "conv2/3x3",
        "classifier": "loss3/classifier",
    }
    branches = {"b1x1": "1x1", "b3x3_reduce": "3x3_reduce", "b3x3": "3x3", "b5x5_reduce": "5x5_reduce", "b5x5": "5x5"}
    for block in ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"):
        for ours, theirs in [*branches.items(), ("pool_proj", "pool_proj")]:
            names[f"inception_{block}.{ours}.0"] = f"inception_{block}/{theirs}"
    for k in (1, 2):
        names.update(
            {
                f"aux{k}.conv.0": f"loss{k}/conv",
                f"aux{k}.fc": f"loss{k}/fc",
                f"aux{k}.classifier": f"loss{k}/classifier",
            }
        )
    _copy(python, model, names)
    x = torch.rand(2, 3, size, size) * 255 - 128
    python.eval(), model.eval()
    torch.testing.assert_close(model(x), python(x), rtol=1e-4, atol=1e-4)
    # training: the same three heads, dropout drawing the same masks in the same order
    python.train(), model.train()
    torch.manual_seed(1)
    theirs = python(x)
    torch.manual_seed(1)
    ours = model(x)
    assert model.aux_weights == python.aux_weights == [0.3, 0.3]
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # deploy keeps the main head's weights only
    deploy, _ = build_from_text(standard_text("googlenet"), 5, (3, size, size), "deploy")
    missing, unexpected = deploy.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and unexpected and all(k.startswith(("loss1/", "loss2/")) for k in unexpected)
    deploy.eval(), model.eval()
    torch.testing.assert_close(deploy(x), model(x))


LAB = (
    standard_text("lenet")
    .replace("num_output: 20", "num_output: 75")
    .replace("num_output: 50\n", "num_output: 100\n")
    .replace(
        'layer {\n  name: "conv2"',
        'layer {\n  name: "relu_pool1"\n  type: "ReLU"\n  bottom: "pool1"\n  top: "pool1"\n}\n\nlayer {\n  name: "conv2"',
    )
)


def test_the_labs_customized_lenet_builds_and_trains_a_step() -> None:
    torch.manual_seed(0)
    model, summary = build_from_text(LAB, 10, (1, 28, 28))
    shapes = {row.name: row.shapes[0] for row in summary.layers if row.shapes}
    assert shapes["conv1"] == (75, 24, 24) and shapes["relu_pool1"] == (75, 12, 12) and shapes["conv2"] == (100, 8, 8)
    assert [row.name for row in summary.layers][3:6] == ["pool1", "relu_pool1", "conv2"]
    assert summary.total_params == (75 * 25 + 75) + (100 * 75 * 25 + 100) + (1600 * 500 + 500) + 5010
    assert model.relu_pool1.inplace  # pool1 is read by the ReLU only
    x, y = torch.rand(16, 1, 28, 28) * 255, torch.arange(16) % 10
    groups = [
        {"params": g["params"], "lr": 1e-4 * g["lr_mult"], "weight_decay": 1e-4 * g["decay_mult"]}
        for g in model.multiplier_groups()
    ]
    optimizer = torch.optim.SGD(groups, momentum=0.9)
    before = model.conv1.weight.detach().clone()
    model.train()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    assert torch.isfinite(loss)
    optimizer.step()
    assert not torch.equal(before, model.conv1.weight)
    model.eval()
    with torch.no_grad():
        assert nn.functional.cross_entropy(model(x), y) < loss  # a small step down the gradient helps that batch
