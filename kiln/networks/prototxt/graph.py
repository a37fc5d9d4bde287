"""A Caffe network text in DIGITS' all-in-one form, compiled to one PyTorch module per stage.

Stages are DIGITS': train = phase TRAIN + stage "train"; val = phase TEST + stage "val"; deploy =
phase TEST + stage "deploy". Layers are kept or dropped with Caffe's own include/exclude rules, so
plain Caffe train_val files (``include { phase: TRAIN }``) work too. Then DIGITS' conventions:

- kiln supplies the data: Data/HDF5Data/Input layers' sources, means, crops and batch sizes are
  replaced by the dataset's and the form's (``transform_param { scale }`` is kept, as Caffe
  applies it); their first top is the image, a Data layer's second top the label; with no data
  layer the blobs are ``data`` and ``label``;
- an InnerProduct without ``num_output`` gets the number of classes;
- Accuracy layers with ``top_k`` above the number of classes are dropped;
- deploy ends in a Softmax: loss and accuracy layers do not run there, and a Softmax is added on
  the class scores when the text has none.

The module's ``forward`` follows kiln's network contract (``kiln.networks.registry``): float NCHW
in, class scores out; in training mode, a network with several SoftmaxWithLoss heads returns
``(main, aux1, ...)`` with the auxiliary heads' loss weights in ``aux_weights``. The loss and
accuracy layers themselves are not run by the module: the train loop computes them.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .layers import COMMON_FIELDS, LAYER_TYPES, Blob, Ctx, LayerType, Shape, Spec, fill_, fmt_shape
from .parse import Msg, PrototxtError, did_you_mean, parse_net

STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "train": ("TRAIN", ("train",)),
    "val": ("TEST", ("val",)),
    "deploy": ("TEST", ("deploy",)),
}
DEFAULT_MAX_PARAMETERS = 1_000_000_000  # 4 GB of float32 weights: beyond it, a typo, not a network


# ------------------------------------------------------------------------------------------------
# The summary: what the Visualize page shows
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerRow:
    name: str
    type: str
    line: int  # 0 for a layer kiln added
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    shapes: tuple[Shape, ...]  # each top's shape per image (no batch axis); () for a scalar
    params: int
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "line": self.line,
            "bottoms": list(self.bottoms),
            "tops": list(self.tops),
            "shapes": [list(s) for s in self.shapes],
            "params": self.params,
            "note": self.note,
        }


@dataclass(frozen=True)
class NetSummary:
    """Every layer of one stage with its output shape and parameter count, for a dataset's images."""

    name: str
    stage: str
    num_classes: int
    input_shape: Shape  # C, H, W
    input_blob: str
    layers: tuple[LayerRow, ...]
    heads: tuple[tuple[str, float], ...]  # (blob of class scores, loss weight), main head first
    dropped: tuple[tuple[str, str], ...] = ()  # (layer, why): layers DIGITS' conventions remove
    warnings: tuple[str, ...] = ()

    @property
    def total_params(self) -> int:
        return sum(row.params for row in self.layers)

    def layer(self, name: str) -> LayerRow:
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stage": self.stage,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "input_blob": self.input_blob,
            "layers": [row.as_dict() for row in self.layers],
            "heads": [[blob, weight] for blob, weight in self.heads],
            "dropped": [list(d) for d in self.dropped],
            "warnings": list(self.warnings),
            "total_params": self.total_params,
        }

    def table(self) -> str:
        """A plain-text table: layer, type, output shape, parameters, note."""
        head = ("Layer", "Type", "Output", "Params", "Note")
        rows = [
            (r.name, r.type, ", ".join(fmt_shape(s) for s in r.shapes), f"{r.params:,}", r.note) for r in self.layers
        ]
        rows.append(("total", "", "", f"{self.total_params:,}", ""))
        widths = [max(len(str(row[i])) for row in [head, *rows]) for i in range(5)]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *rows]]
        return "\n".join(lines)


@dataclass(frozen=True)
class DataHints:
    """What a stage's data layer asks for; the form's values win, these are its defaults."""

    batch_size: int | None = None
    crop_size: int | None = None
    mirror: bool = False
    scale: float = 1.0


# ------------------------------------------------------------------------------------------------
# Compiling one stage
# ------------------------------------------------------------------------------------------------
@dataclass
class _Step:
    index: int  # the layer's position in the text: its identity across stages
    name: str
    ltype: LayerType
    layer: Msg
    spec: Spec
    ins: list[int]  # value ids
    out: int
    detach: list[bool]


@dataclass
class _Plan:
    stage: str
    steps: list[_Step]
    rows: list[LayerRow]
    heads: list[tuple[int, float, str]]  # (value id, loss weight, blob), main first
    n_values: int
    input_blob: str
    scale: float
    dropped: list[tuple[str, str]]
    warnings: list[str]
    readers: dict[int, int] = field(default_factory=dict)  # value id -> how many steps/heads read it


@dataclass
class _Value:
    id: int
    shape: Shape
    producer: _Step | None
    layer: str  # the layer that wrote it ("" for kiln's input)
    kind: str = "blob"  # blob | label | metric


def _layer_name(layer: Msg, index: int) -> str:
    return layer.get("name") or f"{layer.get('type').lower() or 'layer'}_{index}"


def _meets(rule: Msg, phase: str, stages: tuple[str, ...]) -> bool:
    """Caffe's StateMeetsRule, at level 0."""
    if rule.has("phase") and rule.get("phase") != phase:
        return False
    if rule.has("min_level") and rule.get("min_level") > 0:
        return False
    if rule.has("max_level") and rule.get("max_level") < 0:
        return False
    if any(s not in stages for s in rule.all("stage")):
        return False
    return not any(s in stages for s in rule.all("not_stage"))


def included(layer: Msg, stage: str) -> bool:
    """Whether Caffe keeps ``layer`` in the net of DIGITS' ``stage`` (FilterNet's rule)."""
    phase, stages = STAGES[stage]
    keep = not layer.has("include")
    if keep and any(_meets(r, phase, stages) for r in layer.all("exclude")):
        keep = False
    if not keep and any(_meets(r, phase, stages) for r in layer.all("include")):
        keep = True
    return keep


def _check_layers(net: Msg) -> list[tuple[Msg, LayerType]]:
    """Stage-independent checks: types, which *_param goes with which type, bottom/top counts."""
    out = []
    if len(net.all("input")) > 1:
        net.fail("kiln feeds one input blob", "input", kind="structure", index=1)
    for i, layer in enumerate(net.all("layer")):
        type_name = layer.get("type")
        if not layer.has("type") or not type_name:
            layer.fail("this layer has no type", "type", kind="structure", expected='type: "Convolution" (or another)')
        ltype = LAYER_TYPES.get(type_name)
        if ltype is None:
            line, column = layer.where("type", value=True)
            known = sorted(LAYER_TYPES)
            raise PrototxtError(
                f"unknown layer type '{type_name}'{did_you_mean(type_name, known)}",
                line,
                column,
                kind="unknown_type",
                expected="one of: " + ", ".join(known),
            )
        name = _layer_name(layer, i)
        for fname in layer.fields:
            if fname not in COMMON_FIELDS and fname not in ltype.params:
                allowed = ", ".join(ltype.params) or "no *_param"
                layer.fail(
                    f"{name}: a {type_name} layer does not take {fname}",
                    fname,
                    kind="unknown_field",
                    expected=allowed,
                )
        if layer.has("include") and layer.has("exclude"):
            layer.fail(
                f"{name}: give include rules or exclude rules, not both (Caffe's rule)",
                "exclude",
                kind="structure",
            )
        for rules in ("include", "exclude"):
            for rule in layer.all(rules):
                for sname in ("stage", "not_stage"):
                    for k, stage in enumerate(rule.all(sname)):
                        if stage not in STAGES:
                            rule.fail(
                                f"{name}: '{stage}' is not one of DIGITS' stages, so this rule "
                                + ("never matches" if sname == "stage" else "always matches"),
                                sname,
                                kind="value",
                                expected="train, val or deploy",
                                index=k,
                            )
        for what, (low, high) in (("bottom", ltype.bottoms), ("top", ltype.tops)):
            count = len(layer.all(what))
            if count < low or (high >= 0 and count > high):
                want = str(low) if low == high else f"{low} or more" if high < 0 else f"{low} to {high}"
                layer.fail(
                    f"{name}: a {type_name} layer takes {want} {what}{'s' if want != '1' else ''}, not {count}",
                    what if count else "name",
                    kind="structure",
                    index=high if high >= 0 and count > high else 0,
                )
        propagate = layer.all("propagate_down")
        if propagate and len(propagate) != len(layer.all("bottom")):
            layer.fail(
                f"{name}: give propagate_down once per bottom, or not at all", "propagate_down", kind="structure"
            )
        weights = layer.all("loss_weight")
        if ltype.role != "loss" and any(w != 0 for w in weights):
            layer.fail(
                f"{name}: loss_weight applies to SoftmaxWithLoss layers in kiln", "loss_weight", kind="structure"
            )
        for k, spec in enumerate(layer.all("param")):
            if spec.get("name"):
                spec.fail(
                    f"{name}: sharing weights between layers by param name is not built by kiln",
                    "name",
                    kind="unknown_field",
                    index=k,
                )
        out.append((layer, ltype))
    return out


def _data_layer_hints(layer: Msg) -> DataHints:
    t = layer.get("transform_param")
    batch = None
    if layer.has("data_param") and layer.get("data_param").has("batch_size"):
        batch = layer.get("data_param").get("batch_size")
    elif layer.has("hdf5_data_param") and layer.get("hdf5_data_param").has("batch_size"):
        batch = layer.get("hdf5_data_param").get("batch_size")
    return DataHints(batch or None, t.get("crop_size") or None, bool(t.get("mirror")), float(t.get("scale")))


def _compile_stage(
    net: Msg,
    layers: list[tuple[Msg, LayerType]],
    stage: str,
    num_classes: int,
    input_shape: Shape,
    prefer: str | None = None,
) -> _Plan:
    input_desc = f"{input_shape[1]}x{input_shape[2]}"  # as error messages name the dataset's size
    chosen = [(i, layer, ltype) for i, (layer, ltype) in enumerate(layers) if included(layer, stage)]
    dropped: list[tuple[str, str]] = []
    warnings: list[str] = []

    data_layer, input_blob, label_blob, scale = _data_blobs(net, layers, chosen, stage)
    has_labels = stage != "deploy"

    values: dict[str, _Value] = {input_blob: _Value(0, input_shape, None, "")}
    if has_labels:
        values.setdefault(label_blob, _Value(-1, (), None, "", "label"))
    next_id = 1
    steps: list[_Step] = []
    rows: list[LayerRow] = []
    heads: list[tuple[int, float, str]] = []
    head_at: dict[int, tuple[int, int]] = {}
    names: dict[str, int] = {}
    consumed: set[int] = set()
    if data_layer is None:
        kiln_tops = (input_blob, label_blob) if has_labels else (input_blob,)
        kiln_shapes: tuple[Shape, ...] = (input_shape, ()) if has_labels else (input_shape,)
        rows.append(
            LayerRow(input_blob, "Input", 0, (), kiln_tops, kiln_shapes, 0, "added by kiln: the dataset's images")
        )

    for i, layer, ltype in chosen:
        name = _layer_name(layer, i)
        if name in names:
            layer.fail(
                f"{name}: two layers named '{name}' at the {stage} stage (the other is on line {names[name]})",
                "name",
                kind="structure",
            )
        names[name] = layer.line
        bottoms, tops = layer.all("bottom"), layer.all("top")
        if ltype.role == "data":
            note = "images from the dataset"
            if scale != 1.0:
                note += f", scaled by {scale:g}"
            shapes = (input_shape, ()) if len(tops) > 1 and ltype.name != "Input" else (input_shape,)
            rows.append(LayerRow(name, ltype.name, layer.line, (), tuple(tops), shapes[: len(tops)], 0, note))
            continue
        if ltype.role == "accuracy" and layer.get("accuracy_param").get("top_k") > num_classes:
            top_k = layer.get("accuracy_param").get("top_k")
            dropped.append((name, f"top_k {top_k} is above the {num_classes} classes"))
            continue
        if stage == "deploy" and ltype.role in ("loss", "accuracy"):
            dropped.append((name, "loss and accuracy layers do not run at deploy"))
            continue
        ins: list[int] = []
        shapes_in: list[Shape] = []
        for k, bottom in enumerate(bottoms):
            value = values.get(bottom)
            _check_bottom(layer, name, ltype, k, bottom, value, stage, label_blob, layers)
            assert value is not None
            ins.append(value.id)
            shapes_in.append(value.shape)
        ctx = Ctx(layer, name, ltype.name, shapes_in, num_classes, input_desc)
        assert ltype.infer is not None
        spec = ltype.infer(ctx)
        warnings += _check_params(layer, name, ltype, spec)
        params = sum(math.prod(b.shape) for b in spec.blobs)
        consumed.update(ins)
        if ltype.role == "loss":
            weights = layer.all("loss_weight")
            heads.append((ins[0], float(weights[0]) if weights else 1.0, bottoms[0]))
            head_at[ins[0]] = layer.where("bottom", value=True)
            for top in tops:
                values[top] = _Value(next_id, (), None, name, "metric")
                next_id += 1
            rows.append(LayerRow(name, ltype.name, layer.line, tuple(bottoms), tuple(tops), ((),) * len(tops), 0))
            continue
        if ltype.role == "accuracy":
            for top in tops:
                values[top] = _Value(next_id, (), None, name, "metric")
                next_id += 1
            top_k = layer.get("accuracy_param").get("top_k")
            note = f"top {top_k}" if top_k != 1 else ""
            rows.append(LayerRow(name, ltype.name, layer.line, tuple(bottoms), tuple(tops), ((),) * len(tops), 0, note))
            continue
        top = tops[0]
        _check_top(layer, name, top, bottoms, values)
        propagate = layer.all("propagate_down")
        step = _Step(i, name, ltype, layer, spec, ins, next_id, [not p for p in propagate] or [False] * len(ins))
        steps.append(step)
        values[top] = _Value(next_id, spec.tops[0], step, name)
        next_id += 1
        rows.append(LayerRow(name, ltype.name, layer.line, tuple(bottoms), (top,), (spec.tops[0],), params, spec.note))

    heads = _choose_heads(stage, heads, head_at, steps, consumed, rows, warnings, values, num_classes, prefer)
    readers = Counter(v for step in steps for v in step.ins) + Counter(v for v, _, _ in heads)
    return _Plan(stage, steps, rows, heads, next_id, input_blob, scale, dropped, warnings, dict(readers))


def _data_blobs(
    net: Msg, layers: list[tuple[Msg, LayerType]], chosen: list[tuple[int, Msg, LayerType]], stage: str
) -> tuple[Msg | None, str, str, float]:
    """At most one data layer per stage; its tops name the image and the label blobs; its scale."""
    data_layers = [(i, layer) for i, layer, ltype in chosen if ltype.role == "data"]
    if len(data_layers) > 1:
        (i0, first), (i1, second) = data_layers[:2]
        second.fail(
            f"{_layer_name(second, i1)}: a second data layer at the {stage} stage (the first is "
            f"'{_layer_name(first, i0)}' on line {first.line}); give each an include {{ stage: ... }} rule",
            "name",
            kind="structure",
        )
    data_layer = data_layers[0][1] if data_layers else None
    any_data = next((layer for layer, ltype in layers if ltype.role == "data"), None)
    source = data_layer or any_data
    if source is not None:
        input_blob = source.all("top")[0]
    elif net.has("input"):
        input_blob = net.get("input")
    else:
        input_blob = "data"
    label_blob = "label"
    for cand in (data_layer, any_data):
        if cand is not None and cand.get("type") != "Input" and len(cand.all("top")) > 1:
            label_blob = cand.all("top")[1]
            break
    scale = 1.0
    if data_layer is not None:
        transform = data_layer.get("transform_param")
        scale = float(transform.get("scale"))
        if scale == 0.0:
            transform.fail(f"{_layer_name(data_layer, 0)}: scale 0 would erase the images", "scale", kind="value")
    return data_layer, input_blob, label_blob, scale


def _check_bottom(
    layer: Msg,
    name: str,
    ltype: LayerType,
    k: int,
    bottom: str,
    value: _Value | None,
    stage: str,
    label_blob: str,
    layers: list[tuple[Msg, LayerType]],
) -> None:
    """The k-th bottom exists at this stage; labels and metrics feed only the layers that may read them."""
    line, column = layer.where("bottom", k, value=True)
    if value is None:
        raise PrototxtError(
            _missing_bottom(name, bottom, stage, label_blob, layers),
            line,
            column,
            kind="bottom",
            expected="a blob that a layer above produces at this stage",
        )
    if value.kind == "label" and ltype.role not in ("loss", "accuracy"):
        raise PrototxtError(
            f"{name}: '{bottom}' holds the labels, which only loss and accuracy layers read",
            line,
            column,
            kind="bottom",
        )
    if value.kind == "metric":
        raise PrototxtError(
            f"{name}: '{bottom}' is the output of loss or accuracy layer '{value.layer}', "
            "which kiln computes itself; it cannot feed another layer",
            line,
            column,
            kind="bottom",
        )
    if ltype.role in ("loss", "accuracy") and k == 1 and value.kind != "label":
        raise PrototxtError(
            f"{name}: the second bottom of a {ltype.name} layer must be the labels ('{label_blob}')",
            line,
            column,
            kind="bottom",
        )
    if ltype.role in ("loss", "accuracy") and k == 0 and value.kind != "blob":
        raise PrototxtError(
            f"{name}: the first bottom of a {ltype.name} layer must be class scores",
            line,
            column,
            kind="bottom",
        )


def _check_params(layer: Msg, name: str, ltype: LayerType, spec: Any) -> list[str]:
    """Refuse more param specs than blobs; warnings for weights that start at 0 (Caffe's default)."""
    found: list[str] = []
    specs = layer.all("param")
    if len(specs) > len(spec.blobs) + spec.state_blobs:
        layer.fail(
            f"{name}: {len(specs)} param specs but the layer has {len(spec.blobs) + spec.state_blobs} blobs",
            "param",
            kind="structure",
            index=len(specs) - 1,
        )
    for blob in spec.blobs:
        if blob.attr == "weight" and blob.filler is None and ltype.name in ("Convolution", "InnerProduct"):
            found.append(
                f"{name} (line {layer.line}): no weight_filler, so its weights start at 0 as in Caffe and its "
                'units stay alike; add weight_filler { type: "xavier" }'
            )
    return found


def _check_top(layer: Msg, name: str, top: str, bottoms: list[str], values: dict[str, _Value]) -> None:
    """A layer writes an existing blob only in place."""
    if top in values and not (bottoms and top == bottoms[0]):
        other = values[top]
        layer.fail(
            f"{name}: top '{top}' is already produced by "
            + (f"layer '{other.layer}'" if other.layer else "kiln's data")
            + "; a layer writes an existing blob only in place (top = its bottom)",
            "top",
            kind="structure",
        )


def _missing_bottom(name: str, bottom: str, stage: str, label_blob: str, layers: list[tuple[Msg, LayerType]]) -> str:
    message = f"{name}: bottom '{bottom}' is not produced by any layer above it at the {stage} stage"
    if bottom == label_blob and stage == "deploy":
        return message + '; labels exist at train and val only: add exclude { stage: "deploy" } to this layer'
    makers = [
        f"'{_layer_name(layer, i)}' (line {layer.line})"
        for i, (layer, _) in enumerate(layers)
        if bottom in layer.all("top") and _layer_name(layer, i) != name
    ]
    if makers:
        return message + f"; it comes from {', '.join(makers[:3])}, which this stage leaves out or runs later"
    return message


def _choose_heads(
    stage: str,
    heads: list[tuple[int, float, str]],
    head_at: dict[int, tuple[int, int]],
    steps: list[_Step],
    consumed: set[int],
    rows: list[LayerRow],
    warnings: list[str],
    values: dict[str, _Value],
    num_classes: int,
    prefer: str | None,
) -> list[tuple[int, float, str]]:
    """Main head first: the last SoftmaxWithLoss's scores; without one, the network's output.

    Without a loss (deploy, or a text without one), the scores are, in this order: the train
    stage's main scores if this stage makes them, else the bottom of the last Softmax nothing
    reads, else the one output nothing reads. Deploy gets a Softmax on them if it has none.
    """
    by_id = {v.id: v for v in values.values()}
    by_id.update({s.out: _Value(s.out, s.spec.tops[0], s, s.name) for s in steps})
    if heads:
        ordered = [heads[-1], *heads[:-1]]
    else:
        outputs = [s for s in steps if s.out not in consumed]
        softmaxes = [s for s in outputs if s.ltype.name == "Softmax"]
        preferred = values.get(prefer or "")
        if preferred is not None and preferred.kind == "blob" and preferred.producer is not None:
            scores, blob = preferred.id, str(prefer)
            head_at[scores] = preferred.producer.layer.where("name")
        elif softmaxes:
            scores = softmaxes[-1].ins[0]
            blob = softmaxes[-1].layer.all("bottom")[0]
            head_at[scores] = softmaxes[-1].layer.where("bottom", value=True)
        elif len(outputs) == 1:
            scores, blob = outputs[0].out, outputs[0].layer.all("top")[0]
            head_at[scores] = outputs[0].layer.where("name")
        else:
            names = ", ".join(f"'{s.name}'" for s in outputs) or "none"
            message = (
                f"the {stage} network has no single output to take class scores from (outputs: {names}); "
                "add a SoftmaxWithLoss layer (and a Softmax for deploy)"
            )
            if outputs:
                outputs[-1].layer.fail(message, "name", kind="structure")
            raise PrototxtError(message, 1, 1, kind="structure")
        if stage == "deploy" and not any(s.ltype.name == "Softmax" and s.ins[0] == scores for s in steps):
            rows.append(
                LayerRow("softmax", "Softmax", 0, (blob,), ("prob",), (by_id[scores].shape,), 0, "added by kiln")
            )
        if stage != "deploy":
            warnings.append(f"no SoftmaxWithLoss at the {stage} stage: kiln trains '{blob}' with a softmax loss")
        ordered = [(scores, 1.0, blob)]
    for vid, _, blob in ordered:
        value = by_id[vid]
        shape = value.shape
        if not shape or shape[0] != num_classes or any(d != 1 for d in shape[1:]):
            producer = value.producer
            message = f"'{blob}' gives {fmt_shape(shape)} scores per image, but the dataset has {num_classes} classes"
            if producer is not None:
                p = producer.layer.get("inner_product_param")
                if producer.ltype.name == "InnerProduct" and p.has("num_output"):
                    message += "; leave num_output out to get the number of classes"
                    p.fail(f"{producer.name}: {message}", "num_output", kind="shape")
                producer.layer.fail(f"{producer.name}: {message}", "name", kind="shape")
            line, column = head_at.get(vid, (1, 1))
            raise PrototxtError(message, line, column, kind="shape")
    return ordered


@dataclass
class Compiled:
    net: Msg
    plans: dict[str, _Plan]
    num_classes: int
    input_shape: Shape


def _check_inputs(num_classes: int, input_shape: tuple[int, ...]) -> Shape:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape is (channels, height, width), got {input_shape!r}")
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes!r}")
    return shape


def compile_text(
    text: str, num_classes: int, input_shape: tuple[int, int, int], stages: tuple[str, ...] = tuple(STAGES)
) -> Compiled:
    """Parse and check ``text`` for every stage in ``stages``; no tensors are made."""
    shape = _check_inputs(num_classes, input_shape)
    for stage in stages:
        if stage not in STAGES:
            raise ValueError(f"stage is one of {', '.join(STAGES)}, got {stage!r}")
    net = parse_net(text)
    layers = _check_layers(net)
    plans: dict[str, _Plan] = {}
    train = _compile_stage(net, layers, "train", int(num_classes), shape)
    main = train.heads[0][2]  # the other stages' scores, when they have no loss to say so
    for stage in stages:
        plans[stage] = train if stage == "train" else _compile_stage(net, layers, stage, int(num_classes), shape, main)
        if plans[stage].scale != train.scale:
            plans[stage].warnings.append(
                f"the train data layer scales images by {train.scale:g}, the {stage} stage by "
                f"{plans[stage].scale:g}: add a Power layer for all stages instead"
            )
    return Compiled(net, plans, int(num_classes), shape)


def _summary(compiled: Compiled, stage: str) -> NetSummary:
    plan = compiled.plans[stage]
    return NetSummary(
        name=compiled.net.get("name"),
        stage=stage,
        num_classes=compiled.num_classes,
        input_shape=compiled.input_shape,
        input_blob=plan.input_blob,
        layers=tuple(plan.rows),
        heads=tuple((blob, weight) for _, weight, blob in plan.heads),
        dropped=tuple(plan.dropped),
        warnings=tuple(plan.warnings),
    )


def summarize(text: str, num_classes: int, input_shape: tuple[int, int, int], stage: str = "train") -> NetSummary:
    """The table of ``stage``'s layers for a dataset, after checking every stage (nothing allocated)."""
    return _summary(compile_text(text, num_classes, input_shape), stage)


def check_text(text: str, num_classes: int, input_shape: tuple[int, int, int]) -> dict[str, NetSummary]:
    """Check all three stages, as DIGITS did at job creation; the summaries by stage."""
    compiled = compile_text(text, num_classes, input_shape)
    return {stage: _summary(compiled, stage) for stage in STAGES}


def data_hints(text: str) -> dict[str, DataHints]:
    """The train and val data layers' batch size, crop and mirror (defaults for the form), by stage."""
    net = parse_net(text)
    layers = _check_layers(net)
    hints = {}
    for stage in ("train", "val"):
        for layer, ltype in layers:
            if ltype.role == "data" and ltype.name != "Input" and included(layer, stage):
                hints[stage] = _data_layer_hints(layer)
                break
        else:
            hints[stage] = DataHints()
    return hints


# ------------------------------------------------------------------------------------------------
# The module
# ------------------------------------------------------------------------------------------------
_Run = tuple[tuple[tuple[str, tuple[int, ...], int, tuple[bool, ...]], ...], int, float, tuple[int, ...]]


def _needed(plan: _Plan, outputs: list[int]) -> list[_Step]:
    need = set(outputs)
    keep = []
    for step in reversed(plan.steps):
        if step.out in need:
            keep.append(step)
            need.update(step.ins)
    return keep[::-1]


class PrototxtNet(nn.Module):
    """A network compiled from Caffe text. Parameters are named ``<layer>.<weight|bias>``.

    Built for train (also runs val in eval mode) or for deploy. ``forward`` returns class scores
    ``(N, num_classes)``; in training mode with auxiliary heads, ``(main, aux1, ...)``.
    """

    def __init__(self, compiled: Compiled, stages: tuple[str, ...], device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.num_classes = compiled.num_classes
        self.input_shape = compiled.input_shape
        self.stages = stages
        self.net_name = compiled.net.get("name")
        plans = [compiled.plans[s] for s in stages]
        # every plain attribute is set before the layers are, so that no layer name can shadow one
        train_plan = plans[0]
        self.loss_weights: list[float] = [w for _, w, _ in train_plan.heads]
        self.aux_weights: list[float] = self.loss_weights[1:]
        self.head_blobs: list[str] = [b for _, _, b in train_plan.heads]
        self._train_stage = stages[0]
        self._eval_stage = stages[-1]
        self.layer_names: dict[str, str] = {}
        self._multipliers: dict[str, tuple[float, float]] = {}
        self._blobs: list[tuple[str, Blob]] = []
        self._runs: dict[str, _Run] = {}
        # one module per layer of the text, shared by the stages it runs in
        keys: dict[int, str] = {}
        owners: dict[str, int] = {}
        steps_by_index: dict[int, _Step] = {}
        for plan in plans:
            for step in plan.steps:
                if step.index in keys:
                    continue
                key = step.name.replace(".", "_") or "layer"
                if key in owners or hasattr(self, key):
                    other = next(s for s in steps_by_index.values() if keys[s.index] == key) if key in owners else None
                    if other is not None and (other.spec.blobs or step.spec.blobs):
                        step.layer.fail(
                            f"{step.name}: two layers named '{step.name}' with weights (lines {other.layer.line} and "
                            f"{step.layer.line}); write one layer with include rules so the stages share it",
                            "name",
                            kind="structure",
                        )
                    suffix = 2
                    while f"{key}_{suffix}" in owners or hasattr(self, f"{key}_{suffix}"):
                        suffix += 1
                    key = f"{key}_{suffix}"
                keys[step.index] = key
                owners[key] = step.index
                steps_by_index[step.index] = step
        self.layer_names.update({keys[i]: s.name for i, s in steps_by_index.items()})
        multipliers = self._multipliers
        for index in sorted(steps_by_index):
            step = steps_by_index[index]
            assert step.spec.make is not None
            module = step.spec.make()
            self.add_module(keys[index], module)
            specs = step.layer.all("param")
            for j, blob in enumerate(step.spec.blobs):
                pname = f"{keys[index]}.{blob.attr}"
                lr, decay = (specs[j].get("lr_mult"), specs[j].get("decay_mult")) if j < len(specs) else (1.0, 1.0)
                multipliers[pname] = (float(lr), float(decay))
                self._blobs.append((pname, blob))
        self._set_in_place(plans, keys)
        # runs: (steps, number of values, input scale, outputs)
        for plan in plans:
            outs = [v for v, _, _ in plan.heads]
            for mode, wanted in (("train", outs), ("eval", outs[:1]), ("all", None)):
                chosen = plan.steps if wanted is None else _needed(plan, wanted)
                run_steps = tuple((keys[s.index], tuple(s.ins), s.out, tuple(s.detach)) for s in chosen)
                self._runs[f"{plan.stage}:{mode}"] = (run_steps, plan.n_values, plan.scale, tuple(wanted or outs[:1]))
        self._materialize(torch.device(device))

    def _set_in_place(self, plans: list[_Plan], keys: dict[int, str]) -> None:
        """Run a text's in-place ReLU/Dropout in place where autograd allows it (saves memory and time)."""
        verdict: dict[int, bool] = {}
        for plan in plans:
            producers = {s.out: s for s in plan.steps}
            for step in plan.steps:
                top, bottoms = step.layer.all("top"), step.layer.all("bottom")
                producer = producers.get(step.ins[0]) if step.ins else None
                ok = (
                    step.ltype.name in ("ReLU", "Dropout")
                    and top[0] == bottoms[0]
                    and producer is not None
                    and producer.spec.overwritable
                    and plan.readers.get(step.ins[0], 0) == 1
                    and not step.detach[0]
                )
                verdict[step.index] = verdict.get(step.index, True) and ok
        for index, ok in verdict.items():
            module = self._modules[keys[index]]
            if ok and isinstance(module, (nn.ReLU, nn.LeakyReLU, nn.Dropout)):
                module.inplace = True

    def _materialize(self, device: torch.device) -> None:
        if device.type == "meta":
            return
        self.to_empty(device=device)
        params = dict(self.named_parameters())
        for pname, blob in self._blobs:
            fill_(params[pname].data, blob)
            lr, _ = self._multipliers[pname]
            if lr == 0.0:
                params[pname].requires_grad_(False)
        for module in self.modules():
            reset = getattr(module, "reset_running_stats", None)
            if reset is not None:
                reset()

    # -- running -----------------------------------------------------------------------------------
    def _run(self, key: str, x: torch.Tensor) -> list[torch.Tensor]:
        steps, n_values, scale, outputs = self._runs[key]
        values: list[Any] = [None] * n_values
        values[0] = x if scale == 1.0 else x * scale
        modules = self._modules
        for name, ins, out, detach in steps:
            args = [values[i].detach() if d else values[i] for i, d in zip(ins, detach)]
            values[out] = modules[name](*args)  # type: ignore[misc]
        return [values[i] if values[i].ndim <= 2 else values[i].flatten(1) for i in outputs]

    def forward(self, x: torch.Tensor) -> Any:
        if self.training:
            heads = self._run(f"{self._train_stage}:train", x)
            return heads[0] if len(heads) == 1 else tuple(heads)
        return self._run(f"{self._eval_stage}:eval", x)[0]

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """The deploy output: softmax of the class scores."""
        return torch.softmax(self.forward(x) if not self.training else self._run(f"{self._eval_stage}:eval", x)[0], 1)

    @torch.no_grad()
    def layer_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every layer's output (by layer name) in the eval stage, for looking inside the network."""
        steps, n_values, scale, _ = self._runs[f"{self._eval_stage}:all"]
        values: list[Any] = [None] * n_values
        values[0] = x if scale == 1.0 else x * scale
        out = {}
        for name, ins, idx, _ in steps:
            values[idx] = self._modules[name](*[values[i] for i in ins])  # type: ignore[misc]
            out[self.layer_names[name]] = values[idx]
        return out

    # -- solver support ------------------------------------------------------------------------------
    def param_multipliers(self) -> dict[str, tuple[float, float]]:
        """``{parameter name: (lr_mult, decay_mult)}`` from the text's ``param { ... }`` specs."""
        return dict(self._multipliers)

    def multiplier_groups(self) -> list[dict[str, Any]]:
        """Parameters grouped by (lr_mult, decay_mult), for optimizer param groups.

        Each group: ``{"params": [...], "lr_mult": m, "decay_mult": d, "names": [...]}``; the solver
        sets ``lr = base_lr * m`` and ``weight_decay = base_decay * d``. Frozen (lr_mult 0)
        parameters are left out.
        """
        groups: dict[tuple[float, float], dict[str, Any]] = {}
        for pname, p in self.named_parameters():
            if not p.requires_grad:
                continue
            lr, decay = self._multipliers.get(pname, (1.0, 1.0))
            group = groups.setdefault((lr, decay), {"params": [], "lr_mult": lr, "decay_mult": decay, "names": []})
            group["params"].append(p)
            group["names"].append(pname)
        return list(groups.values())

    def extra_repr(self) -> str:
        return f"name={self.net_name!r}, stages={self.stages}, classes={self.num_classes}, input={self.input_shape}"


def _check_size(compiled: Compiled, stages: tuple[str, ...], max_parameters: int | None) -> None:
    if max_parameters is None:
        return
    seen: dict[int, tuple[int, _Step]] = {}
    for stage in stages:
        for step in compiled.plans[stage].steps:
            seen[step.index] = (sum(math.prod(b.shape) for b in step.spec.blobs), step)
    total = sum(count for count, _ in seen.values())
    if total > max_parameters:
        count, biggest = max(seen.values(), key=lambda item: item[0])
        biggest.layer.fail(
            f"the network has {total:,} parameters, more than the limit of {max_parameters:,} "
            f"({biggest.name} alone has {count:,})",
            "name",
            kind="shape",
        )


def build_from_text(
    text: str,
    num_classes: int,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    stage: str = "train",
    *,
    device: torch.device | str = "cpu",
    max_parameters: int | None = DEFAULT_MAX_PARAMETERS,
) -> tuple[PrototxtNet, NetSummary]:
    """Compile ``text`` for a dataset of ``num_classes`` classes and ``input_shape`` (C, H, W) images.

    All three stages are checked (any problem is a :class:`PrototxtError` with a line and column).
    ``stage`` "train" or "val" gives a module that runs the train stage in training mode and the
    val stage in eval mode (they share weights by layer); "deploy" gives the deploy stage only.
    The summary is ``stage``'s. ``device="meta"`` builds without allocating weights.
    """
    compiled = compile_text(text, num_classes, input_shape)
    stages = ("deploy",) if stage == "deploy" else ("train", "val")
    _check_size(compiled, stages, max_parameters)
    module = PrototxtNet(compiled, stages, device)
    return module, _summary(compiled, stage)
