"""The protobuf text format reader: what Caffe accepts reads the same, and every mistake has a place."""

from __future__ import annotations

import math

import pytest

from kiln.networks.prototxt import PrototxtError, parse_net
from kiln.networks.prototxt.parse import parse_message, tokenize


def line_of(text: str, marker: str, nth: int = 0) -> int:
    """1-based line of the nth line containing marker."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    return hits[nth]


def error_of(text: str) -> PrototxtError:
    with pytest.raises(PrototxtError) as info:
        parse_net(text)
    return info.value


# ------------------------------------------------------------------------------------------------
# Valid texts
# ------------------------------------------------------------------------------------------------
def test_reads_messages_repeated_fields_and_defaults() -> None:
    net = parse_net(
        """
        name: "tiny"   # a comment
        layer {
          name: "conv1"
          type: "Convolution"
          bottom: "data"
          top: "conv1"
          param { lr_mult: 1 }
          param { lr_mult: 2 decay_mult: 0 }
          convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } }
        }
        """
    )
    assert net.get("name") == "tiny"
    (layer,) = net.all("layer")
    assert layer.all("bottom") == ["data"]
    assert [p.get("lr_mult") for p in layer.all("param")] == [1.0, 2.0]
    assert [p.get("decay_mult") for p in layer.all("param")] == [1.0, 0.0]  # Caffe's default 1
    conv = layer.get("convolution_param")
    assert conv.get("num_output") == 20 and conv.all("kernel_size") == [5]
    assert conv.get("bias_term") is True and conv.get("group") == 1  # defaults
    assert conv.get("weight_filler").get("type") == "xavier"
    assert conv.get("bias_filler").get("type") == "constant"  # absent message reads as defaults
    assert not conv.get("bias_filler").present
    assert layer.where("top") == (7, 11)  # the field's line and column
    assert layer.where("top", value=True) == (7, 16)


def test_every_spelling_protobuf_text_format_allows() -> None:
    net = parse_net(
        """
        name: 'single' "-and-" "adjacent"
        input_shape: [ { dim: [1, 0x3, 010] }, < dim: 28 > ];
        layer: { name: "a\\tb\\"c\\101\\x42" type: "Pooling",
                 pooling_param < pool: 1 kernel_size: 3; stride: 2 global_pooling: t round_mode: FLOOR > }
        layer { type: "Dropout" dropout_param { dropout_ratio: .5f } loss_weight: [0, 1e-3, 5., -2E+1, 0x10] }
        layer { type: "BatchNorm" batch_norm_param { use_global_stats: False eps: 1 } propagate_down: [true, 0] }
        """
    )
    assert net.get("name") == "single-and-adjacent"
    shapes = net.all("input_shape")
    assert [s.all("dim") for s in shapes] == [[1, 3, 8], [28]]  # hex, octal
    first, second, third = net.all("layer")
    assert first.get("name") == 'a\tb"cAB'
    pool = first.get("pooling_param")
    assert (pool.get("pool"), pool.get("kernel_size"), pool.get("stride")) == ("AVE", 3, 2)  # enum by number
    assert pool.get("global_pooling") is True and pool.get("round_mode") == "FLOOR"
    assert second.get("dropout_param").get("dropout_ratio") == 0.5
    assert second.all("loss_weight") == [0.0, 1e-3, 5.0, -20.0, 16.0]
    assert third.get("batch_norm_param").get("use_global_stats") is False
    assert third.all("propagate_down") == [True, False]


def test_an_empty_text_is_an_empty_net() -> None:
    net = parse_net("  # nothing but a comment\n\n")
    assert net.all("layer") == [] and net.get("name") == ""


def test_tokens_carry_lines_and_columns() -> None:
    tokens = list(tokenize('a: 1\n  b { c: "x" }'))
    assert [(t.text, t.line, t.column) for t in tokens[:4]] == [("a", 1, 1), (":", 1, 2), ("1", 1, 4), ("b", 2, 3)]
    assert tokens[-1].kind == "end"


def test_parse_message_reads_other_caffe_messages() -> None:
    filler = parse_message('type: "gaussian" std: 0.01', "FillerParameter")
    assert filler.get("std") == pytest.approx(0.01) and filler.get("mean") == 0.0


# ------------------------------------------------------------------------------------------------
# Invalid texts: syntax
# ------------------------------------------------------------------------------------------------
SYNTAX_ERRORS = [
    # (text, line, column, words in the message)
    ('layer {\n  name: "a"\n', 3, 1, "'}' to close the '{' of line 1"),
    ('layer {\n  name "a"\n}', 2, 8, "':' or '{' after the field name 'name'"),
    ('name: "open\n', 1, 7, "not closed"),
    ("name: @", 1, 7, "unexpected character '@'"),
    ("}", 1, 1, "a field name, found '}'"),
    ("layer { name: }", 1, 15, "a value"),
    ('layer { bottom: ["a" "b" }', 1, 26, "',' or ']'"),
    ("input_dim: -", 1, 13, "a number after '-'"),
    ('name: "bad \\q escape"', 1, 12, "unknown escape '\\q'"),
    ("[caffe.ext] { }", 1, 1, "extension"),
    ("42: 1", 1, 1, "a field name"),
]


@pytest.mark.parametrize(("text", "line", "column", "words"), SYNTAX_ERRORS)
def test_syntax_errors_say_where_and_what_was_expected(text: str, line: int, column: int, words: str) -> None:
    error = error_of(text)
    assert (error.line, error.column) == (line, column), str(error)
    assert words in error.message
    assert error.kind in ("syntax", "unknown_field")
    assert str(error).startswith(f"line {line}, column {column}: ")
    assert error.as_dict()["line"] == line


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    error = error_of("x { " * 500 + "}" * 500)
    assert "nested" in error.message


# ------------------------------------------------------------------------------------------------
# Invalid texts: against Caffe's messages
# ------------------------------------------------------------------------------------------------
def test_unknown_parameter_names_the_message_and_a_close_match() -> None:
    text = """layer {
  name: "conv1"
  type: "Convolution"
  convolution_param {
    num_output: 20
    kernel_sise: 5
  }
}"""
    error = error_of(text)
    assert (error.line, error.column) == (6, 5)
    assert error.kind == "unknown_field"
    assert "unknown parameter 'kernel_sise' in ConvolutionParameter (did you mean 'kernel_size'?)" in error.message
    assert "kernel_size" in error.expected


def test_caffe_fields_kiln_does_not_build_and_v1_layers_are_named() -> None:
    assert "kiln does not build" in error_of('layer { name: "p" python_param { } }').message
    error = error_of('layers { name: "old" type: CONVOLUTION }')
    assert error.kind == "unknown_field" and "V1" in error.message


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("layer { convolution_param { num_output: -5 } }", "non-negative integer, not -5"),
        ("layer { convolution_param { num_output: 2.5 } }", "whole number"),
        ("layer { convolution_param { num_output: 4294967296 } }", "out of range"),
        ('layer { convolution_param { num_output: "20" } }', 'not "20"'),
        ("layer { name: conv1 }", "put it in quotes"),
        ("layer { pooling_param { pool: MAXX } }", "did you mean 'MAX'"),
        ("layer { pooling_param { pool: 7 } }", "one of MAX, AVE, STOCHASTIC"),
        ("layer { pooling_param { global_pooling: yes } }", "true or false"),
        ("layer { dropout_param { dropout_ratio: nan } }", "finite"),
        ("layer { dropout_param { dropout_ratio: -inf } }", "finite"),
        ("layer { dropout_param { dropout_ratio: 1e39 } }", "finite"),
        ("layer { dropout_param { dropout_ratio: 5abc } }", "not 5abc"),
        ("layer { name: { } }", "not a message"),
        ('layer { convolution_param: "x" }', "is a message"),
    ],
)
def test_values_that_do_not_fit_their_field(text: str, words: str) -> None:
    error = error_of(text)
    assert error.kind == "value"
    assert words in error.message, error.message
    assert error.line == 1 and error.column > 1


def test_a_singular_field_given_twice() -> None:
    text = 'layer {\n  name: "a"\n  name: "b"\n}'
    error = error_of(text)
    assert (error.line, error.column) == (3, 3)
    assert "given twice" in error.message and "line 2" in error.message


def test_special_floats_and_signs() -> None:
    net = parse_net("layer { power_param { power: -2 scale: -0.5e1 shift: 3F } }")
    p = net.get("layer").get("power_param")
    assert (p.get("power"), p.get("scale"), p.get("shift")) == (-2.0, -5.0, 3.0)
    assert math.isclose(
        parse_net("layer { elu_param { alpha: 1E-2 } }").get("layer").get("elu_param").get("alpha"), 0.01
    )


def test_errors_cross_process_boundaries() -> None:
    import pickle

    error = error_of("layer {")
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, PrototxtError) and isinstance(again, ValueError)
    assert (again.line, again.column, again.kind, again.message, again.expected) == (
        error.line,
        error.column,
        error.kind,
        error.message,
        error.expected,
    )
    assert str(again) == str(error)
