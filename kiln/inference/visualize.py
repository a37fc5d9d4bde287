"""Classify one's "Show visualizations and statistics": a look inside the network for one image.

    vis = visualize(predictor, batch)      # batch: the (1, H, W, C) uint8 array Predictor.load gives
    vis.to_dict()                          # JSON: input, one entry per layer, total, Grad-CAM (data: URLs)

For the image as the network saw it (Preprocess.batch_to_tensor, the one preprocessing path) and
then for every layer in order: its output for this image and its weights, each with shape, mean,
std (population, as DIGITS' numpy showed), min, max, a 20-bin histogram and a picture (channels
and filters as tiles under a colour map); the learned parameters per layer and in total; and a
Grad-CAM heat map (captum's LayerGradCam on the last convolution) for the top prediction.

Work happens on a private copy of the predictor's model: the web server shares one Predictor
between threads, and the hooks used here (ours and captum's) must not touch a classification
running beside us; in-place ReLUs are turned off in the copy so each layer keeps its own output.
"""

from __future__ import annotations

import base64
import copy
import io
import math
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

BINS = 20  # DIGITS' histograms
MAX_TILES = 64  # channels drawn per activation
MAX_FILTERS, MAX_INPUTS = 32, 16  # weight tiles: rows (filters) x columns (input channels)
MAX_TILE = 48  # pixels per tile side (bigger maps are averaged down)
MAX_MATRIX = 160  # pixels per side for a fully connected layer's weights or a long vector
GRADCAM_SIDE = 224  # the overlay is drawn at least this big (a 28x28 input is scaled 8x)
# Colour maps as a few anchor colours, interpolated: viridis for values, inferno for the heat map.
VIRIDIS = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"]
INFERNO = ["#000004", "#56106e", "#bb3754", "#f98e09", "#fcffa4"]


# -- what comes out ---------------------------------------------------------------------------------
@dataclass
class Panel:
    """One tensor's statistics and picture (PNG bytes; None where nothing is drawn)."""

    shape: list[int]
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    nonfinite: int  # NaN/inf values, left out of the statistics
    counts: list[int]
    edges: list[float]
    png: bytes | None = None
    shown: str = ""  # what the picture holds when it is not everything ("first 64 of 96 channels")

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "nonfinite": self.nonfinite,
            "histogram": {"counts": self.counts, "edges": self.edges},
            "image": data_url(self.png),
            "shown": self.shown,
        }


@dataclass
class LayerView:
    name: str
    type: str
    shape: list[int]  # the output for one image (no batch axis)
    params: int  # learned parameters (weights and bias)
    activations: Panel
    weights: Panel | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "shape": self.shape,
            "params": self.params,
            "activations": self.activations.to_dict(),
            "weights": self.weights.to_dict() if self.weights else None,
        }


@dataclass
class Visualization:
    input: Panel
    layers: list[LayerView]
    total_params: int
    gradcam: bytes | None = None
    gradcam_layer: str | None = None
    gradcam_label: str | None = None
    gradcam_reason: str | None = None  # why there is no heat map

    def to_dict(self) -> dict[str, Any]:
        """The keys classify_one.json adds beside "predictions" with show_visualizations=1."""
        return {
            "input": self.input.to_dict(),
            "visualizations": [layer.to_dict() for layer in self.layers],
            "total_params": self.total_params,
            "gradcam": data_url(self.gradcam),
            "gradcam_layer": self.gradcam_layer,
            "gradcam_label": self.gradcam_label,
            "gradcam_reason": self.gradcam_reason,
        }


def data_url(png: bytes | None) -> str | None:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii") if png else None


# -- the one entry point --------------------------------------------------------------------------
def visualize(predictor: Any, batch: np.ndarray, target: int | None = None) -> Visualization:
    """Everything the visualization page shows for the first image of a uint8 NHWC batch; Grad-CAM
    for class index `target` (default: the top prediction)."""
    inspector = _inspector(predictor)
    x = predictor.preprocess.batch_to_tensor(batch[:1], device=predictor.device)
    with inspector.lock:
        outputs = inspector.layer_outputs(x)
        if target is None:
            with torch.no_grad():
                target = int(inspector.model(x).argmax(1)[0])
        vis = Visualization(
            input=_panel(x[0], _input_picture(x[0])),
            layers=[_layer_view(name, module, out, inspector) for name, module, out in outputs],
            total_params=sum(p.numel() for p in inspector.model.parameters()),
        )
        _add_gradcam(vis, inspector, x, target, predictor.labels)
    return vis


# -- a private copy of the model per predictor ----------------------------------------------------
@dataclass
class _Inspector:
    model: nn.Module
    types: dict[str, str]  # layer name -> the network text's layer type (Convolution, ...)
    conv: tuple[str, nn.Module] | None  # the last convolution, for Grad-CAM
    lock: threading.Lock = field(default_factory=threading.Lock)
    weights: dict[str, Panel | None] = field(default_factory=dict)  # the same for every image: drawn once

    def weights_panel(self, name: str, module: nn.Module) -> Panel | None:
        if name not in self.weights:
            weight = getattr(module, "weight", None)
            panel = None
            if isinstance(weight, torch.Tensor) and weight.numel():
                w = weight.detach().float().cpu()
                panel = _panel(w, *_weights_picture(w))
            self.weights[name] = panel
        return self.weights[name]

    def layer_outputs(self, x: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]]:
        """(layer name, its module, its output) in the order they ran."""
        from kiln.networks.prototxt.graph import PrototxtNet

        if isinstance(self.model, PrototxtNet):  # the text's own walk, by layer name
            key_of = {name: key for key, name in self.model.layer_names.items()}
            outs = self.model.layer_outputs(x)
            return [(name, self.model.get_submodule(key_of[name]), out) for name, out in outs.items()]
        return _hooked_outputs(self.model, x)


_inspectors: weakref.WeakKeyDictionary[Any, _Inspector] = weakref.WeakKeyDictionary()
_inspectors_lock = threading.Lock()


def _inspector(predictor: Any) -> _Inspector:
    with _inspectors_lock:
        found = _inspectors.get(predictor)
        if found is None:
            model = copy.deepcopy(predictor.model).eval()
            for module in model.modules():
                if getattr(module, "inplace", False):
                    module.inplace = False  # each layer keeps its own output (ip1 before relu1)
            convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
            found = _Inspector(model, _layer_types(predictor.meta, model), convs[-1] if convs else None)
            _inspectors[predictor] = found
        return found


def _layer_types(meta: dict[str, Any], model: nn.Module) -> dict[str, str]:
    """The Caffe types of a network text's layers; {} for Python networks (their class names serve)."""
    from kiln.networks.definition import NetworkDef

    shape = (meta["in_channels"], meta["height"], meta["width"])
    try:
        stage = getattr(model, "_eval_stage", "val")
        summary = NetworkDef.of_meta(meta).summary(meta["num_classes"], shape, stage=stage)
    except ValueError:
        return {}
    return {row.name: row.type for row in summary.layers} if summary else {}


def _hooked_outputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """Every leaf module's output, by forward hooks, for networks written in Python."""
    found: list[tuple[str, nn.Module, torch.Tensor]] = []
    calls: dict[str, int] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, _: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                calls[name] = calls.get(name, 0) + 1  # a module run twice (a shared ReLU) shows twice
                found.append((name if calls[name] == 1 else f"{name}#{calls[name]}", module, out.detach()))

        return record

    passthrough = (nn.Identity, nn.Sequential)  # an empty shortcut is its input again
    leaves = [(n, m) for n, m in model.named_modules() if n and next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves if not isinstance(m, passthrough)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return found


# -- layers ---------------------------------------------------------------------------------------
def _layer_view(name: str, module: nn.Module, out: torch.Tensor, inspector: _Inspector) -> LayerView:
    base = name.split("#")[0]
    kind = inspector.types.get(base, type(module).__name__)
    act = (out[0] if out.ndim else out).detach().float().cpu()  # one image; a scalar stays one
    fixed = (0.0, 1.0) if kind == "Softmax" else None  # probabilities drawn as they are (DIGITS)
    return LayerView(
        name=name,
        type=kind,
        shape=list(act.shape),
        params=sum(p.numel() for p in module.parameters(recurse=False)),
        activations=_panel(act, *_activation_picture(act, fixed)),
        weights=inspector.weights_panel(base, module),
    )


def _panel(t: torch.Tensor, png: bytes | None, shown: str = "") -> Panel:
    """Statistics of a tensor's finite values and a 20-bin histogram of them."""
    values = t.detach().float().reshape(-1).cpu()
    finite = torch.isfinite(values)
    bad = int((~finite).sum())
    if bad:
        values = values[finite]
    shape = list(t.shape)
    if not values.numel():
        return Panel(shape, None, None, None, None, bad, [], [], png, shown)
    lo, hi = float(values.min()), float(values.max())
    counts, edges = np.histogram(values.numpy(), bins=BINS, range=(lo, hi) if hi > lo else None)
    return Panel(
        shape,
        float(values.mean()),
        float(values.std(correction=0)),
        lo,
        hi,
        bad,
        [int(c) for c in counts],
        [float(e) for e in edges],
        png,
        shown,
    )


# -- pictures -------------------------------------------------------------------------------------
def _lut(anchors: list[str]) -> np.ndarray:
    """A 256-colour lookup table through evenly spaced anchor colours."""
    points = np.array([[int(a[i : i + 2], 16) for i in (1, 3, 5)] for a in anchors], np.float64)
    at = np.linspace(0, len(anchors) - 1, 256)
    return np.stack([np.interp(at, range(len(anchors)), points[:, c]) for c in range(3)], 1).round().astype(np.uint8)


VALUES_LUT, HEAT_LUT = _lut(VIRIDIS), _lut(INFERNO)
GAP = 255  # white between tiles and where there is no value


def _to_u8(a: np.ndarray, fixed: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Values scaled to 0..255 over their finite range (or `fixed`), and the mask of non-finite ones."""
    finite = np.isfinite(a)
    if fixed is not None:
        lo, hi = fixed
    elif finite.any():
        lo, hi = float(a[finite].min()), float(a[finite].max())
    else:
        lo, hi = 0.0, 1.0
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((np.where(finite, a, lo) - lo) * scale, 0, 255).astype(np.uint8), ~finite


def _coloured(a: np.ndarray, fixed: tuple[float, float] | None = None) -> np.ndarray:
    u8, missing = _to_u8(a, fixed)
    rgb = VALUES_LUT[u8]
    rgb[missing] = GAP
    return rgb


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, "PNG", compress_level=1)  # speed over size
    return buf.getvalue()


def _grid(tiles: np.ndarray, cols: int) -> np.ndarray:
    """(N, h, w, 3) tiles in rows of `cols`, one white pixel between them."""
    n, h, w, _ = tiles.shape
    rows = math.ceil(n / cols)
    canvas = np.full((rows * cols, h + 1, w + 1, 3), GAP, np.uint8)
    canvas[:n, :h, :w] = tiles
    canvas = canvas.reshape(rows, cols, h + 1, w + 1, 3).transpose(0, 2, 1, 3, 4)
    return canvas.reshape(rows * (h + 1), cols * (w + 1), 3)[:-1, :-1]


def _shrink(maps: torch.Tensor, side: int) -> torch.Tensor:
    """(N, h, w) maps averaged down so that neither side is over `side` pixels."""
    h, w = maps.shape[-2:]
    if max(h, w) <= side:
        return maps
    size = (max(1, h * side // max(h, w)), max(1, w * side // max(h, w)))
    return F.adaptive_avg_pool2d(maps[None], size)[0]


def _activation_picture(act: torch.Tensor, fixed: tuple[float, float] | None) -> tuple[bytes, str]:
    """Feature maps as tiles (the first MAX_TILES channels); anything else as a block of cells."""
    if act.ndim != 3 or act.shape[1] * act.shape[2] == 1:
        return _vector_picture(act.reshape(-1), fixed)
    n = act.shape[0]
    maps = _shrink(act[:MAX_TILES], MAX_TILE).numpy()
    shown = f"first {len(maps)} of {n} channels" if n > len(maps) else ""
    return _png(_grid(_coloured(maps, fixed), math.ceil(math.sqrt(len(maps))))), shown


def _vector_picture(v: torch.Tensor, fixed: tuple[float, float] | None = None) -> tuple[bytes, str]:
    """A vector as a near-square block of cells, row by row."""
    n = v.numel()
    v = v[: MAX_MATRIX * MAX_MATRIX]
    cols = math.ceil(math.sqrt(v.numel()))
    cells = np.full(cols * math.ceil(v.numel() / cols), np.nan, np.float32)
    cells[: v.numel()] = v.numpy()
    shown = f"first {v.numel()} of {n} values" if n > v.numel() else ""
    return _png(_coloured(cells.reshape(-1, cols), fixed)), shown


def _weights_picture(w: torch.Tensor) -> tuple[bytes, str]:
    """Filters as tiles (colour for RGB inputs, else one tile per filter and input channel)."""
    if w.ndim == 4 and w.shape[2] * w.shape[3] > 1:
        out, ins = w.shape[:2]
        if ins == 3:
            rgb = _to_u8(w[:MAX_TILES].permute(0, 2, 3, 1).numpy())[0]
            shown = f"first {len(rgb)} of {out} filters" if out > len(rgb) else ""
            return _png(_grid(rgb, math.ceil(math.sqrt(len(rgb))))), shown
        if ins == 1:  # one tile per filter, in a square
            tiles = _shrink(w[:MAX_TILES, 0], MAX_TILE)
            shown = f"first {len(tiles)} of {out} filters" if out > len(tiles) else ""
            return _png(_grid(_coloured(tiles.numpy()), math.ceil(math.sqrt(len(tiles))))), shown
        rows, cols = min(out, MAX_FILTERS), min(ins, MAX_INPUTS)  # a row of tiles per filter
        tiles = _shrink(w[:rows, :cols].reshape(rows * cols, *w.shape[2:]), MAX_TILE)
        shown = f"{rows} of {out} filters x {cols} of {ins} inputs" if (rows, cols) != (out, ins) else ""
        return _png(_grid(_coloured(tiles.numpy()), cols)), shown
    if w.ndim >= 2:  # fully connected (or 1x1): the matrix, averaged down
        matrix = w.reshape(w.shape[0], -1)
        return _png(_coloured(_shrink(matrix[None], MAX_MATRIX)[0].numpy())), ""
    return _vector_picture(w.reshape(-1))


def _input_rgb(x: torch.Tensor) -> np.ndarray:
    """The preprocessed (C, H, W) input as an (H, W, 3) picture: colour for 3 channels, else grey."""
    planes = x.detach().float().cpu()
    planes = planes if planes.shape[0] == 3 else planes[:1].expand(3, -1, -1)
    return _to_u8(planes.permute(1, 2, 0).numpy())[0]


def _input_picture(x: torch.Tensor) -> bytes:
    return _png(_input_rgb(x))


# -- Grad-CAM ------------------------------------------------------------------------------------
def _add_gradcam(vis: Visualization, inspector: _Inspector, x: torch.Tensor, target: int, labels: list[str]) -> None:
    """captum's LayerGradCam on the last convolution for class `target`, over the input."""
    if inspector.conv is None:
        vis.gradcam_reason = NO_CONV
        return
    vis.gradcam, vis.gradcam_layer = _gradcam(inspector, x, target)
    vis.gradcam_label = labels[target] if target < len(labels) else str(target)


NO_CONV = "this network has no convolution layer, and Grad-CAM looks at one"


def _gradcam(inspector: _Inspector, x: torch.Tensor, target: int) -> tuple[bytes, str]:
    """(the overlay PNG, the layer's name); the caller holds inspector.lock and checked inspector.conv."""
    from captum.attr import LayerAttribution, LayerGradCam

    assert inspector.conv is not None
    key, module = inspector.conv
    with torch.enable_grad():  # gradients reach the layer even where its weights are frozen
        inp = x.detach().clone().requires_grad_(True)
        cam = LayerGradCam(inspector.model, module).attribute(inp, target=target, relu_attributions=True)
    h, w = x.shape[-2:]
    scale = max(1, GRADCAM_SIDE // max(h, w))
    heat = LayerAttribution.interpolate(cam.detach().float(), (h * scale, w * scale), "bilinear")[0, 0]
    return _png(_overlay(_input_rgb(x[0]), heat.cpu().numpy())), getattr(inspector.model, "layer_names", {}).get(
        key, key
    )


def gradcam_png(predictor: Any, batch: np.ndarray, target: int | None = None) -> bytes | None:
    """Just the Grad-CAM overlay of the first image for class `target` (default: the top prediction);
    None for a network without a convolution. For the evaluation page's mistakes."""
    inspector = _inspector(predictor)
    if inspector.conv is None:
        return None
    x = predictor.preprocess.batch_to_tensor(batch[:1], device=predictor.device)
    with inspector.lock:
        if target is None:
            with torch.no_grad():
                target = int(inspector.model(x).argmax(1)[0])
        return _gradcam(inspector, x, target)[0]


def _overlay(base: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The heat map (scaled to its maximum) over the input: the hotter, the more of its colour."""
    h, w = heat.shape
    image = np.asarray(Image.fromarray(base).resize((w, h), Image.Resampling.NEAREST), np.float32)
    top = float(heat.max()) if np.isfinite(heat).all() else 0.0
    level = heat / top if top > 0 else np.zeros_like(heat)
    alpha = 0.7 * level[..., None]
    colour = HEAT_LUT[(level * 255).astype(np.uint8)].astype(np.float32)
    return (image * (1 - alpha) + colour * alpha).round().astype(np.uint8)
