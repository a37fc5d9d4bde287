"""The train loop on network texts: Caffe's param multipliers, the text's crop and mirror, fine-tuning,
Python networks, and snapshots that rebuild from the text they recorded (kiln 0.1's too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kiln.networks.definition import CUSTOM, NetworkDef, PythonNetworksOff
from kiln.networks.prototxt import standard_text
from kiln.networks.python_network import PythonNetworkError, build_python_network, layer_table
from kiln.preprocess import effective_crop
from kiln.reporting import RecordingReporter
from kiln.training import checkpoint
from kiln.training.config import TrainConfig
from kiln.training.loop import train
from kiln.training.solvers import make_optimizer
from tests.conftest import lab_lenet_text

pytestmark = pytest.mark.usefixtures("one_thread")

LENET = standard_text("lenet")
# the MNIST lab's customized LeNet: 75 and 100 filters, one more ReLU after pool1
LAB = lab_lenet_text()  # the MNIST lab's customized LeNet
SMALL_CROP = LENET.replace(
    "data_param { batch_size: 64 }", "data_param { batch_size: 8 }\n  transform_param { crop_size: 24 mirror: true }"
)


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"train_epochs": 1, "batch_size": 8, "random_seed": 1, "use_mean": "none", **kw})


def test_the_lab_variant_is_a_text_edit_away() -> None:
    summary = NetworkDef(CUSTOM, LAB).summary(10, (1, 28, 28))
    assert summary is not None
    assert summary.layer("conv1").shapes[0] == (75, 24, 24) and summary.layer("conv2").shapes[0] == (100, 8, 8)
    assert summary.layer("relu_pool1").type == "ReLU"


def test_param_groups_follow_lr_mult_and_decay_mult() -> None:
    text = LENET.replace("param { lr_mult: 2 }", "param { lr_mult: 2 decay_mult: 0 }", 1)
    model = NetworkDef(CUSTOM, text).build(10, (1, 28, 28))
    opt = make_optimizer(model, TrainConfig(learning_rate=0.1, weight_decay=0.001))
    groups = {id(p): g for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert groups[id(params["conv1.weight"])]["lr"] == pytest.approx(0.1)
    assert groups[id(params["conv1.weight"])]["weight_decay"] == pytest.approx(0.001)
    assert groups[id(params["conv1.bias"])]["lr"] == pytest.approx(0.2)  # lr_mult 2
    assert groups[id(params["conv1.bias"])]["weight_decay"] == 0.0  # decay_mult 0
    assert groups[id(params["conv2.bias"])]["weight_decay"] == pytest.approx(0.001)  # Caffe decays biases too


def test_a_frozen_layer_does_not_learn(tiny, tmp_path: Path) -> None:
    text = LENET.replace(
        "  param { lr_mult: 1 }\n  param { lr_mult: 2 }\n  convolution_param {\n    num_output: 20",
        "  param { lr_mult: 0 }\n  param { lr_mult: 0 }\n  convolution_param {\n    num_output: 20",
        1,
    )
    assert text != LENET
    train(config(network=CUSTOM, network_text=text, learning_rate=0.05), tiny, tmp_path, RecordingReporter())
    trained = load_weights(tmp_path)
    initial = load_weights_after_zero_steps(tiny, tmp_path / "zero", text)
    assert torch.equal(trained["conv1.weight"], initial["conv1.weight"])
    assert not torch.equal(trained["conv2.weight"], initial["conv2.weight"])


def load_weights(out_dir: Path) -> dict[str, torch.Tensor]:
    model, _ = checkpoint.load_snapshot(out_dir)
    return model.state_dict()


def load_weights_after_zero_steps(tiny, out_dir: Path, text: str) -> dict[str, torch.Tensor]:
    """The initial weights of the same seeded run (learning rate 0 leaves every weight as built)."""
    train(config(network=CUSTOM, network_text=text, learning_rate=0.0), tiny, out_dir, RecordingReporter())
    return load_weights(out_dir)


def test_the_text_crop_and_mirror_apply_and_the_snapshot_records_the_text(tiny, tmp_path: Path) -> None:
    network = NetworkDef(CUSTOM, SMALL_CROP)
    assert (network.default_crop(), network.mirror(), network.default_batch()) == (24, True, 8)
    train(config(network=CUSTOM, network_text=SMALL_CROP), tiny, tmp_path, RecordingReporter())
    meta = json.loads(next(tmp_path.glob("snapshot_*.json")).read_text())
    assert meta["preprocess"]["crop_size"] == 24 and (meta["height"], meta["width"]) == (24, 24)
    assert meta["network_text"] == SMALL_CROP and meta["network"] == CUSTOM
    model, _ = checkpoint.load_snapshot(tmp_path)  # rebuilt from the recorded text
    assert model(torch.zeros(2, 1, 24, 24)).shape == (2, 3)


def test_standard_alexnet_and_googlenet_carry_digits_crop_and_mirror() -> None:
    assert (NetworkDef("alexnet").default_crop(), NetworkDef("alexnet").mirror()) == (227, True)
    assert (NetworkDef("googlenet").default_crop(), NetworkDef("googlenet").mirror()) == (224, True)
    assert (NetworkDef("lenet").default_crop(), NetworkDef("lenet").mirror()) == (None, False)
    assert NetworkDef("resnet18").source is None and NetworkDef("resnet18").default_crop() is None


def test_effective_crop_names_where_a_too_big_crop_came_from() -> None:
    assert effective_crop(None, 227, (256, 256, 3)) == 227
    assert effective_crop(200, 227, (256, 256, 3)) == 200  # the form wins
    with pytest.raises(ValueError, match="the network's crop_size .* 227 is larger than the dataset's 28x28"):
        effective_crop(None, 227, (28, 28, 1))
    with pytest.raises(ValueError, match="^crop_size 30"):
        effective_crop(30, None, (28, 28, 1))


def test_fine_tuning_keeps_matching_layers_and_names_the_fresh_ones(tiny, tiny10, tmp_path: Path) -> None:
    train(config(train_epochs=2, network="lenet"), tiny10, tmp_path / "base", RecordingReporter())
    weights = checkpoint.snapshot_paths(tmp_path / "base", 2.0)[0]
    report = RecordingReporter()
    tuned = config(network="lenet", pretrained_weights=str(weights), pretrained_from="base epoch 2", learning_rate=0.0)
    train(tuned, tiny, tmp_path / "tuned", report)
    logs = "\n".join(report.lines)
    assert (
        "Starting from the weights of base epoch 2; started fresh: ip2.weight (10x500 in the snapshot, 3x500 here), ip2.bias"
        in logs
    )
    base, now = load_weights(tmp_path / "base"), load_weights(tmp_path / "tuned")
    assert torch.equal(base["conv1.weight"], now["conv1.weight"]) and torch.equal(base["ip1.weight"], now["ip1.weight"])
    assert now["ip2.weight"].shape == (3, 500)


def test_fine_tuning_from_weights_that_fit_nothing_says_so(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"other.weight": torch.zeros(2, 2)}, str(tmp_path / "w.safetensors"))
    model = NetworkDef("lenet").build(3, (1, 28, 28))
    with pytest.raises(ValueError, match="no layer of w.safetensors fits this network"):
        checkpoint.load_matching(model, tmp_path / "w.safetensors")


def test_kiln_01_snapshots_rebuild_the_python_class(tiny, tmp_path: Path) -> None:
    """A snapshot json without network_text (kiln 0.1) loads into kiln 0.1's hand-written network."""
    train(config(network="lenet"), tiny, tmp_path, RecordingReporter())
    meta_path = next(tmp_path.glob("snapshot_*.json"))
    meta = json.loads(meta_path.read_text())
    assert NetworkDef.of_meta(meta) == NetworkDef(meta["network"], meta["network_text"])
    for key in ("network_text", "network_language"):
        meta.pop(key)
    meta_path.write_text(json.dumps(meta))
    assert NetworkDef.of_meta(meta).name == "lenet-v0"
    model, _ = checkpoint.load_snapshot(tmp_path)
    assert type(model).__name__ == "LeNet"


PYTHON_NET = """
from torch import nn


def network(num_classes, input_shape):
    channels, height, width = input_shape
    return nn.Sequential(nn.Conv2d(channels, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * (height - 2) * (width - 2), num_classes))
"""


def test_python_networks_train_and_report_their_layers(tiny, tmp_path: Path) -> None:
    train(
        config(network=CUSTOM, network_text=PYTHON_NET, network_language="python"), tiny, tmp_path, RecordingReporter()
    )
    model, meta = checkpoint.load_snapshot(tmp_path)
    assert meta["network_language"] == "python" and model(torch.zeros(1, 1, 28, 28)).shape == (1, 3)
    rows = layer_table(model, (1, 28, 28))
    assert [r["type"] for r in rows] == ["Conv2d", "ReLU", "Flatten", "Linear"]
    assert rows[0]["shapes"] == [[4, 26, 26]] and rows[-1]["params"] == 4 * 26 * 26 * 3 + 3


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("def network(num_classes, input_shape)\n    pass\n", 1, "syntax error"),
        ("x = 1\n", 0, "must define a function network"),
        ("def network(num_classes, input_shape):\n    return 3\n", 0, "must return a torch.nn.Module"),
        ("from torch import nn\ndef network(n, s):\n    return nn.Linear(5, n)\n", 0, "fails on a batch"),
        ("def network(n, s):\n    x = 1\n    raise RuntimeError('boom')\n", 3, "RuntimeError: boom"),
        ("from torch import nn\ndef network(n, s):\n    return nn.Flatten()\n", 0, "must return scores of shape"),
    ],
)
def test_python_network_errors_name_the_problem(text: str, line: int, message: str) -> None:
    with pytest.raises(PythonNetworkError, match=message) as caught:
        build_python_network(text, 3, (1, 28, 28))
    assert caught.value.line == line


def test_python_networks_are_refused_unless_allowed() -> None:
    with pytest.raises(PythonNetworksOff, match="KILN_ALLOW_PYTHON_NETWORKS=1"):
        NetworkDef(CUSTOM, PYTHON_NET, "python").build(3, (1, 28, 28), allow_python=False)
