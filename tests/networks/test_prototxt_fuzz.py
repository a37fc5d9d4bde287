"""Property tests: whatever a user types, the parser and the builder answer with a PrototxtError or a
network whose summary tells the truth about its shapes; nothing else ever escapes."""

from __future__ import annotations

import math
import os
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln.networks.prototxt import PrototxtError, build_from_text, check_text, data_hints, parse_net, standard_text

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES = int(os.environ.get("KILN_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)

RICH = """name: "rich"
layer { name: "train-data" type: "Data" top: "data" top: "label" include { stage: "train" } transform_param { scale: 0.5 } }
layer { name: "in" type: "Input" top: "data" include { stage: "deploy" } input_param { shape { dim: 1 dim: 1 dim: 28 dim: 28 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "msra" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "c1" top: "c1" }
layer { name: "sc" type: "Scale" bottom: "c1" top: "c1" scale_param { bias_term: true } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2" convolution_param { num_output: 6 kernel_h: 3 kernel_w: 1 pad_h: 1 group: 2 dilation: 1 weight_filler { type: "xavier" variance_norm: AVERAGE } } }
layer { name: "pr" type: "PReLU" bottom: "c2" top: "c2" }
layer { name: "sum" type: "Eltwise" bottom: "c1" bottom: "c2" top: "sum" eltwise_param { operation: SUM coeff: 1 coeff: 0.5 } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "c2" top: "cat" concat_param { axis: 1 } }
layer { name: "lrn" type: "LRN" bottom: "cat" top: "lrn" lrn_param { local_size: 3 alpha: 0.0001 beta: 0.75 } }
layer { name: "p1" type: "Pooling" bottom: "lrn" top: "p1" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "p2" type: "Pooling" bottom: "p1" top: "p2" pooling_param { pool: AVE global_pooling: true } }
layer { name: "elu" type: "ELU" bottom: "p1" top: "elu" elu_param { alpha: 0.5 } }
layer { name: "sig" type: "Sigmoid" bottom: "elu" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "sig" top: "tanh" }
layer { name: "pw" type: "Power" bottom: "tanh" top: "pw" power_param { power: 2 scale: 0.5 shift: 1 } }
layer { name: "b" type: "Bias" bottom: "pw" top: "pw" }
layer { name: "fl" type: "Flatten" bottom: "pw" top: "fl" flatten_param { axis: 1 } }
layer { name: "rs" type: "Reshape" bottom: "fl" top: "rs" reshape_param { shape { dim: 0 dim: -1 } } }
layer { name: "d" type: "Dropout" bottom: "rs" top: "rs" dropout_param { dropout_ratio: 0.3 } }
layer { name: "ip1" type: "InnerProduct" bottom: "rs" top: "ip1" inner_product_param { num_output: 16 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "r2" type: "ReLU" bottom: "ip1" top: "ip1" relu_param { negative_slope: 0.1 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { weight_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "aux" type: "InnerProduct" bottom: "p2" top: "aux" exclude { stage: "deploy" } }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" include { stage: "val" } accuracy_param { top_k: 3 } }
layer { name: "aux_loss" type: "SoftmaxWithLoss" bottom: "aux" bottom: "label" loss_weight: 0.3 exclude { stage: "deploy" } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" exclude { stage: "deploy" } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" include { stage: "deploy" } }
"""
BASES = [standard_text("lenet"), RICH]

TOKENS = [
    "{", "}", ":", "<", ">", "[", "]", ",", ";", "-", '"', "'", "#", "\n", "\\", "/", ".", "0x", "0",
    "-1", "1", "3", "7", "65536", "4294967295", "99999999999999999999", "2.5", "1e-3", "1e40", "nan", "inf",
    "true", "t", "MAX", "AVE", "FAN_OUT", "TRAIN", "TEST", '"x"', '"data"', '"label"', '"conv1"', '"c1"',
    "layer", "layer {", "name", "type", "bottom", "top", "param", "include", "exclude", "stage", "not_stage",
    "phase", "num_output", "kernel_size", "kernel_h", "stride", "pad", "group", "dilation", "axis", "end_axis",
    "pool", "global_pooling", "round_mode: FLOOR", "local_size", "coeff", "operation: PROD", "top_k",
    "dropout_ratio", "negative_slope", "loss_weight", "propagate_down", "lr_mult", "decay_mult", "sparse",
    "variance_norm", "channel_shared", "bias_term", "use_global_stats", "concat_dim", "num_axes", "dim",
    'type: "Convolution"', 'type: "Pooling"', 'type: "Eltwise"', 'type: "Concat"', 'type: "Scale"',
    'type: "Reshape"', 'type: "Softmax"', 'type: "Input"', 'type: "Data"', 'type: "Accuracy"',
    'include { stage: "deploy" }', 'exclude { stage: "deploy" }', "include { phase: TEST }",
    'include { stage: "val" }', 'bottom: "label"', 'top: "data"', 'bottom: "data"', "axis: 0", "axis: -1",
    "weight_filler { type: \"xavier\" }", "shape { dim: 0 dim: -1 dim: 2 }", "num_output: 0",
    "kernel_size: 0", "stride: 0", "pad: 9", "group: 2", "dilation: 4", "local_size: 2", "top_k: 99",
]  # fmt: skip
NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e-?\d+)?")


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(BASES))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "insert", "number", "line", "swap", "cut"]))
        n = len(text)
        if op == "delete" and n:
            i = draw(st.integers(0, n - 1))
            text = text[:i] + text[i + draw(st.integers(1, 12)) :]
        elif op == "insert":
            i = draw(st.integers(0, n))
            token = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)))
            text = text[:i] + " " + token + " " + text[i:]
        elif op == "number":
            spots = list(NUMBER.finditer(text))
            if spots:
                m = draw(st.sampled_from(spots))
                value = draw(
                    st.one_of(
                        st.integers(-3, 40),
                        st.integers(-(2**40), 2**40),
                        st.floats(allow_nan=True, allow_infinity=True, width=32),
                    )
                )
                text = text[: m.start()] + str(value) + text[m.end() :]
        elif op == "line":
            lines = text.split("\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines)))
            lines.insert(j, lines[i])
            text = "\n".join(lines)
        elif op == "swap":
            lines = text.split("\n")
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif op == "cut" and n:
            text = text[: draw(st.integers(0, n))]
    return text


@st.composite
def random_layer(draw: st.DrawFn, i: int, tops: list[str]) -> str:
    """One layer of a random type with small (and sometimes impossible) parameters."""
    # mostly workable values, sometimes impossible ones (0, -1, too large)
    count = st.sampled_from([1, 2, 2, 3, 4, 6, 8, 0])
    kernel = st.sampled_from([1, 1, 2, 3, 3, 5, 0, 9])
    stride = st.sampled_from([1, 1, 1, 2, 2, 3, 0])
    pad = st.sampled_from([0, 0, 0, 1, 1, 2, 4])
    dilation = st.sampled_from([1, 1, 1, 2, 0])
    group = st.sampled_from([1, 1, 1, 1, 1, 2, 3, 0])
    axis = st.sampled_from([1, 1, 1, 2, 3, -1, 0, 4])
    ints = st.sampled_from([1, 1, 2, 3, 5, 0, -1])
    kind = draw(
        st.sampled_from(
            [
                "Convolution",
                "Convolution",
                "Convolution",
                "Pooling",
                "Pooling",
                "InnerProduct",
                "ReLU",
                "PReLU",
                "ELU",
                "Sigmoid",
                "TanH",
                "Dropout",
                "LRN",
                "BatchNorm",
                "Scale",
                "Bias",
                "Eltwise",
                "Concat",
                "Flatten",
                "Reshape",
                "Power",
                "Softmax",
            ]
        )
    )
    bottom = draw(st.sampled_from(tops))
    in_place = kind in ("ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "Dropout", "BatchNorm", "Scale", "Bias", "Power")
    top = bottom if in_place and draw(st.booleans()) else f"t{i}"
    bottoms = [bottom]
    p = ""
    if kind == "Convolution":
        size = draw(
            st.sampled_from(["kernel_size: {}", "kernel_h: {} kernel_w: {}", "kernel_size: {} kernel_size: {}"])
        )
        p = f"convolution_param {{ num_output: {draw(count)} {size.format(draw(kernel), draw(kernel))} "
        p += f"stride: {draw(stride)} pad: {draw(pad)} dilation: {draw(dilation)} group: {draw(group)} "
        p += f'bias_term: {draw(st.booleans())} weight_filler {{ type: "msra" }} }}'
    elif kind == "Pooling":
        how = draw(st.sampled_from(["kernel_size: {} stride: {} pad: {}", "global_pooling: true"]))
        p = f"pooling_param {{ pool: {draw(st.sampled_from(['MAX', 'AVE']))} {how.format(draw(kernel), draw(stride), draw(pad))} "
        p += f"round_mode: {draw(st.sampled_from(['CEIL', 'FLOOR']))} }}"
    elif kind == "InnerProduct":
        n = draw(st.sampled_from(["", f"num_output: {draw(ints)}"]))
        p = f'inner_product_param {{ {n} axis: {draw(st.integers(-4, 4))} weight_filler {{ type: "xavier" }} }}'
    elif kind == "PReLU":
        p = f"prelu_param {{ channel_shared: {draw(st.booleans())} }}"
    elif kind == "Dropout":
        p = f"dropout_param {{ dropout_ratio: {draw(st.sampled_from([0, 0.5, 1, -0.1]))} }}"
    elif kind == "LRN":
        region = draw(st.sampled_from(["ACROSS_CHANNELS", "WITHIN_CHANNEL"]))
        p = f"lrn_param {{ local_size: {draw(kernel)} norm_region: {region} }}"
    elif kind == "BatchNorm":
        p = f"batch_norm_param {{ use_global_stats: {draw(st.booleans())} eps: {draw(st.sampled_from([0, 1e-5]))} }}"
    elif kind in ("Scale", "Bias"):
        if draw(st.booleans()):
            bottoms.append(draw(st.sampled_from(tops)))
        name = "scale_param" if kind == "Scale" else "bias_param"
        p = f"{name} {{ axis: {draw(axis)} num_axes: {draw(st.sampled_from([1, 1, 2, 0, -1, -2, 4]))} }}"
    elif kind in ("Eltwise", "Concat"):
        bottoms += draw(st.lists(st.sampled_from(tops), min_size=1, max_size=2))
        if kind == "Eltwise":
            coeffs = " ".join(f"coeff: {c}" for c in draw(st.lists(st.sampled_from([1, -1, 0.5]), max_size=3)))
            p = f"eltwise_param {{ operation: {draw(st.sampled_from(['SUM', 'PROD', 'MAX']))} {coeffs} }}"
        else:
            p = f"concat_param {{ axis: {draw(axis)} }}"
    elif kind == "Flatten":
        p = f"flatten_param {{ axis: {draw(axis)} end_axis: {draw(st.sampled_from([-1, -1, 2, 3, 1, 0, 4]))} }}"
    elif kind == "Reshape":
        dims = " ".join(f"dim: {d}" for d in draw(st.lists(st.sampled_from([0, 0, -1, 1, 2, 3, -2]), max_size=4)))
        p = f"reshape_param {{ shape {{ {dims} }} axis: {draw(st.sampled_from([0, 0, 1, 2, -1, 4]))} "
        p += f"num_axes: {draw(st.sampled_from([-1, -1, 1, 2, 0, -2, 5]))} }}"
    elif kind == "Power":
        p = f"power_param {{ power: {draw(st.sampled_from([1, 2, 0.5]))} scale: {draw(st.sampled_from([1, -1, 0.1]))} }}"
    elif kind == "Softmax":
        p = f"softmax_param {{ axis: {draw(axis)} }}"
    tops.append(top)
    lines = " ".join(f'bottom: "{b}"' for b in bottoms)
    return f'layer {{ name: "l{i}" type: "{kind}" {lines} top: "{top}" {p} }}'


@st.composite
def random_net(draw: st.DrawFn) -> str:
    tops = ["data"]
    layers = [draw(random_layer(i, tops)) for i in range(draw(st.integers(1, 7)))]
    last = tops[-1]
    layers.append(f'layer {{ name: "scores" type: "InnerProduct" bottom: "{last}" top: "scores" }}')
    layers.append(
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" exclude { stage: "deploy" } }'
    )
    return "\n".join(layers)


SHAPES = st.sampled_from([(1, 28, 28), (3, 13, 17), (2, 5, 5), (1, 1, 1), (4, 64, 9)])


def _exercise(text: str, classes: int, shape: tuple[int, int, int], stage: str) -> None:
    """Only PrototxtError may escape; a network that builds runs with the shapes its summary says."""
    try:
        data_hints(text)
        summaries = check_text(text, classes, shape)
        model, summary = build_from_text(text, classes, shape, stage, max_parameters=3_000_000)
    except PrototxtError as error:
        assert error.line >= 1 and error.column >= 1 and error.message
        return
    assert summary.stage == stage and summaries[stage].total_params == summary.total_params
    activations = sum(math.prod(s) for row in summary.layers for s in row.shapes)
    if activations > 2_000_000:
        return  # a valid but huge network: the summary is the answer
    x = torch.rand(2, *shape) * 255
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, classes)
        outputs = model.layer_outputs(x)
    for row in summary.layers:
        if row.name in outputs:
            assert tuple(outputs[row.name].shape[1:]) == row.shapes[0], row.name
    model.train()
    out = model(x)
    heads = out if isinstance(out, tuple) else (out,)
    assert len(heads) == len(model.loss_weights) and all(h.shape == (2, classes) for h in heads)


@FUZZ
@given(text=mutated(), classes=st.integers(1, 12), shape=SHAPES, stage=st.sampled_from(["train", "val", "deploy"]))
def test_mutated_networks_give_a_prototxt_error_or_a_truthful_network(
    text: str, classes: int, shape: tuple[int, int, int], stage: str
) -> None:
    _exercise(text, classes, shape, stage)


@settings(FUZZ, max_examples=EXAMPLES * 2)
@given(text=random_net(), classes=st.integers(1, 5), shape=SHAPES, stage=st.sampled_from(["train", "deploy"]))
def test_random_networks_give_a_prototxt_error_or_a_truthful_network(
    text: str, classes: int, shape: tuple[int, int, int], stage: str
) -> None:
    _exercise(text, classes, shape, stage)


@FUZZ
@given(text=st.text(max_size=300))
def test_garbage_gives_only_prototxt_errors(text: str) -> None:
    try:
        parse_net(text)
    except PrototxtError as error:
        assert error.line >= 1 and error.column >= 1
    _exercise(text, 3, (1, 8, 8), "train")


@FUZZ
@given(
    tokens=st.lists(st.sampled_from(TOKENS), max_size=40),
    base=st.sampled_from(BASES),
    at=st.floats(0, 1),
)
def test_token_soup_inside_a_network(tokens: list[str], base: str, at: float) -> None:
    i = int(at * len(base))
    _exercise(base[:i] + " ".join(tokens) + base[i:], 10, (1, 28, 28), "train")
