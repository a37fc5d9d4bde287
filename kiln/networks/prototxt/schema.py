"""The part of Caffe's ``caffe.proto`` that kiln reads: message names, field types and defaults.

Written from Caffe's documented message definitions (BVLC caffe.proto); only the fields of the
layers kiln builds are listed. A field Caffe knows but kiln does not build is named in
``CAFFE_ONLY_LAYER_FIELDS`` so that the error can say so instead of "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# scalar kinds and their ranges
INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
}
SCALAR_KINDS = ("int32", "uint32", "int64", "float", "bool", "string", "enum")


@dataclass(frozen=True)
class Field:
    kind: str  # one of SCALAR_KINDS or "message"
    default: Any = None
    repeated: bool = False
    enum: tuple[str, ...] = ()  # enum names in number order (Caffe's enums number 0, 1, 2 ...)
    message: str = ""  # message type name when kind == "message"

    @property
    def type_name(self) -> str:
        if self.kind == "message":
            return self.message
        if self.kind == "enum":
            return "one of " + ", ".join(self.enum)
        return {"int32": "an integer", "uint32": "a non-negative integer", "int64": "an integer"}.get(
            self.kind, {"float": "a number", "bool": "true or false", "string": "a quoted string"}.get(self.kind, "")
        )


def _opt(kind: str, default: Any = None) -> Field:
    return Field(kind, default)


def _rep(kind: str) -> Field:
    return Field(kind, repeated=True)


def _enum(default: str, *names: str) -> Field:
    return Field("enum", default, enum=names)


def _msg(name: str) -> Field:
    return Field("message", message=name)


def _rep_msg(name: str) -> Field:
    return Field("message", repeated=True, message=name)


_ENGINE = _enum("DEFAULT", "DEFAULT", "CAFFE", "CUDNN")

MESSAGES: dict[str, dict[str, Field]] = {
    "NetParameter": {
        "name": _opt("string", ""),
        "input": _rep("string"),
        "input_shape": _rep_msg("BlobShape"),
        "input_dim": _rep("int32"),
        "force_backward": _opt("bool", False),
        "state": _msg("NetState"),
        "debug_info": _opt("bool", False),
        "layer": _rep_msg("LayerParameter"),
    },
    "NetState": {
        "phase": _enum("TEST", "TRAIN", "TEST"),
        "level": _opt("int32", 0),
        "stage": _rep("string"),
    },
    "NetStateRule": {
        "phase": _enum("TRAIN", "TRAIN", "TEST"),
        "min_level": _opt("int32"),
        "max_level": _opt("int32"),
        "stage": _rep("string"),
        "not_stage": _rep("string"),
    },
    "BlobShape": {"dim": _rep("int64")},
    "ParamSpec": {
        "name": _opt("string", ""),
        "share_mode": _enum("STRICT", "STRICT", "PERMISSIVE"),
        "lr_mult": _opt("float", 1.0),
        "decay_mult": _opt("float", 1.0),
    },
    "FillerParameter": {
        "type": _opt("string", "constant"),
        "value": _opt("float", 0.0),
        "min": _opt("float", 0.0),
        "max": _opt("float", 1.0),
        "mean": _opt("float", 0.0),
        "std": _opt("float", 1.0),
        "sparse": _opt("int32", -1),
        "variance_norm": _enum("FAN_IN", "FAN_IN", "FAN_OUT", "AVERAGE"),
    },
    "LayerParameter": {
        "name": _opt("string", ""),
        "type": _opt("string", ""),
        "bottom": _rep("string"),
        "top": _rep("string"),
        "phase": _enum("TRAIN", "TRAIN", "TEST"),
        "loss_weight": _rep("float"),
        "param": _rep_msg("ParamSpec"),
        "propagate_down": _rep("bool"),
        "include": _rep_msg("NetStateRule"),
        "exclude": _rep_msg("NetStateRule"),
        "transform_param": _msg("TransformationParameter"),
        "loss_param": _msg("LossParameter"),
        "accuracy_param": _msg("AccuracyParameter"),
        "batch_norm_param": _msg("BatchNormParameter"),
        "bias_param": _msg("BiasParameter"),
        "concat_param": _msg("ConcatParameter"),
        "convolution_param": _msg("ConvolutionParameter"),
        "data_param": _msg("DataParameter"),
        "dropout_param": _msg("DropoutParameter"),
        "eltwise_param": _msg("EltwiseParameter"),
        "elu_param": _msg("ELUParameter"),
        "flatten_param": _msg("FlattenParameter"),
        "hdf5_data_param": _msg("HDF5DataParameter"),
        "inner_product_param": _msg("InnerProductParameter"),
        "input_param": _msg("InputParameter"),
        "lrn_param": _msg("LRNParameter"),
        "pooling_param": _msg("PoolingParameter"),
        "power_param": _msg("PowerParameter"),
        "prelu_param": _msg("PReLUParameter"),
        "relu_param": _msg("ReLUParameter"),
        "reshape_param": _msg("ReshapeParameter"),
        "scale_param": _msg("ScaleParameter"),
        "sigmoid_param": _msg("SigmoidParameter"),
        "softmax_param": _msg("SoftmaxParameter"),
        "tanh_param": _msg("TanHParameter"),
    },
    "TransformationParameter": {
        "scale": _opt("float", 1.0),
        "mirror": _opt("bool", False),
        "crop_size": _opt("uint32", 0),
        "mean_file": _opt("string", ""),
        "mean_value": _rep("float"),
        "force_color": _opt("bool", False),
        "force_gray": _opt("bool", False),
    },
    "LossParameter": {
        "ignore_label": _opt("int32"),
        "normalization": _enum("VALID", "FULL", "VALID", "BATCH_SIZE", "NONE"),
        "normalize": _opt("bool"),
    },
    "AccuracyParameter": {
        "top_k": _opt("uint32", 1),
        "axis": _opt("int32", 1),
        "ignore_label": _opt("int32"),
    },
    "BatchNormParameter": {
        "use_global_stats": _opt("bool"),
        "moving_average_fraction": _opt("float", 0.999),
        "eps": _opt("float", 1e-5),
    },
    "BiasParameter": {
        "axis": _opt("int32", 1),
        "num_axes": _opt("int32", 1),
        "filler": _msg("FillerParameter"),
    },
    "ConcatParameter": {
        "axis": _opt("int32", 1),
        "concat_dim": _opt("uint32", 1),
    },
    "ConvolutionParameter": {
        "num_output": _opt("uint32"),
        "bias_term": _opt("bool", True),
        "pad": _rep("uint32"),
        "kernel_size": _rep("uint32"),
        "stride": _rep("uint32"),
        "dilation": _rep("uint32"),
        "pad_h": _opt("uint32", 0),
        "pad_w": _opt("uint32", 0),
        "kernel_h": _opt("uint32"),
        "kernel_w": _opt("uint32"),
        "stride_h": _opt("uint32"),
        "stride_w": _opt("uint32"),
        "group": _opt("uint32", 1),
        "weight_filler": _msg("FillerParameter"),
        "bias_filler": _msg("FillerParameter"),
        "engine": _ENGINE,
        "axis": _opt("int32", 1),
        "force_nd_im2col": _opt("bool", False),
    },
    "DataParameter": {
        "source": _opt("string", ""),
        "batch_size": _opt("uint32"),
        "rand_skip": _opt("uint32", 0),
        "backend": _enum("LEVELDB", "LEVELDB", "LMDB"),
        "scale": _opt("float", 1.0),
        "mean_file": _opt("string", ""),
        "crop_size": _opt("uint32", 0),
        "mirror": _opt("bool", False),
        "force_encoded_color": _opt("bool", False),
        "prefetch": _opt("uint32", 4),
    },
    "DropoutParameter": {"dropout_ratio": _opt("float", 0.5)},
    "EltwiseParameter": {
        "operation": _enum("SUM", "PROD", "SUM", "MAX"),
        "coeff": _rep("float"),
        "stable_prod_grad": _opt("bool", True),
    },
    "ELUParameter": {"alpha": _opt("float", 1.0)},
    "FlattenParameter": {"axis": _opt("int32", 1), "end_axis": _opt("int32", -1)},
    "HDF5DataParameter": {
        "source": _opt("string", ""),
        "batch_size": _opt("uint32"),
        "shuffle": _opt("bool", False),
    },
    "InnerProductParameter": {
        "num_output": _opt("uint32"),
        "bias_term": _opt("bool", True),
        "weight_filler": _msg("FillerParameter"),
        "bias_filler": _msg("FillerParameter"),
        "axis": _opt("int32", 1),
        "transpose": _opt("bool", False),
    },
    "InputParameter": {"shape": _rep_msg("BlobShape")},
    "LRNParameter": {
        "local_size": _opt("uint32", 5),
        "alpha": _opt("float", 1.0),
        "beta": _opt("float", 0.75),
        "norm_region": _enum("ACROSS_CHANNELS", "ACROSS_CHANNELS", "WITHIN_CHANNEL"),
        "k": _opt("float", 1.0),
        "engine": _ENGINE,
    },
    "PoolingParameter": {
        "pool": _enum("MAX", "MAX", "AVE", "STOCHASTIC"),
        "pad": _opt("uint32", 0),
        "pad_h": _opt("uint32", 0),
        "pad_w": _opt("uint32", 0),
        "kernel_size": _opt("uint32"),
        "kernel_h": _opt("uint32"),
        "kernel_w": _opt("uint32"),
        "stride": _opt("uint32", 1),
        "stride_h": _opt("uint32"),
        "stride_w": _opt("uint32"),
        "engine": _ENGINE,
        "global_pooling": _opt("bool", False),
        "round_mode": _enum("CEIL", "CEIL", "FLOOR"),
    },
    "PowerParameter": {
        "power": _opt("float", 1.0),
        "scale": _opt("float", 1.0),
        "shift": _opt("float", 0.0),
    },
    "PReLUParameter": {
        "filler": _msg("FillerParameter"),
        "channel_shared": _opt("bool", False),
    },
    "ReLUParameter": {"negative_slope": _opt("float", 0.0), "engine": _ENGINE},
    "ReshapeParameter": {
        "shape": _msg("BlobShape"),
        "axis": _opt("int32", 0),
        "num_axes": _opt("int32", -1),
    },
    "ScaleParameter": {
        "axis": _opt("int32", 1),
        "num_axes": _opt("int32", 1),
        "filler": _msg("FillerParameter"),
        "bias_term": _opt("bool", False),
        "bias_filler": _msg("FillerParameter"),
    },
    "SigmoidParameter": {"engine": _ENGINE},
    "SoftmaxParameter": {"engine": _ENGINE, "axis": _opt("int32", 1)},
    "TanHParameter": {"engine": _ENGINE},
}

# LayerParameter fields that Caffe knows and kiln does not build: named in the error message.
CAFFE_ONLY_LAYER_FIELDS = frozenset(
    [
        "argmax_param",
        "blobs",
        "clip_param",
        "contrastive_loss_param",
        "crop_param",
        "dummy_data_param",
        "embed_param",
        "exp_param",
        "hdf5_output_param",
        "hinge_loss_param",
        "image_data_param",
        "infogain_loss_param",
        "log_param",
        "memory_data_param",
        "mvn_param",
        "parameter_param",
        "python_param",
        "recurrent_param",
        "reduction_param",
        "slice_param",
        "spp_param",
        "swish_param",
        "threshold_param",
        "tile_param",
        "window_data_param",
    ]
)

# Top-level NetParameter fields of Caffe's old formats.
OLD_NET_FIELDS = {
    "layers": "'layers' is Caffe's old (V1) format; write 'layer { ... }' with string types such as type: \"Convolution\"",
}
