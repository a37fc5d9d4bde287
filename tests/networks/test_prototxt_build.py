"""Building networks from Caffe text: stages, DIGITS' conventions, every layer type, every error class."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from kiln.networks.prototxt import (
    PrototxtError,
    build_from_text,
    check_text,
    data_hints,
    standard_text,
    summarize,
)
from kiln.networks.prototxt.layers import pool_out

pytestmark = pytest.mark.usefixtures("one_thread")


def line_of(text: str, marker: str, nth: int = 0) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    return hits[nth]


def error_of(text: str, classes: int = 10, shape: tuple[int, int, int] = (1, 28, 28)) -> PrototxtError:
    with pytest.raises(PrototxtError) as info:
        build_from_text(text, classes, shape)
    return info.value


def names(text: str, stage: str, classes: int = 10, shape: tuple[int, int, int] = (1, 28, 28)) -> list[str]:
    return [row.name for row in summarize(text, classes, shape, stage).layers]


LENET = standard_text("lenet")

# a small network in DIGITS' all-in-one form, to edit in the tests
SMALL = """name: "small"
layer { name: "train-data" type: "Data" top: "data" top: "label" include { stage: "train" } }
layer { name: "val-data" type: "Data" top: "data" top: "label" include { stage: "val" } }
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy" include { stage: "val" } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" exclude { stage: "deploy" } }
layer { name: "softmax" type: "Softmax" bottom: "fc" top: "softmax" include { stage: "deploy" } }
"""


# ------------------------------------------------------------------------------------------------
# Errors before any job exists: one test per class, each with its line
# ------------------------------------------------------------------------------------------------
def test_syntax_error_has_its_line() -> None:
    text = LENET.replace("num_output: 50", "num_output 50")
    error = error_of(text)
    assert error.kind == "syntax"
    assert error.line == line_of(text, "num_output 50")
    assert "':' or '{'" in error.expected


def test_unknown_layer_type_points_at_the_type() -> None:
    text = LENET.replace('type: "Pooling"', 'type: "Poolng"', 1)
    error = error_of(text)
    assert error.kind == "unknown_type"
    assert error.line == line_of(text, '"Poolng"')
    assert error.column == text.splitlines()[error.line - 1].index('"Poolng"') + 1
    assert "unknown layer type 'Poolng' (did you mean 'Pooling'?)" in error.message
    assert "Convolution" in error.expected


def test_unknown_parameter_points_at_the_field() -> None:
    text = LENET.replace("kernel_size: 5", "kernel_sizes: 5", 1)
    error = error_of(text)
    assert (error.kind, error.line) == ("unknown_field", line_of(text, "kernel_sizes"))
    assert "did you mean 'kernel_size'" in error.message


def test_a_param_message_of_another_layer_type() -> None:
    text = SMALL.replace('top: "conv1"\n', 'top: "conv1"\n  pooling_param { pool: MAX }\n', 1)
    error = error_of(text)
    assert error.kind == "unknown_field"
    assert error.line == line_of(text, "pooling_param { pool: MAX }")
    assert "conv1: a Convolution layer does not take pooling_param" in error.message


def test_a_bottom_no_layer_produces_at_that_stage() -> None:
    text = LENET.replace('bottom: "pool1"', 'bottom: "pool_1"')
    error = error_of(text)
    assert error.kind == "bottom"
    assert error.line == line_of(text, '"pool_1"')
    assert "conv2: bottom 'pool_1' is not produced by any layer above it at the train stage" in error.message


def test_labels_at_deploy_is_digits_frequent_error_with_its_fix() -> None:
    text = LENET.replace('  top: "loss"\n  exclude { stage: "deploy" }\n', '  top: "loss"\n')
    # a loss without rules runs at deploy in Caffe; kiln drops it there (it cannot run without labels)
    assert ("loss", "loss and accuracy layers do not run at deploy") in summarize(
        text, 10, (1, 28, 28), "deploy"
    ).dropped
    # but another layer reading the labels at deploy is an error, with the fix
    text = SMALL.replace(
        'layer { name: "softmax"',
        'layer { name: "lbl" type: "Accuracy" bottom: "fc" bottom: "label" }\nlayer { name: "softmax"',
    )
    assert "lbl" not in names(text, "deploy")  # accuracy layers are dropped at deploy as well
    text = SMALL.replace('exclude { stage: "deploy" }', "")
    assert "loss" in names(text, "train") and "loss" not in names(text, "deploy")


def test_a_missing_bottom_names_who_produces_it_elsewhere() -> None:
    text = SMALL.replace(
        'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }',
        'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1r" include { stage: "val" } }',
    ).replace('bottom: "conv1" top: "pool1"', 'bottom: "conv1r" top: "pool1"')
    error = error_of(text)
    assert error.kind == "bottom" and "at the train stage" in error.message
    assert "it comes from 'relu1'" in error.message
    assert error.line == line_of(text, 'bottom: "conv1r"')


def test_a_shape_that_cannot_work_for_the_image_size() -> None:
    text = LENET.replace("num_output: 50\n    kernel_size: 5", "num_output: 50\n    kernel_size: 12")
    text = text.replace(
        "pooling_param { pool: MAX kernel_size: 2 stride: 2 }", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"
    )
    error = error_of(text)
    assert error.kind == "shape"
    assert error.line == line_of(text, 'name: "pool2"')
    assert error.message.startswith("pool2 gives 0x0 for 28x28 input")
    assert str(error).startswith(f"line {error.line}, column 3: pool2 gives 0x0 for 28x28 input")
    # LeNet itself is fine at 28x28 and too deep for 12x12 (conv2 needs 5x5 after pool1)
    error = error_of(LENET, shape=(1, 12, 12))
    assert error.kind == "shape" and error.message.startswith("conv2 gives 0x0 for 12x12 input")
    assert error.line == line_of(LENET, 'name: "conv2"')


def test_scores_must_match_the_class_count() -> None:
    text = LENET.replace("# no num_output: one per class", "num_output: 10")
    build_from_text(text, 10, (1, 28, 28))
    error = error_of(text, classes=5)
    assert error.kind == "shape" and error.line == line_of(text, "num_output: 10")
    assert "'ip2' gives 10 scores per image, but the dataset has 5 classes" in error.message
    assert "leave num_output out" in error.message


@pytest.mark.parametrize(
    ("edit", "marker", "words"),
    [
        # two data layers in one stage
        (
            ('include { stage: "val" }\n  data_param { batch_size: 32 }', "data_param { batch_size: 32 }"),
            'name: "val-data"',
            "a second data layer at the train stage",
        ),
        # include and exclude together
        (
            ('top: "softmax"\n  include', 'top: "softmax"\n  exclude { stage: "val" }\n  include'),
            'exclude { stage: "val" }',
            "not both",
        ),
        # a stage DIGITS does not have
        (('include { stage: "deploy" }', 'include { stage: "test" }'), 'stage: "test"', "not one of DIGITS' stages"),
        # the same top written by two layers
        (('top: "pool2"', 'top: "pool1"'), 'top: "pool1"', "already produced by layer 'pool1'"),
        # bottoms count
        (('bottom: "conv1"\n  top: "pool1"', 'top: "pool1"'), 'name: "pool1"', "takes 1 bottom, not 0"),
        # too many param specs
        (
            (
                "param { lr_mult: 2 }\n  convolution_param {\n    num_output: 20",
                "param { lr_mult: 2 }\n  param { }\n  convolution_param {\n    num_output: 20",
            ),
            "param { }",
            "3 param specs but the layer has 2 blobs",
        ),
        # weight sharing by name
        (("param { lr_mult: 1 }", 'param { name: "shared" lr_mult: 1 }'), 'name: "shared"', "sharing weights"),
        # loss_weight on a layer that is not a loss
        (
            ('top: "conv1"\n', 'top: "conv1"\n  loss_weight: 1\n'),
            "loss_weight: 1",
            "loss_weight applies to SoftmaxWithLoss",
        ),
        # a duplicate layer name in one stage
        (('name: "pool2"', 'name: "pool1"'), 'name: "pool1"', "two layers named 'pool1'"),
    ],
)
def test_structure_errors(edit: tuple[str, str], marker: str, words: str) -> None:
    text = LENET.replace(*edit, 1)
    error = error_of(text)
    assert words in error.message, error.message
    nth = 1 if marker == 'name: "pool1"' and "two layers" in words else 0
    if marker == 'top: "pool1"':
        nth = 1
    assert error.line == line_of(text, marker, nth), (error, marker)


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ("kernel_size: 3 kernel_h: 3 kernel_w: 3", "either kernel_size or kernel_h/kernel_w"),
        ("kernel_h: 3", "give both kernel_h and kernel_w"),
        ("", "needs kernel_size"),
        ("kernel_size: 3 stride: 0", "stride must be at least 1"),
        ("kernel_size: 3 kernel_size: 3 kernel_size: 3", "1 or 2 values"),
        ("kernel_size: 3 group: 3", "group 3 must divide"),
        ("kernel_size: 3 dilation: 0", "dilation must be at least 1"),
        ("kernel_size: 3 axis: 2", "axis 1 only"),
    ],
)
def test_convolution_checks(params: str, words: str) -> None:
    text = SMALL.replace("num_output: 4 kernel_size: 3", f"num_output: 4 {params}")
    error = error_of(text, shape=(2, 12, 12))
    assert words in error.message and error.kind == "value", error.message
    assert line_of(text, 'name: "conv1"') <= error.line <= line_of(text, "convolution_param")


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ("pool: STOCHASTIC kernel_size: 2", "STOCHASTIC"),
        ("pool: MAX kernel_size: 2 pad: 2", "smaller than the kernel"),
        ("pool: AVE global_pooling: true kernel_size: 2", "no kernel size"),
        ("pool: AVE global_pooling: true stride: 2", "stride 1"),
        ("pool: MAX", "needs kernel_size"),
    ],
)
def test_pooling_checks(params: str, words: str) -> None:
    text = SMALL.replace("pool: MAX kernel_size: 2 stride: 2", params)
    error = error_of(text)
    assert words in error.message, error.message
    assert error.line == line_of(text, 'name: "pool1"')


def test_other_layer_checks() -> None:
    def fails(old: str, new: str, words: str) -> None:
        error = error_of(SMALL.replace(old, new, 1))
        assert words in error.message, error.message

    relu = 'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }'
    fails(relu, relu.replace('"ReLU"', '"Dropout"').replace(" }", " dropout_param { dropout_ratio: 1 } }"), "[0, 1)")
    fails(relu, relu.replace('"ReLU"', '"LRN"').replace(" }", " lrn_param { local_size: 4 } }"), "odd")
    fails(
        relu,
        relu.replace('"ReLU"', '"BatchNorm"').replace(" }", " batch_norm_param { eps: 0 } }"),
        "eps must be above 0",
    )
    fails(relu, relu.replace(" }", " param { lr_mult: 1 } }"), "no learned blobs")
    fails(relu, relu.replace('"ReLU"', '"Flatten"').replace(" }", " flatten_param { axis: 0 } }"), "batch axis")
    fails(relu, relu.replace('"ReLU"', '"Flatten"').replace(" }", " flatten_param { axis: 7 } }"), "out of range")
    fails(
        relu,
        relu.replace('"ReLU"', '"Reshape"').replace(" }", " reshape_param { shape { dim: 0 dim: 5 } } }"),
        "holds 5 values",
    )
    fails(
        relu,
        relu.replace('"ReLU"', '"Reshape"').replace(" }", " reshape_param { shape { dim: -1 } } }"),
        "keep the batch",
    )
    fails(
        relu,
        relu.replace('"ReLU"', '"Reshape"').replace(" }", " reshape_param { shape { dim: 0 dim: -1 dim: -1 } } }"),
        "one dim may be -1",
    )
    fails(
        relu,
        relu.replace(" }", ' }\nlayer { name: "e" type: "Eltwise" bottom: "conv1" bottom: "data" top: "e" }'),
        "one shape",
    )
    fails(
        relu,
        relu.replace(
            " }",
            ' }\nlayer { name: "e" type: "Eltwise" bottom: "conv1" bottom: "conv1" top: "e" eltwise_param { operation: MAX coeff: 1 coeff: 2 } }',
        ),
        "SUM only",
    )
    fails(
        relu,
        relu.replace(" }", ' }\nlayer { name: "e" type: "Concat" bottom: "conv1" bottom: "data" top: "e" }'),
        "equal on the other axes",
    )
    fails(
        'weight_filler { type: "xavier" } }\n}',
        'weight_filler { type: "bilinear" } }\n}',
        "unknown filler type 'bilinear'",
    )
    fails(
        'weight_filler { type: "xavier" } }\n}',
        'weight_filler { type: "uniform" min: 1 max: 0 } }\n}',
        "min 1.0 is above max",
    )
    fails('weight_filler { type: "xavier" } }\n}', 'weight_filler { type: "gaussian" std: -1 } }\n}', "negative")
    fails("inner_product_param { weight", "inner_product_param { transpose: true weight", "transpose")
    fails("inner_product_param { weight", "inner_product_param { num_output: 0 weight", "above 0")
    fails('top: "softmax"', 'top: "softmax" softmax_param { axis: 7 }', "out of range")
    fails('bottom: "label" top: "loss"', 'bottom: "label" top: "loss" loss_weight: -1', "must not be negative")
    fails('bottom: "label" top: "loss"', 'bottom: "conv1" top: "loss"', "must be the labels")
    fails(
        'bottom: "fc" bottom: "label" top: "accuracy"',
        'bottom: "fc" bottom: "label" top: "accuracy" accuracy_param { top_k: 0 }',
        "at least 1",
    )
    fails('top: "fc" inner', 'top: "fc" propagate_down: false propagate_down: true inner', "once per bottom")


def test_label_only_feeds_losses_and_metrics_do_not_feed_layers() -> None:
    relu = 'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }'
    text = SMALL.replace(relu, relu + '\nlayer { name: "x" type: "Power" bottom: "label" top: "x" }')
    error = error_of(text)
    assert error.kind == "bottom" and "holds the labels" in error.message
    text = SMALL + 'layer { name: "x" type: "Power" bottom: "loss" top: "x" exclude { stage: "deploy" } }\n'
    error = error_of(text)
    assert "which kiln computes itself" in error.message


def test_no_single_output_is_an_error() -> None:
    text = SMALL.replace(
        'layer { name: "loss"',
        'layer { name: "fc2" type: "InnerProduct" bottom: "pool1" top: "fc2" }\nlayer { name: "loss"',
    )
    # deploy has no loss: the train stage's scores ('fc') are its output, fc2 is left unused
    assert summarize(text, 10, (1, 28, 28), "deploy").heads == (("fc", 1.0),)
    # without any loss or softmax, two outputs leave no way to tell the scores
    text = "\n".join(line for line in text.splitlines() if '"SoftmaxWithLoss"' not in line and '"Softmax"' not in line)
    error = error_of(text)
    assert error.kind == "structure" and "no single output" in error.message and "'fc', 'fc2'" in error.message
    assert error.line == line_of(text, 'name: "fc2"')
    # one output and no loss: trained with a softmax loss, with a warning; deploy gets a Softmax
    text = "\n".join(line for line in text.splitlines() if '"fc2"' not in line)
    summaries = check_text(text, 10, (1, 28, 28))
    assert summaries["train"].heads == (("fc", 1.0),) and "no SoftmaxWithLoss" in summaries["train"].warnings[0]
    assert summaries["deploy"].layers[-1].note == "added by kiln"


def test_too_many_parameters_is_refused_before_allocating() -> None:
    text = LENET.replace("num_output: 500", "num_output: 4000000")
    error = error_of(text)
    assert "more than the limit" in error.message and error.line == line_of(text, 'name: "ip1"')
    model, summary = build_from_text(text, 10, (1, 28, 28), device="meta", max_parameters=None)
    assert summary.total_params > 3_000_000_000
    assert all(p.is_meta for p in model.parameters())


# ------------------------------------------------------------------------------------------------
# Stages: Caffe's include/exclude rules with DIGITS' three states
# ------------------------------------------------------------------------------------------------
RULES = """
layer { name: "data" type: "Input" top: "data" }
layer { name: "all" type: "Power" bottom: "data" top: "x" }
layer { name: "train_only" type: "Power" bottom: "x" top: "x" include { stage: "train" } }
layer { name: "val_only" type: "Power" bottom: "x" top: "x" include { stage: "val" } }
layer { name: "deploy_only" type: "Power" bottom: "x" top: "x" include { stage: "deploy" } }
layer { name: "not_deploy" type: "Power" bottom: "x" top: "x" exclude { stage: "deploy" } }
layer { name: "test_phase" type: "Power" bottom: "x" top: "x" include { phase: TEST } }
layer { name: "train_phase" type: "Power" bottom: "x" top: "x" include { phase: TRAIN } }
layer { name: "train_or_deploy" type: "Power" bottom: "x" top: "x" include { stage: "train" } include { stage: "deploy" } }
layer { name: "test_and_val" type: "Power" bottom: "x" top: "x" include { phase: TEST stage: "val" } }
layer { name: "train_phase_val" type: "Power" bottom: "x" top: "x" include { phase: TRAIN stage: "val" } }
layer { name: "not_stage_val" type: "Power" bottom: "x" top: "x" include { not_stage: "val" } }
layer { name: "exclude_test" type: "Power" bottom: "x" top: "x" exclude { phase: TEST } }
layer { name: "levels" type: "Power" bottom: "x" top: "x" include { min_level: 1 } }
layer { name: "fc" type: "InnerProduct" bottom: "x" top: "fc" inner_product_param { num_output: 3 } }
"""


def test_include_exclude_rules_as_caffe_evaluates_them_in_digits_stages() -> None:
    expected = {
        # DIGITS' popup table, plus the other forms of Caffe's NetStateRule
        "train": [
            "data",
            "all",
            "train_only",
            "not_deploy",
            "train_phase",
            "train_or_deploy",
            "not_stage_val",
            "exclude_test",
            "fc",
        ],
        "val": ["data", "all", "val_only", "not_deploy", "test_phase", "test_and_val", "fc"],
        "deploy": ["data", "all", "deploy_only", "test_phase", "train_or_deploy", "not_stage_val", "fc", "softmax"],
    }
    for stage, layers in expected.items():
        assert names(RULES, stage, classes=3) == layers, stage


def test_plain_caffe_train_val_file_works() -> None:
    text = """name: "caffe-lenet"
layer {
  name: "mnist"
  type: "Data"
  top: "data"
  top: "label"
  include { phase: TRAIN }
  transform_param { scale: 0.00390625 mean_file: "mean.binaryproto" }
  data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 64 backend: LMDB }
}
layer {
  name: "mnist"
  type: "Data"
  top: "data"
  top: "label"
  include { phase: TEST }
  transform_param { scale: 0.00390625 }
  data_param { source: "examples/mnist/mnist_test_lmdb" batch_size: 100 backend: LMDB }
}
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
    summaries = check_text(text, 10, (1, 28, 28))
    assert [r.name for r in summaries["train"].layers] == ["mnist", "ip", "loss"]
    assert [r.name for r in summaries["val"].layers] == ["mnist", "ip", "accuracy", "loss"]
    deploy = summaries["deploy"]
    # the TEST-phase data layer is kiln's input; loss and accuracy are dropped; a Softmax ends it
    assert [(r.name, r.type) for r in deploy.layers] == [
        ("mnist", "Data"),
        ("ip", "InnerProduct"),
        ("softmax", "Softmax"),
    ]
    assert deploy.layers[-1].note == "added by kiln"
    assert {name for name, _ in deploy.dropped} == {"accuracy", "loss"}
    assert "scaled by 0.00390625" in summaries["train"].layers[0].note
    # transform_param's scale applies to the images; the source and mean are kiln's business
    model, _ = build_from_text(text, 10, (1, 28, 28), "deploy")
    model.eval()
    x = torch.rand(2, 1, 28, 28) * 255
    expected = torch.nn.functional.linear(x.flatten(1) * 0.00390625, model.ip.weight, model.ip.bias)
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(model.probabilities(x), torch.softmax(expected, 1))
    assert data_hints(text)["train"].batch_size == 64 and data_hints(text)["val"].batch_size == 100


def test_no_data_layer_means_data_and_label_blobs() -> None:
    text = """
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" exclude { stage: "deploy" } }
"""
    summary = summarize(text, 4, (3, 8, 8), "train")
    assert summary.layers[0].name == "data" and summary.layers[0].note.startswith("added by kiln")
    assert summary.layers[0].tops == ("data", "label")
    assert summary.heads == (("fc", 1.0),)
    assert summarize(text, 4, (3, 8, 8), "deploy").layers[0].tops == ("data",)


def test_digits_conventions_num_output_accuracy_top_k_and_deploy_softmax() -> None:
    text = standard_text("googlenet")
    three = check_text(text, 3, (3, 224, 224))
    # every classifier without num_output gets the class count
    for name in ("loss1/classifier", "loss2/classifier", "loss3/classifier"):
        assert three["train"].layer(name).shapes == ((3,),)
    # top-5 accuracies vanish below 5 classes, stay at 5
    assert sorted(name for name, _ in three["val"].dropped) == [
        "loss1/accuracy-top5",
        "loss2/accuracy-top5",
        "loss3/accuracy-top5",
    ]
    assert check_text(text, 5, (3, 224, 224))["val"].dropped == ()
    # deploy: no aux heads, no losses; ends in the text's Softmax
    deploy = three["deploy"]
    assert deploy.layers[-1].type == "Softmax" and deploy.heads == (("loss3/classifier", 1.0),)
    assert not any(row.name.startswith(("loss1", "loss2")) for row in deploy.layers)


def test_data_hints_give_the_texts_batch_crop_and_mirror() -> None:
    hints = data_hints(standard_text("alexnet"))
    assert (hints["train"].batch_size, hints["train"].crop_size, hints["train"].mirror) == (128, 227, True)
    assert (hints["val"].batch_size, hints["val"].crop_size, hints["val"].mirror) == (32, 227, False)
    hints = data_hints(LENET)
    assert (hints["train"].batch_size, hints["train"].crop_size, hints["val"].batch_size) == (64, None, 32)


# ------------------------------------------------------------------------------------------------
# Shapes: Caffe's arithmetic, checked by hand and against the modules
# ------------------------------------------------------------------------------------------------
def test_pooling_rounds_up_as_caffe_by_hand() -> None:
    # AlexNet: 55 -> pool 3/2 -> 27 (ceil((55-3)/2)+1 = 27); 13 -> 6
    assert pool_out(55, 3, 2, 0, True) == 27 and pool_out(13, 3, 2, 0, True) == 6
    # GoogLeNet: 112 -> 56 with ceil, where floor gives 55
    assert pool_out(112, 3, 2, 0, True) == 56 and pool_out(112, 3, 2, 0, False) == 55
    # LeNet on odd sizes: 25 -> 13 (ceil) not 12
    assert pool_out(25, 2, 2, 0, True) == 13
    # padded: the last window may not start in the padding: 5, k3 s2 p1 -> ceil(4/2)+1 = 3, (3-1)*2=4 < 6 keeps 3
    assert pool_out(5, 3, 2, 1, True) == 3
    # 6, k2 s2 p1: ceil(6/2)+1 = 4, but (4-1)*2 = 6 >= 6+1? no -> 4; 4, k2 s2 p1: ceil(4/2)+1=3, 4 >= 5? no -> 3
    assert pool_out(6, 2, 2, 1, True) == 4
    # 4, k3 s3 p1: ceil(3/3)+1 = 2; (2-1)*3 = 3 >= 4+1? no -> 2; 3, k3 s3 p2: ceil(4/3)+1 = 3, 6 >= 5 -> 2
    assert pool_out(3, 3, 3, 2, True) == 2


def test_lenet_shapes_by_hand_on_other_sizes() -> None:
    summary = summarize(LENET, 4, (3, 32, 40))
    shapes = {row.name: row.shapes[0] for row in summary.layers}
    # 32 -> 28 -> 14 -> 10 -> 5; 40 -> 36 -> 18 -> 14 -> 7
    assert shapes["conv1"] == (20, 28, 36) and shapes["pool1"] == (20, 14, 18)
    assert shapes["conv2"] == (50, 10, 14) and shapes["pool2"] == (50, 5, 7)
    assert shapes["ip1"] == (500,) and shapes["ip2"] == (4,)
    # odd sizes round up: 29 -> 25 -> 13 (ceil) -> 9 -> 5
    assert summarize(LENET, 4, (1, 29, 29)).layer("pool2").shapes == ((50, 5, 5),)


def _caffe_pool(x: np.ndarray, method: str, k: int, s: int, p: int, out: int) -> np.ndarray:
    """Caffe's pooling_layer.cpp forward loops, for one square channel."""
    n = x.shape[0]
    y = np.zeros((out, out))
    for ph in range(out):
        for pw in range(out):
            hs, ws = ph * s - p, pw * s - p
            if method == "MAX":
                he, we = min(hs + k, n), min(ws + k, n)
                hs, ws = max(hs, 0), max(ws, 0)
                y[ph, pw] = x[hs:he, ws:we].max()
            else:
                he, we = min(hs + k, n + p), min(ws + k, n + p)
                size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, n), min(we, n)
                y[ph, pw] = x[hs:he, ws:we].sum() / size
    return y


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_values_match_caffes_loops(method: str) -> None:
    rng = np.random.default_rng(0)
    cases = 0
    for n in range(3, 10):
        for k in range(1, 5):
            for s in range(1, 4):
                for p in range(k):
                    out = pool_out(n, k, s, p, True)
                    if out < 1 or (p == 0 and (out - 1) * s >= n):
                        continue  # Caffe would pool an empty window there
                    text = f"""
layer {{ name: "p" type: "Pooling" bottom: "data" top: "p"
  pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "p" top: "fc" }}
"""
                    model, summary = build_from_text(text, 2, (1, n, n), "deploy")
                    assert summary.layer("p").shapes == ((1, out, out),)
                    x = rng.normal(size=(n, n))
                    got = model.layer_outputs(torch.tensor(x, dtype=torch.float32)[None, None])["p"][0, 0]
                    np.testing.assert_allclose(got.numpy(), _caffe_pool(x, method, k, s, p, out), rtol=1e-5, atol=1e-6)
                    cases += 1
    assert cases > 100


def test_kiln_drops_the_empty_window_caffe_would_pool() -> None:
    # k1 s2 on 28: Caffe's formula gives 15 with a last window wholly outside the image; kiln (and torch) 14
    assert pool_out(28, 1, 2, 0, True) == 14


def test_convolution_output_sizes_by_hand() -> None:
    text = """
layer { name: "c" type: "Convolution" bottom: "data" top: "c"
  convolution_param { num_output: 6 kernel_h: 5 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 2 pad_w: 0 dilation: 2 group: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "c" top: "fc" }
"""
    summary = summarize(text, 2, (3, 20, 11))
    # h: (20 + 4 - (2*4+1)) // 2 + 1 = 8; w: (11 - (2*2+1)) // 1 + 1 = 7
    assert summary.layer("c").shapes == ((6, 8, 7),)
    assert summary.layer("c").params == 6 * 1 * 5 * 3 + 6  # group 3: one input channel per filter
    model, _ = build_from_text(text, 2, (3, 20, 11))
    assert model.layer_outputs(torch.zeros(1, 3, 20, 11))["c"].shape == (1, 6, 8, 7)


def test_every_layer_type_runs_forward_and_backward_with_summary_shapes() -> None:
    text = """name: "everything"
input: "data"
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
  convolution_param { num_output: 8 kernel_h: 3 kernel_w: 2 pad_h: 1 stride: 2 dilation: 2 weight_filler { type: "msra" } } }
layer { name: "bn" type: "BatchNorm" bottom: "c1" top: "c1" param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }
layer { name: "sc" type: "Scale" bottom: "c1" top: "c1" scale_param { bias_term: true } }
layer { name: "pr" type: "PReLU" bottom: "c1" top: "c1" }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2" convolution_param { num_output: 8 kernel_size: 3 pad: 1 group: 4 weight_filler { type: "xavier" } } }
layer { name: "elu" type: "ELU" bottom: "c2" top: "c2" }
layer { name: "sum" type: "Eltwise" bottom: "c1" bottom: "c2" top: "sum" eltwise_param { coeff: 1 coeff: -0.5 } }
layer { name: "prod" type: "Eltwise" bottom: "c1" bottom: "c2" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "sum" bottom: "prod" top: "max" eltwise_param { operation: MAX } }
layer { name: "cat" type: "Concat" bottom: "max" bottom: "c2" top: "cat" }
layer { name: "lrn" type: "LRN" bottom: "cat" top: "lrn" lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL } }
layer { name: "lrn2" type: "LRN" bottom: "lrn" top: "lrn2" }
layer { name: "sig" type: "Sigmoid" bottom: "lrn2" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "sig" top: "tanh" }
layer { name: "pow" type: "Power" bottom: "tanh" top: "pow" power_param { power: 2 scale: 0.5 shift: 1 } }
layer { name: "bias" type: "Bias" bottom: "pow" top: "pow" }
layer { name: "p1" type: "Pooling" bottom: "pow" top: "p1" pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 2 } }
layer { name: "p2" type: "Pooling" bottom: "p1" top: "p2" pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 2 } }
layer { name: "g" type: "Pooling" bottom: "p2" top: "g" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fl" type: "Flatten" bottom: "p2" top: "fl" }
layer { name: "rs" type: "Reshape" bottom: "fl" top: "rs" reshape_param { shape { dim: 0 dim: -1 dim: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "rs" top: "rs" relu_param { negative_slope: 0.1 } }
layer { name: "drop" type: "Dropout" bottom: "rs" top: "rs" }
layer { name: "ip" type: "InnerProduct" bottom: "rs" top: "ip" inner_product_param { weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip_g" type: "InnerProduct" bottom: "g" top: "ip_g" inner_product_param { weight_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "both" type: "Eltwise" bottom: "ip" bottom: "ip_g" top: "both" }
layer { name: "sm" type: "Softmax" bottom: "both" top: "prob" include { stage: "deploy" } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "both" bottom: "label" exclude { stage: "deploy" } }
"""
    model, summary = build_from_text(text, 5, (3, 17, 15))
    types = {row.type for row in summary.layers}
    assert types >= {
        "Convolution", "BatchNorm", "Scale", "PReLU", "ELU", "Eltwise", "Concat", "LRN", "Sigmoid", "TanH",
        "Power", "Bias", "Pooling", "Flatten", "Reshape", "ReLU", "Dropout", "InnerProduct", "SoftmaxWithLoss",
    }  # fmt: skip
    assert summary.layer("p1").shapes == ((16, 5, 5),)  # AVE k3 s2 pad 2 on 8x7: 6 -> 5 (window in padding), 5
    x = torch.randn(4, 3, 17, 15)
    model.train()
    out = model(x)
    assert out.shape == (4, 5)
    nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert not model.bn.running_mean.eq(0).all()  # statistics moved
    model.eval()
    outputs = model.layer_outputs(x)
    for row in summary.layers:
        if row.name in outputs:
            assert tuple(outputs[row.name].shape[1:]) == row.shapes[0], row.name
    assert model(x).shape == (4, 5)
    assert summary.total_params == sum(p.numel() for p in model.parameters())


def test_layer_arithmetic() -> None:
    text = """
layer { name: "pow" type: "Power" bottom: "data" top: "pow" power_param { power: 2 scale: 0.5 shift: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "pow" top: "sum" eltwise_param { coeff: 2 coeff: -1 } }
layer { name: "max" type: "Eltwise" bottom: "data" bottom: "pow" top: "max" eltwise_param { operation: MAX } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "max" top: "cat" }
layer { name: "sc" type: "Scale" bottom: "cat" top: "sc" scale_param { filler { value: 3 } bias_term: true bias_filler { value: 1 } } }
layer { name: "lrn" type: "LRN" bottom: "sc" top: "lrn" lrn_param { local_size: 3 alpha: 0.3 beta: 0.75 k: 2 } }
layer { name: "fl" type: "Flatten" bottom: "lrn" top: "fl" }
layer { name: "fc" type: "InnerProduct" bottom: "fl" top: "fc" inner_product_param { weight_filler { type: "gaussian" } } }
"""
    model, summary = build_from_text(text, 3, (2, 3, 3), "deploy")
    x = torch.randn(2, 2, 3, 3)
    out = model.layer_outputs(x)
    pow_ = (1 + 0.5 * x) ** 2
    torch.testing.assert_close(out["pow"], pow_)
    torch.testing.assert_close(out["sum"], 2 * x - pow_)
    torch.testing.assert_close(out["max"], torch.maximum(x, pow_))
    cat = torch.cat([2 * x - pow_, torch.maximum(x, pow_)], 1)
    torch.testing.assert_close(out["sc"], cat * 3 + 1)
    assert summary.layer("sc").params == 8  # 4 channels: scale and bias
    sc = cat * 3 + 1
    sq = torch.nn.functional.pad(sc * sc, (0, 0, 0, 0, 1, 1))
    torch.testing.assert_close(out["lrn"], sc / (2 + 0.3 / 3 * (sq[:, :4] + sq[:, 1:5] + sq[:, 2:6])) ** 0.75)
    torch.testing.assert_close(out["fl"], out["lrn"].flatten(1))  # Caffe's C, H, W order


def test_scale_by_a_second_bottom_lines_up_from_the_batch_axis() -> None:
    text = """
layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 weight_filler { value: 1 } } }
layer { name: "sc2" type: "Scale" bottom: "c" bottom: "data" top: "sc2" scale_param { axis: 0 } }
layer { name: "fc" type: "InnerProduct" bottom: "sc2" top: "fc" }
"""
    model, _ = build_from_text(text, 3, (2, 3, 3), "deploy")
    x = torch.randn(2, 2, 3, 3)
    out = model.layer_outputs(x)
    torch.testing.assert_close(out["sc2"], out["c"] * x)
    error = error_of(text.replace(" scale_param { axis: 0 }", ""), classes=3, shape=(2, 3, 3))
    assert "set axis: 0" in error.message


def test_lrn_matches_caffes_formulas() -> None:
    x = torch.rand(1, 7, 5, 5) * 3
    across = """layer { name: "n" type: "LRN" bottom: "data" top: "n" lrn_param { local_size: 5 alpha: 0.1 beta: 0.75 k: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "n" top: "fc" }"""
    model, _ = build_from_text(across, 2, (7, 5, 5), "deploy")
    sq = torch.nn.functional.pad(x * x, (0, 0, 0, 0, 2, 2))
    scale = 2 + 0.1 / 5 * sum(sq[:, i : i + 7] for i in range(5))
    torch.testing.assert_close(model.layer_outputs(x)["n"], x / scale**0.75)
    within = across.replace("k: 2", "norm_region: WITHIN_CHANNEL").replace("local_size: 5", "local_size: 3")
    model, _ = build_from_text(within, 2, (7, 5, 5), "deploy")
    padded = torch.nn.functional.pad(x * x, (1, 1, 1, 1))
    mean = sum(padded[:, :, i : i + 5, j : j + 5] for i in range(3) for j in range(3)) / 9
    torch.testing.assert_close(model.layer_outputs(x)["n"], x * (1 + 0.1 * mean) ** -0.75)


def test_batch_norm_use_global_stats() -> None:
    base = """layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" {p} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "bn" top: "fc" }}"""
    x = torch.randn(8, 3, 4, 4) * 5 + 2
    for param, train_uses_batch, eval_uses_batch in (
        ("", True, False),
        ("batch_norm_param { use_global_stats: true }", False, False),
        ("batch_norm_param { use_global_stats: false }", True, True),
    ):
        model, _ = build_from_text(base.format(p=param), 2, (3, 4, 4))
        for training, uses_batch in ((True, train_uses_batch), (False, eval_uses_batch)):
            model.train(training)
            y = model.layer_outputs(x)["bn"] if not training else model.bn(x)
            assert (abs(float(y.mean())) < 1e-4) == uses_batch, (param, training)


# ------------------------------------------------------------------------------------------------
# In-place layers
# ------------------------------------------------------------------------------------------------
def test_in_place_layers_rewrite_the_blob_for_later_readers_as_caffe() -> None:
    text = """
layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "gaussian" } } }
layer { name: "before" type: "Power" bottom: "c" top: "before" }
layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }
layer { name: "after" type: "Power" bottom: "c" top: "after" }
layer { name: "cat" type: "Concat" bottom: "before" bottom: "after" top: "cat" }
layer { name: "fc" type: "InnerProduct" bottom: "cat" top: "fc" }
"""
    model, summary = build_from_text(text, 3, (1, 4, 4))
    assert summary.layer("relu").tops == ("c",)
    out = model.layer_outputs(torch.randn(3, 1, 4, 4))
    assert (out["before"] < 0).any() and (out["after"] >= 0).all()
    torch.testing.assert_close(out["after"], out["before"].clamp(min=0))
    # read by "before" too: this ReLU must not overwrite conv's output in place
    assert model.relu.inplace is False


def test_in_place_relu_runs_in_place_where_autograd_allows() -> None:
    model, _ = build_from_text(LENET, 10, (1, 28, 28))
    assert model.relu1.inplace is True  # ip1's output is read by relu1 only
    text = LENET.replace(
        'layer {\n  name: "relu1"\n  type: "ReLU"',
        'layer {\n  name: "sig"\n  type: "Sigmoid"\n  bottom: "ip1"\n  top: "ip1"\n}\nlayer {\n  name: "relu1"\n  type: "ReLU"',
    )
    model, _ = build_from_text(text, 10, (1, 28, 28))
    assert model.relu1.inplace is False  # sigmoid's backward needs its output
    model.train()
    model(torch.rand(2, 1, 28, 28) * 255).sum().backward()


def test_propagate_down_false_stops_the_gradient() -> None:
    text = """
layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "gaussian" } } }
layer { name: "fc" type: "InnerProduct" bottom: "c" top: "fc" propagate_down: false inner_product_param { weight_filler { type: "gaussian" } } }
"""
    model, _ = build_from_text(text, 3, (1, 4, 4))
    model.train()
    model(torch.randn(2, 1, 4, 4)).sum().backward()
    assert model.c.weight.grad is None and model.fc.weight.grad is not None


# ------------------------------------------------------------------------------------------------
# Fillers and solver multipliers
# ------------------------------------------------------------------------------------------------
def _filled(filler: str, shape: tuple[int, int, int] = (64, 12, 12), out: int = 256, k: int = 3) -> torch.Tensor:
    text = f"""
layer {{ name: "c" type: "Convolution" bottom: "data" top: "c"
  convolution_param {{ num_output: {out} kernel_size: {k} weight_filler {{ {filler} }} bias_filler {{ type: "constant" value: 0.2 }} }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "c" top: "fc" inner_product_param {{ num_output: 2 }} }}
"""
    torch.manual_seed(0)
    model, _ = build_from_text(text, 2, shape, "deploy")
    assert (model.c.bias == 0.2).all()
    return model.c.weight.detach()


def test_fillers_statistics() -> None:
    fan_in, fan_out = 64 * 9, 256 * 9
    w = _filled('type: "constant" value: 0.5')
    assert (w == 0.5).all()
    w = _filled('type: "uniform" min: -0.2 max: 0.6')
    assert -0.2 <= w.min() < -0.19 and 0.59 < w.max() <= 0.6 and float(w.mean()) == pytest.approx(0.2, abs=0.01)
    w = _filled('type: "gaussian" mean: 1 std: 0.05')
    assert float(w.mean()) == pytest.approx(1.0, abs=0.002) and float(w.std()) == pytest.approx(0.05, rel=0.02)
    for norm, n in (("FAN_IN", fan_in), ("FAN_OUT", fan_out), ("AVERAGE", (fan_in + fan_out) / 2)):
        bound = math.sqrt(3 / n)
        w = _filled(f'type: "xavier" variance_norm: {norm}')
        assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound, norm
        assert float(w.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)
        w = _filled(f'type: "msra" variance_norm: {norm}')
        assert float(w.std()) == pytest.approx(math.sqrt(2 / n), rel=0.02), norm
    w = _filled('type: "gaussian" std: 1 sparse: 64')  # keep 64 of 256 outputs' worth: a quarter non-zero
    assert float((w != 0).float().mean()) == pytest.approx(0.25, abs=0.01)
    # no filler: Caffe's constant 0, with a warning
    summary = summarize(SMALL.replace(' weight_filler { type: "xavier" }', "", 1), 10, (1, 28, 28))
    assert any("conv1" in w and "weight_filler" in w for w in summary.warnings)


def test_default_fillers_of_prelu_scale_and_bias() -> None:
    text = """
layer { name: "pr" type: "PReLU" bottom: "data" top: "pr" }
layer { name: "prs" type: "PReLU" bottom: "pr" top: "prs" prelu_param { channel_shared: true } }
layer { name: "sc" type: "Scale" bottom: "prs" top: "sc" scale_param { bias_term: true } }
layer { name: "b" type: "Bias" bottom: "sc" top: "b" bias_param { filler { type: "constant" value: 0.5 } } }
layer { name: "fc" type: "InnerProduct" bottom: "b" top: "fc" }
"""
    model, summary = build_from_text(text, 2, (3, 4, 4))
    assert (model.pr.weight == 0.25).all() and model.pr.weight.shape == (3,) and model.prs.weight.shape == (1,)
    assert (model.sc.weight == 1).all() and (model.sc.bias == 0).all() and (model.b.bias == 0.5).all()
    assert [summary.layer(n).params for n in ("pr", "prs", "sc", "b")] == [3, 1, 6, 3]


def test_lr_and_decay_multipliers_are_exposed() -> None:
    model, _ = build_from_text(standard_text("alexnet"), 10, (3, 67, 67), device="meta")
    mult = model.param_multipliers()
    assert set(mult) == {name for name, _ in model.named_parameters()}
    assert mult["conv1.weight"] == (1.0, 1.0) and mult["conv1.bias"] == (2.0, 0.0)
    assert mult["fc8.weight"] == (1.0, 1.0) and mult["fc8.bias"] == (2.0, 0.0)
    groups = {(g["lr_mult"], g["decay_mult"]): g for g in model.multiplier_groups()}
    assert set(groups) == {(1.0, 1.0), (2.0, 0.0)}
    assert len(groups[(2.0, 0.0)]["params"]) == 8 and all(n.endswith(".bias") for n in groups[(2.0, 0.0)]["names"])
    # lr_mult 0 freezes: no gradient, left out of the groups; BatchNorm's three specs apply to statistics
    text = SMALL.replace('top: "conv1"\n', 'top: "conv1"\n  param { lr_mult: 0 } param { lr_mult: 0 }\n', 1)
    model, _ = build_from_text(text, 10, (1, 28, 28))
    assert model.conv1.weight.requires_grad is False and model.conv1.bias.requires_grad is False
    assert all(not n.startswith("conv1") for g in model.multiplier_groups() for n in g["names"])
    assert model.param_multipliers()["conv1.weight"] == (0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# The module
# ------------------------------------------------------------------------------------------------
def test_module_follows_the_registry_contract_and_shares_weights_between_stages() -> None:
    model, summary = build_from_text(SMALL, 3, (2, 10, 10))
    assert summary.stage == "train" and model.aux_weights == [] and model.loss_weights == [1.0]
    x = torch.randn(5, 2, 10, 10)
    model.train()
    assert model(x).shape == (5, 3)
    model.eval()
    assert model(x).shape == (5, 3)
    deploy, _ = build_from_text(SMALL, 3, (2, 10, 10), "deploy")
    deploy.load_state_dict(model.state_dict())
    deploy.eval()
    torch.testing.assert_close(deploy(x), model(x))
    assert torch.allclose(deploy.probabilities(x).sum(1), torch.ones(5))
    model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), deploy(x))


def test_val_stage_summary_and_train_module_run_the_val_layers_in_eval() -> None:
    text = SMALL.replace(
        'layer { name: "pool1"',
        'layer { name: "boost" type: "Power" bottom: "conv1" top: "conv1" power_param { scale: 2 } include { stage: "val" } }\nlayer { name: "pool1"',
    )
    model, summary = build_from_text(text, 3, (1, 10, 10), "val")
    assert summary.stage == "val" and "boost" in [r.name for r in summary.layers]
    plain, _ = build_from_text(SMALL, 3, (1, 10, 10))
    plain.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 10, 10)
    model.train(), plain.train()
    torch.testing.assert_close(model(x), plain(x))  # train stage: no boost
    model.eval(), plain.eval()
    assert not torch.allclose(model(x), plain(x))  # val stage: boosted


def test_summary_as_dict_and_table() -> None:
    summary = summarize(LENET, 10, (1, 28, 28), "deploy")
    data = summary.as_dict()
    assert data["total_params"] == 431_080 and data["stage"] == "deploy"
    assert data["layers"][2] == {
        "name": "conv1",
        "type": "Convolution",
        "line": line_of(LENET, 'name: "conv1"') - 1,
        "bottoms": ["scaled"],
        "tops": ["conv1"],
        "shapes": [[20, 24, 24]],
        "params": 520,
        "note": "",
    }
    table = summary.table()
    assert "conv1" in table and "20x24x24" in table and "431,080" in table


def test_layer_names_that_clash_with_module_attributes_or_hold_dots() -> None:
    text = """
layer { name: "training" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "aux_weights" type: "ReLU" bottom: "a" top: "a" }
layer { name: "forward" type: "Power" bottom: "a" top: "b" }
layer { name: "conv.1" type: "InnerProduct" bottom: "b" top: "c" }
"""
    model, summary = build_from_text(text, 3, (1, 4, 4))
    assert model.aux_weights == [] and model.training and callable(model.forward)
    assert sorted(model.layer_names) == ["aux_weights_2", "conv_1", "forward_2", "training_2"]
    assert {n for n, _ in model.named_parameters()} == {
        "training_2.weight",
        "training_2.bias",
        "conv_1.weight",
        "conv_1.bias",
    }
    assert set(model.layer_outputs(torch.zeros(1, 1, 4, 4))) == {"training", "aux_weights", "forward", "conv.1"}
    assert [row.name for row in summary.layers][1:] == ["training", "aux_weights", "forward", "conv.1"]


def test_deploy_warns_when_only_the_data_layers_scale() -> None:
    text = SMALL.replace('include { stage: "train" }', 'include { stage: "train" } transform_param { scale: 0.5 }')
    text = text.replace('include { stage: "val" } }', 'include { stage: "val" } transform_param { scale: 0.5 } }', 1)
    summaries = check_text(text, 10, (1, 28, 28))
    assert summaries["val"].warnings == ()
    assert "add a Power layer" in summaries["deploy"].warnings[0]
