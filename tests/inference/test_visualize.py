"""Classify one's visualizations: every layer's real activations and weights, their statistics,
pictures and parameter counts, and Grad-CAM, for LeNet (a network text) and a Python network."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from kiln.inference.predictor import Predictor
from kiln.inference.visualize import VALUES_LUT, _inspector, _layer_view, _panel, visualize
from kiln.networks.definition import CUSTOM, NetworkDef
from kiln.preprocess import Preprocess
from kiln.reporting import RecordingReporter
from kiln.training import checkpoint
from kiln.training.config import TrainConfig
from kiln.training.loop import train
from tests.training.conftest import make_dataset

LENET = ["scale", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2"]


@pytest.fixture(scope="module")
def lenet(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> tuple[Predictor, np.ndarray, Path]:
    """LeNet trained one epoch on 3 classes of 28x28 grey images (mean image), and one image."""
    root = tmp_path_factory.mktemp("visualize")
    dataset = make_dataset(root, classes=3, per_class=8)
    cfg = TrainConfig(network="lenet", train_epochs=1, batch_size=8, random_seed=2, use_mean="image")
    train(cfg, dataset, root / "model", RecordingReporter())
    predictor = Predictor.from_job_dir(root / "model")
    batch, ok, _ = predictor.load([dataset.source_path("val", 0)])
    assert ok == [0]
    return predictor, batch, root / "model"


def _reference(out: Path, predictor: Predictor, batch: np.ndarray) -> tuple[nn.Module, torch.Tensor, dict]:
    """A second copy of the snapshot, run by hand on the same preprocessed input."""
    model, _ = checkpoint.load_snapshot(out)
    x = predictor.preprocess.batch_to_tensor(batch)
    outs = model.layer_outputs(x)
    with torch.no_grad():
        outs["ip1"] = model.ip1(outs["pool2"])  # before relu1, which runs in place in the model
    return model, x, outs


def _close(panel: Any, t: torch.Tensor) -> None:
    t = t.detach().float()
    assert panel.shape == list(t.shape)
    assert panel.mean == pytest.approx(float(t.mean()), rel=1e-5, abs=1e-6)
    assert panel.std == pytest.approx(float(t.std(correction=0)), rel=1e-5, abs=1e-6)
    assert (panel.min, panel.max) == (pytest.approx(float(t.min())), pytest.approx(float(t.max())))
    counts, edges = np.histogram(t.numpy(), bins=20, range=(float(t.min()), float(t.max())))
    assert panel.counts == counts.tolist() and sum(panel.counts) == t.numel()
    np.testing.assert_allclose(panel.edges, edges, rtol=1e-6)


def _image(png: bytes | None) -> Image.Image:
    assert png and png.startswith(b"\x89PNG")
    return Image.open(io.BytesIO(png))


def test_lenet_layers_shapes_and_parameters(lenet) -> None:
    predictor, batch, _ = lenet
    vis = visualize(predictor, batch)
    assert [layer.name for layer in vis.layers] == LENET
    types = {layer.name: layer.type for layer in vis.layers}
    assert types["conv1"] == "Convolution" and types["pool1"] == "Pooling" and types["ip1"] == "InnerProduct"
    conv1 = vis.layers[1]
    assert conv1.shape == [20, 24, 24] and conv1.params == 520  # 20 x 5 x 5 weights + 20 biases
    assert {layer.name: layer.params for layer in vis.layers if layer.params} == {
        "conv1": 520,
        "conv2": 25050,
        "ip1": 400500,
        "ip2": 1503,
    }
    assert vis.total_params == sum(p.numel() for p in predictor.model.parameters()) == 427573
    assert sum(layer.params for layer in vis.layers) == vis.total_params
    assert [layer.weights is not None for layer in vis.layers] == [n in ("conv1", "conv2", "ip1", "ip2") for n in LENET]


def test_statistics_are_those_of_the_real_tensors(lenet) -> None:
    predictor, batch, out = lenet
    vis = visualize(predictor, batch)
    model, x, outs = _reference(out, predictor, batch)
    _close(vis.input, x[0])
    assert vis.input.shape == [1, 28, 28]
    for layer in vis.layers:
        _close(layer.activations, outs[layer.name][0])
    # each layer keeps its own output: ip1 before the in-place relu1, relu1 after it
    ip1, relu1 = vis.layers[5].activations, vis.layers[6].activations
    assert ip1.min < 0 and relu1.min == 0 and relu1.mean > ip1.mean
    for name in ("conv1", "conv2", "ip1", "ip2"):
        _close(next(v for v in vis.layers if v.name == name).weights, getattr(model, name).weight)


def test_pictures(lenet) -> None:
    predictor, batch, _ = lenet
    vis = visualize(predictor, batch)
    assert _image(vis.input.png).size == (28, 28)
    conv1 = vis.layers[1]
    picture = np.asarray(_image(conv1.activations.png).convert("RGB"))
    assert picture.shape == (4 * 25 - 1, 5 * 25 - 1, 3)  # 20 maps of 24x24 in rows of 5, 1 px apart
    act = _reference(lenet[2], predictor, batch)[2]["conv1"][0]
    lo, hi = float(act.min()), float(act.max())
    u8 = int(np.clip((float(act[6, 3, 4]) - lo) * 255.0 / (hi - lo), 0, 255))  # channel 6: row 1, column 1
    assert (picture[25 + 3, 25 + 4] == VALUES_LUT[u8]).all()
    conv2 = vis.layers[3].weights
    assert conv2 is not None and conv2.shown == "32 of 50 filters x 16 of 20 inputs"
    assert _image(conv2.png).size == (16 * 6 - 1, 32 * 6 - 1)
    assert _image(vis.layers[5].weights.png).size[0] <= 160  # ip1's 500x800 matrix, averaged down


def test_gradcam_for_the_top_prediction(lenet) -> None:
    predictor, batch, _ = lenet
    vis = visualize(predictor, batch)
    top = predictor.top_k(predictor.probabilities(batch))[0]
    assert vis.gradcam_label == top[0][0] and vis.gradcam_layer == "conv2" and vis.gradcam_reason is None
    overlay = _image(vis.gradcam)
    assert overlay.size == (224, 224) and overlay.mode == "RGB"
    other = visualize(predictor, batch, target=(predictor.labels.index(top[0][0]) + 1) % 3)
    assert other.gradcam_label != vis.gradcam_label and other.gradcam != vis.gradcam


def test_json_is_self_contained(lenet) -> None:
    predictor, batch, _ = lenet
    data = json.loads(json.dumps(visualize(predictor, batch).to_dict(), allow_nan=False))
    assert set(data) == {
        "input",
        "visualizations",
        "total_params",
        "gradcam",
        "gradcam_layer",
        "gradcam_label",
        "gradcam_reason",
    }
    conv1 = data["visualizations"][1]
    assert conv1["name"] == "conv1" and conv1["type"] == "Convolution" and conv1["shape"] == [20, 24, 24]
    for panel in (conv1["activations"], conv1["weights"]):
        assert set(panel) >= {"shape", "mean", "std", "histogram", "image"}
        assert panel["image"].startswith("data:image/png;base64,") and len(panel["histogram"]["counts"]) == 20
    assert data["gradcam"].startswith("data:image/png;base64,")


def test_the_shared_model_is_left_alone(lenet) -> None:
    """The server shares a Predictor between threads: no hooks on it, its in-place ReLU unchanged."""
    predictor, batch, _ = lenet
    before = predictor.probabilities(batch)
    visualize(predictor, batch)
    model = predictor.model
    assert model.relu1.inplace is True
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())
    np.testing.assert_array_equal(predictor.probabilities(batch), before)


def test_non_finite_values_are_counted_not_averaged() -> None:
    panel = _panel(torch.tensor([1.0, float("nan"), 3.0, float("inf")]), None)
    assert (panel.mean, panel.std, panel.nonfinite, sum(panel.counts)) == (2.0, 1.0, 2, 2)
    assert _panel(torch.tensor([float("nan")]), None).mean is None


def test_a_scalar_output_is_one_value(lenet) -> None:
    """A layer giving one number for the batch (a loss, say) is shown, not an index error."""
    predictor = lenet[0]
    view = _layer_view("loss", nn.Identity(), torch.tensor(0.25), _inspector(predictor))
    assert (view.shape, view.activations.mean, view.weights) == ([], 0.25, None)
    assert _image(view.activations.png).size == (1, 1)


def _predictor(model: nn.Module, shape: tuple[int, int, int], meta: dict[str, Any]) -> Predictor:
    c, h, w = shape
    pre = Preprocess(channels=c, height=h, width=w).to_dict()
    base = {
        "labels": ["a", "b"],
        "preprocess": pre,
        "epoch": 1,
        "num_classes": 2,
        "in_channels": c,
        "height": h,
        "width": w,
    }
    return Predictor(model.eval(), {**base, **meta})


NO_CONV = """
name: "flat"
layer { name: "data" type: "Data" top: "data" top: "label" }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""


def test_a_network_without_convolution_has_no_gradcam_and_says_why() -> None:
    network = NetworkDef(CUSTOM, NO_CONV)
    predictor = _predictor(network.build(2, (1, 8, 8)), (1, 8, 8), network.meta())
    vis = visualize(predictor, np.zeros((1, 8, 8, 1), np.uint8))
    assert vis.gradcam is None and "no convolution" in (vis.gradcam_reason or "")
    assert [(v.name, v.type, v.shape, v.params) for v in vis.layers] == [("fc", "InnerProduct", [2], 130)]


class Shared(nn.Module):
    """A Python network whose ReLU runs twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.fc(self.relu(self.conv(x)).flatten(1)))


def test_python_networks_through_hooks() -> None:
    torch.manual_seed(0)
    model = Shared()
    predictor = _predictor(model, (3, 8, 8), {"network": "custom", "network_text": "", "network_language": "python"})
    batch = np.random.default_rng(0).integers(0, 255, (1, 8, 8, 3), dtype=np.uint8)
    vis = visualize(predictor, batch)
    assert [(v.name, v.type, v.shape, v.params) for v in vis.layers] == [
        ("conv", "Conv2d", [4, 6, 6], 112),
        ("relu", "ReLU", [4, 6, 6], 0),
        ("fc", "Linear", [2], 290),
        ("relu#2", "ReLU", [2], 0),
    ]
    x = predictor.preprocess.batch_to_tensor(batch)
    with torch.no_grad():
        _close(vis.layers[0].activations, model.conv(x)[0])
    assert vis.total_params == 402 and vis.gradcam_layer == "conv" and _image(vis.gradcam).size == (224, 224)
    assert _image(vis.layers[0].weights.png).mode == "RGB"  # 3-channel filters drawn in colour
