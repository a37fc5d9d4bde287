"""Caffe layer types: their checks and output shapes (no tensors), and the PyTorch module each builds.

Each layer type declares which ``*_param`` messages it reads, how many bottoms and tops it takes
and its role (data, compute, loss, accuracy). Its ``infer`` function checks the parameters as
Caffe does, computes the output shapes from the bottom shapes and lists the learned blobs (in
Caffe's order, which is the order of ``param { lr_mult ... }`` specs and fillers) with a factory
for the module. Nothing is allocated until the factory runs (on the meta device), so a whole
network can be checked and summarized for free.

Shapes here leave out the batch axis: a 28x28 grey image is ``(1, 28, 28)``. Caffe's ``axis``
fields count the batch axis as 0, so ``axis: 1`` is ``shape[0]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import torch
import torch.nn.functional as F
from torch import nn

from .parse import Msg, PrototxtError

Shape = tuple[int, ...]
META = torch.device("meta")

FILLER_TYPES = ("constant", "uniform", "gaussian", "xavier", "msra")


# ------------------------------------------------------------------------------------------------
# What a layer type tells the graph builder
# ------------------------------------------------------------------------------------------------
@dataclass
class Blob:
    """A learned blob: the module attribute holding it, its shape and its filler."""

    attr: str
    shape: Shape
    filler: Msg | None  # as written in the text, or None for the layer's default
    default: dict[str, Any]  # Caffe's default filler for this blob


@dataclass
class Spec:
    tops: list[Shape]
    blobs: list[Blob] = field(default_factory=list)
    make: Callable[[], nn.Module] | None = None
    state_blobs: int = 0  # Caffe blobs that are not learned (BatchNorm's statistics)
    note: str = ""
    # a following in-place ReLU/Dropout may overwrite this layer's output without breaking autograd
    overwritable: bool = False


@dataclass
class Ctx:
    """One layer being checked: its message, its bottoms' shapes and the dataset's facts."""

    layer: Msg
    name: str
    type: str
    bottoms: list[Shape]
    num_classes: int
    input_desc: str  # "28x28", for shape errors

    def param(self, name: str) -> Msg:
        return self.layer.get(name)

    def fail(self, message: str, name: str | None = None, msg: Msg | None = None, *, kind: str = "value") -> NoReturn:
        """Raise at field ``name`` of ``msg`` (default: the layer), else at that message, else at the layer's name."""
        target = msg if msg is not None else self.layer
        if name is not None and target.has(name):
            line, column = target.where(name)
        elif target.present and target is not self.layer:
            line, column = target.line, target.column
        else:
            line, column = self.layer.where("name")
        raise PrototxtError(f"{self.name}: {message}", line, column, kind=kind)

    def shape_fail(self, size: str, detail: str) -> NoReturn:
        line, column = self.layer.where("name")
        raise PrototxtError(
            f"{self.name} gives {size} for {self.input_desc} input ({detail})",
            line,
            column,
            kind="shape",
            expected="a larger input, or smaller kernels/strides",
        )

    def image(self, index: int = 0) -> tuple[int, int, int]:
        shape = self.bottoms[index]
        if len(shape) != 3:
            self.fail(
                f"{self.type} needs a CxHxW input, but its bottom is {fmt_shape(shape)}",
                "bottom",
                kind="shape",
            )
        return shape[0], shape[1], shape[2]

    def axis(self, msg: Msg, name: str, ndim: int, *, batch_ok: bool = False, value: int | None = None) -> int:
        """Caffe's canonical axis for a blob of ``ndim`` axes without the batch (so ndim+1 in Caffe)."""
        axis = msg.get(name) if value is None else value
        full = ndim + 1
        if not -full <= axis < full:
            self.fail(f"{name} {axis} is out of range for a blob with {full} axes", name, msg)
        axis %= full
        if axis == 0 and not batch_ok:
            self.fail(f"{name} 0 is the batch axis, which kiln keeps as it is", name, msg)
        return axis


def fmt_shape(shape: Shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "a scalar"


@dataclass(frozen=True)
class LayerType:
    name: str
    params: tuple[str, ...]  # the *_param messages it reads
    bottoms: tuple[int, int]  # min, max (-1: any)
    tops: tuple[int, int]
    role: str  # data | compute | loss | accuracy
    infer: Callable[[Ctx], Spec] | None = None
    in_place: bool = False  # may run in place (top = bottom)


# ------------------------------------------------------------------------------------------------
# Fillers
# ------------------------------------------------------------------------------------------------
def filler_settings(blob: Blob) -> dict[str, Any]:
    settings = dict(blob.default)
    if blob.filler is not None:
        for name in ("type", "value", "min", "max", "mean", "std", "sparse", "variance_norm"):
            if blob.filler.has(name):
                settings[name] = blob.filler.get(name)
    defaults = {"type": "constant", "value": 0.0, "min": 0.0, "max": 1.0, "mean": 0.0, "std": 1.0, "sparse": -1}
    for key, value in defaults.items():
        settings.setdefault(key, value)
    settings.setdefault("variance_norm", "FAN_IN")
    return settings


def check_filler(ctx: Ctx, blob: Blob) -> None:
    if blob.filler is None:
        return
    f = filler_settings(blob)
    where = blob.filler
    if f["type"] not in FILLER_TYPES:
        ctx.fail(
            f"unknown filler type '{f['type']}'; kiln fills with " + ", ".join(FILLER_TYPES),
            "type",
            where,
        )
    if f["type"] == "uniform" and f["min"] > f["max"]:
        ctx.fail(f"uniform filler min {f['min']} is above max {f['max']}", "min", where)
    if f["type"] == "gaussian" and f["std"] < 0:
        ctx.fail(f"gaussian filler std {f['std']} is negative", "std", where)
    if f["sparse"] < -1:
        ctx.fail("sparse is -1 (off) or a number of non-zero inputs", "sparse", where)
    if f["type"] in ("xavier", "msra") and f["variance_norm"] != "FAN_IN" and len(blob.shape) < 2:
        ctx.fail(f"{f['type']} with {f['variance_norm']} needs a blob of 2 or more axes", "variance_norm", where)


def _fans(shape: Shape) -> tuple[int, int]:
    count = math.prod(shape)
    fan_in = count // shape[0] if shape and shape[0] else 1
    fan_out = count // shape[1] if len(shape) > 1 and shape[1] else 1
    return max(fan_in, 1), max(fan_out, 1)


@torch.no_grad()
def fill_(tensor: torch.Tensor, blob: Blob) -> None:
    """Caffe's fillers, on a tensor of Caffe's shape for the blob."""
    f = filler_settings(blob)
    kind = f["type"]
    if kind == "constant":
        tensor.fill_(f["value"])
    elif kind == "uniform":
        tensor.uniform_(f["min"], f["max"])
    elif kind == "gaussian":
        tensor.normal_(f["mean"], f["std"])
        if f["sparse"] >= 0 and tensor.ndim >= 1 and tensor.shape[0]:
            keep = min(1.0, f["sparse"] / tensor.shape[0])
            tensor.mul_(torch.bernoulli(torch.full_like(tensor, keep)))
    else:
        fan_in, fan_out = _fans(tuple(tensor.shape))
        n = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "AVERAGE": (fan_in + fan_out) / 2}[f["variance_norm"]]
        if kind == "xavier":
            bound = math.sqrt(3.0 / n)
            tensor.uniform_(-bound, bound)
        else:  # msra
            tensor.normal_(0.0, math.sqrt(2.0 / n))


def _blob(ctx: Ctx, msg: Msg, attr: str, shape: Shape, filler: str, **default: Any) -> Blob:
    blob = Blob(attr, shape, msg.get(filler) if msg.has(filler) else None, default)
    check_filler(ctx, blob)
    return blob


# ------------------------------------------------------------------------------------------------
# Modules that torch.nn does not have in Caffe's form
# ------------------------------------------------------------------------------------------------
class InnerProduct(nn.Module):
    """Caffe's InnerProduct: flatten from ``axis`` on (Caffe's C,H,W order), then a linear map."""

    def __init__(self, in_features: int, out_features: int, bias: bool, start_dim: int) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=META))
        self.bias = nn.Parameter(torch.empty(out_features, device=META)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.flatten(x, self.start_dim), self.weight, self.bias)

    def extra_repr(self) -> str:
        out, inp = self.weight.shape
        return f"in_features={inp}, out_features={out}, bias={self.bias is not None}"


class Pool(nn.Module):
    """Caffe's Pooling: MAX or AVE, ceil or floor rounding, global; padding up to kernel - 1."""

    def __init__(
        self,
        method: str,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        pad: tuple[int, int],
        ceil: bool,
        out: tuple[int, int],
        global_pool: bool,
    ) -> None:
        super().__init__()
        self.method, self.kernel, self.stride, self.pad = method, kernel, stride, pad
        self.ceil, self.out, self.global_pool = ceil, out, global_pool
        # torch pools pad at most half the kernel; Caffe up to kernel - 1: pad by hand then
        self.native = all(p <= k // 2 for p, k in zip(pad, kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool:
            return x.amax((2, 3), keepdim=True) if self.method == "MAX" else x.mean((2, 3), keepdim=True)
        if self.native:
            if self.method == "MAX":
                return F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil)
            return F.avg_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil, count_include_pad=True)
        ph, pw = self.pad
        fill = -math.inf if self.method == "MAX" else 0.0
        x = F.pad(x, (pw, pw, ph, ph), value=fill)
        if self.method == "MAX":
            y = F.max_pool2d(x, self.kernel, self.stride, 0, ceil_mode=self.ceil)
        else:
            y = F.avg_pool2d(x, self.kernel, self.stride, 0, ceil_mode=self.ceil)
        return y[:, :, : self.out[0], : self.out[1]]

    def extra_repr(self) -> str:
        if self.global_pool:
            return f"{self.method}, global"
        return f"{self.method}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}, ceil={self.ceil}"


class LRNWithinChannel(nn.Module):
    """Caffe's LRN with norm_region WITHIN_CHANNEL: x / (1 + alpha * mean of x^2 over a size x size square)^beta."""

    def __init__(self, size: int, alpha: float, beta: float) -> None:
        super().__init__()
        self.size, self.alpha, self.beta = size, alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.size - 1) // 2
        mean = F.avg_pool2d(x * x, self.size, 1, pad, ceil_mode=True, count_include_pad=True)
        return x * (1.0 + self.alpha * mean).pow(-self.beta)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, within channel"


class BatchNorm(nn.Module):
    """Caffe's BatchNorm: no scale or shift of its own (a Scale layer follows); statistics as buffers.

    ``use_global_stats`` None: batch statistics in training, running ones in eval (Caffe's default);
    True: always the running statistics; False: always the batch's.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, channels: int, eps: float, momentum: float, use_global_stats: bool | None) -> None:
        super().__init__()
        self.eps, self.momentum, self.use_global_stats = eps, momentum, use_global_stats
        self.register_buffer("running_mean", torch.zeros(channels, device=META))
        self.register_buffer("running_var", torch.ones(channels, device=META))

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_stats = self.training if self.use_global_stats is None else not self.use_global_stats
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            training=batch_stats,
            momentum=self.momentum if self.training else 0.0,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return f"{self.running_mean.shape[0]}, eps={self.eps}, momentum={self.momentum}"


class Affine(nn.Module):
    """Caffe's Scale and Bias: a learned factor and/or shift over some axes, or a second bottom's."""

    def __init__(
        self,
        multiply: bool,
        view: tuple[int, ...],
        param_shape: Shape,
        learned: bool,
        bias: bool,
        other_view: tuple[int, ...] | None,
    ) -> None:
        super().__init__()
        self.multiply, self.view, self.other_view = multiply, view, other_view
        self.weight = nn.Parameter(torch.empty(param_shape, device=META)) if learned else None
        self.bias = nn.Parameter(torch.empty(param_shape, device=META)) if bias else None

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        if other is not None and self.other_view is not None:
            other = other.reshape(self.other_view)
            x = x * other if self.multiply else x + other
        if self.weight is not None:
            x = x * self.weight.view(self.view)
        if self.bias is not None:
            x = x + self.bias.view(self.view)
        return x


class Eltwise(nn.Module):
    def __init__(self, operation: str, coeffs: list[float]) -> None:
        super().__init__()
        self.operation = operation
        self.coeffs = coeffs if any(c != 1.0 for c in coeffs) else []

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.operation == "SUM":
            if self.coeffs:
                out = xs[0] * self.coeffs[0]
                for c, x in zip(self.coeffs[1:], xs[1:]):
                    out = out + c * x
                return out
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return out
        out = xs[0]
        for x in xs[1:]:
            out = out * x if self.operation == "PROD" else torch.maximum(out, x)
        return out

    def extra_repr(self) -> str:
        return self.operation + (f", coeff={self.coeffs}" if self.coeffs else "")


class Concat(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, self.dim) if len(xs) > 1 else xs[0]


class Reshape(nn.Module):
    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = shape  # without the batch axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape((x.shape[0], *self.shape))

    def extra_repr(self) -> str:
        return f"shape={self.shape}"


class Power(nn.Module):
    """Caffe's Power: (shift + scale * x) ^ power."""

    def __init__(self, power: float, scale: float, shift: float) -> None:
        super().__init__()
        self.power, self.scale, self.shift = power, scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            x = x * self.scale
        if self.shift != 0.0:
            x = x + self.shift
        if self.power != 1.0:
            x = x.pow(self.power)
        return x

    def extra_repr(self) -> str:
        return f"power={self.power}, scale={self.scale}, shift={self.shift}"


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


# ------------------------------------------------------------------------------------------------
# Layer types
# ------------------------------------------------------------------------------------------------
def _hw(
    ctx: Ctx,
    p: Msg,
    both: str,
    h_name: str,
    w_name: str,
    *,
    default: int | None,
    minimum: int,
    repeated: bool,
    need_both: bool,
) -> tuple[int, int]:
    """Caffe's two ways of giving a 2-D size: ``both`` (1 or 2 values), or ``*_h`` and ``*_w``."""
    values = p.all(both) if repeated else ([p.get(both)] if p.has(both) else [])
    if p.has(h_name) or p.has(w_name):
        if values:
            ctx.fail(f"give either {both} or {h_name}/{w_name}, not both", h_name if p.has(h_name) else w_name, p)
        if need_both and not (p.has(h_name) and p.has(w_name)):
            ctx.fail(f"give both {h_name} and {w_name}", h_name if p.has(h_name) else w_name, p)
        h, w = (
            p.get(h_name, default if default is not None else 0),
            p.get(w_name, default if default is not None else 0),
        )
        where = (h_name, w_name)
    else:
        if not values:
            if default is None:
                ctx.fail(f"{ctx.type} needs {both} (or {h_name} and {w_name})", None, p)
            return default, default
        if len(values) > 2:
            ctx.fail(f"{both} takes 1 or 2 values for a 2-D image, not {len(values)}", both, p)
        h, w = (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
        where = (both, both)
    for value, name in zip((h, w), where):
        if value < minimum:
            ctx.fail(f"{name} must be at least {minimum}, not {value}", name, p)
    return h, w


def _no_blob_params(ctx: Ctx) -> None:
    """The layer has no learned blobs; param specs would have nothing to apply to."""
    if ctx.layer.has("param"):
        ctx.fail(f"{ctx.type} has no learned blobs for 'param' to apply to", "param", kind="structure")


def conv_out(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def pool_out(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """Caffe's pooled size (ceil rounding drops a last window that would start in the padding).

    The same arithmetic as torch's ``ceil_mode``; it differs from Caffe's only when the last window
    would start beyond the image with no padding, where Caffe computes an empty window.
    """
    if not ceil:
        return (size + 2 * pad - kernel) // stride + 1
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if out > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _convolution(ctx: Ctx) -> Spec:
    p = ctx.param("convolution_param")
    c, h, w = ctx.image()
    if not p.has("num_output") or p.get("num_output") == 0:
        ctx.fail("Convolution needs num_output (the number of filters) above 0", "num_output", p)
    n = p.get("num_output")
    if p.get("axis") != 1:
        ctx.fail("kiln convolves images with channels on axis 1 only", "axis", p)
    kh, kw = _hw(ctx, p, "kernel_size", "kernel_h", "kernel_w", default=None, minimum=1, repeated=True, need_both=True)
    sh, sw = _hw(ctx, p, "stride", "stride_h", "stride_w", default=1, minimum=1, repeated=True, need_both=True)
    ph, pw = _hw(ctx, p, "pad", "pad_h", "pad_w", default=0, minimum=0, repeated=True, need_both=False)
    dilation = p.all("dilation") or [1]
    if len(dilation) > 2:
        ctx.fail(f"dilation takes 1 or 2 values for a 2-D image, not {len(dilation)}", "dilation", p)
    dh, dw = (dilation[0], dilation[-1])
    if min(dh, dw) < 1:
        ctx.fail("dilation must be at least 1", "dilation", p)
    group = p.get("group")
    if group < 1 or c % group or n % group:
        ctx.fail(f"group {group} must divide both the {c} input channels and num_output {n}", "group", p)
    oh, ow = conv_out(h, kh, sh, ph, dh), conv_out(w, kw, sw, pw, dw)
    if oh < 1 or ow < 1:
        ctx.shape_fail(f"{max(oh, 0)}x{max(ow, 0)}", f"kernel {kh}x{kw} on a {h}x{w} bottom")
    bias = p.get("bias_term")
    blobs = [_blob(ctx, p, "weight", (n, c // group, kh, kw), "weight_filler")]
    if bias:
        blobs.append(_blob(ctx, p, "bias", (n,), "bias_filler"))

    def make() -> nn.Module:
        return nn.Conv2d(c, n, (kh, kw), (sh, sw), (ph, pw), (dh, dw), group, bias=bias, device=META)

    return Spec([(n, oh, ow)], blobs, make, overwritable=True)


def _pooling(ctx: Ctx) -> Spec:
    p = ctx.param("pooling_param")
    c, h, w = ctx.image()
    method = p.get("pool")
    if method == "STOCHASTIC":
        ctx.fail("STOCHASTIC pooling is not built by kiln; use MAX or AVE", "pool", p)
    ceil = p.get("round_mode") == "CEIL"
    if p.get("global_pooling"):
        for name in ("kernel_size", "kernel_h", "kernel_w"):
            if p.has(name):
                ctx.fail("global pooling takes the whole image: give no kernel size", name, p)
        for name in ("pad", "pad_h", "pad_w"):
            if p.get(name):
                ctx.fail("global pooling takes no padding", name, p)
        for name in ("stride", "stride_h", "stride_w"):
            if p.has(name) and p.get(name) != 1:
                ctx.fail("global pooling takes stride 1", name, p)
        return Spec(
            [(c, 1, 1)], [], lambda: Pool(method, (h, w), (1, 1), (0, 0), ceil, (1, 1), True), overwritable=True
        )
    kh, kw = _hw(ctx, p, "kernel_size", "kernel_h", "kernel_w", default=None, minimum=1, repeated=False, need_both=True)
    sh, sw = _hw(ctx, p, "stride", "stride_h", "stride_w", default=1, minimum=1, repeated=False, need_both=True)
    ph, pw = _hw(ctx, p, "pad", "pad_h", "pad_w", default=0, minimum=0, repeated=False, need_both=False)
    if ph >= kh or pw >= kw:
        ctx.fail(f"padding {ph}x{pw} must be smaller than the kernel {kh}x{kw}", "pad" if p.has("pad") else "pad_h", p)
    oh, ow = pool_out(h, kh, sh, ph, ceil), pool_out(w, kw, sw, pw, ceil)
    if oh < 1 or ow < 1:
        ctx.shape_fail(f"{max(oh, 0)}x{max(ow, 0)}", f"kernel {kh}x{kw} on a {h}x{w} bottom")
    return Spec(
        [(c, oh, ow)],
        [],
        lambda: Pool(method, (kh, kw), (sh, sw), (ph, pw), ceil, (oh, ow), False),
        overwritable=True,
    )


def _inner_product(ctx: Ctx) -> Spec:
    p = ctx.param("inner_product_param")
    shape = ctx.bottoms[0]
    if not shape:
        ctx.fail("InnerProduct needs a bottom with features, not a scalar", "bottom", kind="shape")
    axis = ctx.axis(p, "axis", len(shape))
    if p.get("transpose"):
        ctx.fail("transpose (weights stored in Caffe's transposed order) is not built by kiln", "transpose", p)
    note = ""
    if p.has("num_output"):
        n = p.get("num_output")
        if n == 0:
            ctx.fail("num_output must be above 0 (leave it out to get the number of classes)", "num_output", p)
    else:
        n = ctx.num_classes
        note = f"num_output unset: {n} classes"
    k = math.prod(shape[axis - 1 :])
    bias = p.get("bias_term")
    blobs = [_blob(ctx, p, "weight", (n, k), "weight_filler")]
    if bias:
        blobs.append(_blob(ctx, p, "bias", (n,), "bias_filler"))
    return Spec([(*shape[: axis - 1], n)], blobs, lambda: InnerProduct(k, n, bias, axis), note=note, overwritable=True)


def _same_shape(make: Callable[[], nn.Module]) -> Callable[[Ctx], Spec]:
    def infer(ctx: Ctx) -> Spec:
        _no_blob_params(ctx)
        return Spec([ctx.bottoms[0]], [], make)

    return infer


def _relu(ctx: Ctx) -> Spec:
    _no_blob_params(ctx)
    slope = ctx.param("relu_param").get("negative_slope")
    return Spec([ctx.bottoms[0]], [], (lambda: nn.LeakyReLU(slope)) if slope else nn.ReLU)


def _prelu(ctx: Ctx) -> Spec:
    p = ctx.param("prelu_param")
    shape = ctx.bottoms[0]
    if not shape:
        ctx.fail("PReLU needs a bottom with channels", "bottom", kind="shape")
    count = 1 if p.get("channel_shared") else shape[0]
    blob = _blob(ctx, p, "weight", (count,), "filler", type="constant", value=0.25)
    return Spec([shape], [blob], lambda: nn.PReLU(count, device=META))


def _elu(ctx: Ctx) -> Spec:
    _no_blob_params(ctx)
    alpha = ctx.param("elu_param").get("alpha")
    return Spec([ctx.bottoms[0]], [], lambda: nn.ELU(alpha))


def _dropout(ctx: Ctx) -> Spec:
    _no_blob_params(ctx)
    p = ctx.param("dropout_param")
    ratio = p.get("dropout_ratio")
    if not 0.0 <= ratio < 1.0:
        ctx.fail(f"dropout_ratio must be in [0, 1), not {ratio}", "dropout_ratio", p)
    return Spec([ctx.bottoms[0]], [], lambda: nn.Dropout(ratio))


def _lrn(ctx: Ctx) -> Spec:
    _no_blob_params(ctx)
    p = ctx.param("lrn_param")
    ctx.image()
    size = p.get("local_size")
    if size < 1 or size % 2 == 0:
        ctx.fail(f"local_size must be odd, not {size}", "local_size", p)
    alpha, beta, k = p.get("alpha"), p.get("beta"), p.get("k")
    if p.get("norm_region") == "WITHIN_CHANNEL":
        return Spec([ctx.bottoms[0]], [], lambda: LRNWithinChannel(size, alpha, beta))
    return Spec([ctx.bottoms[0]], [], lambda: nn.LocalResponseNorm(size, alpha, beta, k))


def _batch_norm(ctx: Ctx) -> Spec:
    p = ctx.param("batch_norm_param")
    shape = ctx.bottoms[0]
    if not shape:
        ctx.fail("BatchNorm needs a bottom with channels", "bottom", kind="shape")
    eps = p.get("eps")
    if eps <= 0:
        ctx.fail(f"eps must be above 0, not {eps}", "eps", p)
    fraction = p.get("moving_average_fraction")
    if not 0.0 <= fraction <= 1.0:
        ctx.fail(f"moving_average_fraction must be in [0, 1], not {fraction}", "moving_average_fraction", p)
    use_global = p.get("use_global_stats") if p.has("use_global_stats") else None
    channels = shape[0]
    return Spec(
        [shape],
        [],
        lambda: BatchNorm(channels, eps, 1.0 - fraction, use_global),
        state_blobs=3,
        overwritable=True,
    )


def _affine(ctx: Ctx, kind: str) -> Spec:
    """Scale (multiply, optional bias) or Bias (add), by a learned blob or by a second bottom."""
    p = ctx.param("scale_param" if kind == "Scale" else "bias_param")
    shape = ctx.bottoms[0]
    full = ("N", *shape)
    multiply = kind == "Scale"
    filler = "filler"
    if len(ctx.bottoms) == 2:
        # Caffe matches the second bottom against the first from `axis`; kiln's blobs all carry the
        # batch, so the second bottom lines up from the batch axis (axis: 0)
        second = ctx.bottoms[1]
        axis = ctx.axis(p, "axis", len(shape), batch_ok=True)
        if axis != 0 or second != shape[: len(second)]:
            ctx.fail(
                f"the second bottom ({fmt_shape(second)} per image) must match the first ({fmt_shape(shape)}) "
                "from the batch axis: set axis: 0",
                "axis" if p.has("axis") else "bottom",
                p if p.has("axis") else None,
                kind="shape",
            )
        if multiply and p.get("bias_term"):
            ctx.fail("bias_term with a second bottom is not built by kiln", "bias_term", p)
        other_view: tuple[int, ...] | None = (-1, *second, *(1,) * (len(shape) - len(second)))
        param_shape: Shape = ()
        learned, bias = False, False
    else:
        axis = ctx.axis(p, "axis", len(shape))
        num_axes = p.get("num_axes")
        if num_axes < -1:
            ctx.fail("num_axes is -1 (all the rest) or a number of axes", "num_axes", p)
        end = len(full) if num_axes == -1 else axis + num_axes
        if end > len(full):
            ctx.fail(f"num_axes {num_axes} from axis {axis} goes past the bottom's {len(full)} axes", "num_axes", p)
        param_shape = shape[axis - 1 : end - 1]
        other_view = None
        learned = multiply
        bias = bool(p.get("bias_term")) if multiply else True
    view = (1,) * axis + param_shape + (1,) * (len(full) - axis - len(param_shape))
    blobs: list[Blob] = []
    if learned:
        blobs.append(_blob(ctx, p, "weight", param_shape, filler, type="constant", value=1.0))
    if bias:
        blobs.append(_blob(ctx, p, "bias", param_shape, "bias_filler" if multiply else filler, type="constant"))

    def make() -> nn.Module:
        return Affine(multiply, view, param_shape, learned, bias, other_view)

    return Spec([shape], blobs, make, overwritable=True)


def _eltwise(ctx: Ctx) -> Spec:
    _no_blob_params(ctx)
    p = ctx.param("eltwise_param")
    first = ctx.bottoms[0]
    for shape in ctx.bottoms[1:]:
        if shape != first:
            ctx.fail(
                f"Eltwise needs bottoms of one shape: {fmt_shape(first)} and {fmt_shape(shape)}",
                "bottom",
                kind="shape",
            )
    op = p.get("operation")
    coeffs = p.all("coeff")
    if coeffs and op != "SUM":
        ctx.fail("coeff applies to SUM only", "coeff", p)
    if coeffs and len(coeffs) != len(ctx.bottoms):
        ctx.fail(f"give one coeff per bottom: {len(ctx.bottoms)} bottoms, {len(coeffs)} coeff", "coeff", p)
    return Spec([first], [], lambda: Eltwise(op, coeffs or [1.0] * len(ctx.bottoms)), overwritable=op == "SUM")


def _concat(ctx: Ctx) -> Spec:
    _no_blob_params(ctx)
    p = ctx.param("concat_param")
    first = ctx.bottoms[0]
    if p.has("axis") and p.has("concat_dim"):
        ctx.fail("give axis or the old concat_dim, not both", "concat_dim", p)
    name = "concat_dim" if p.has("concat_dim") else "axis"
    axis = ctx.axis(p, name, len(first))
    for shape in ctx.bottoms[1:]:
        if len(shape) != len(first) or any(a != b for i, (a, b) in enumerate(zip(shape, first)) if i != axis - 1):
            ctx.fail(
                f"Concat on axis {axis} needs bottoms equal on the other axes: {fmt_shape(first)} and {fmt_shape(shape)}",
                "bottom",
                kind="shape",
            )
    total = sum(s[axis - 1] for s in ctx.bottoms)
    out = (*first[: axis - 1], total, *first[axis:])
    return Spec([out], [], lambda: Concat(axis), overwritable=True)


def _flatten(ctx: Ctx) -> Spec:
    _no_blob_params(ctx)
    p = ctx.param("flatten_param")
    shape = ctx.bottoms[0]
    start = ctx.axis(p, "axis", len(shape))
    end = ctx.axis(p, "end_axis", len(shape))
    if end < start:
        ctx.fail(f"end_axis {p.get('end_axis')} comes before axis {p.get('axis')}", "end_axis", p)
    out = (*shape[: start - 1], math.prod(shape[start - 1 : end]), *shape[end:])
    return Spec([out], [], lambda: nn.Flatten(start, end))


def _reshape_full(ctx: Ctx, p: Msg, full: Shape) -> Shape:
    dims = p.get("shape").all("dim")
    axis = ctx.axis(p, "axis", len(full) - 1, batch_ok=True)
    num_axes = p.get("num_axes")
    if num_axes < -1:
        ctx.fail("num_axes is -1 (all the rest) or a number of axes", "num_axes", p)
    end = len(full) if num_axes == -1 else axis + num_axes
    if end > len(full):
        ctx.fail(f"num_axes {num_axes} from axis {axis} goes past the bottom's {len(full)} axes", "num_axes", p)
    if sum(1 for d in dims if d == -1) > 1:
        ctx.fail("at most one dim may be -1 (inferred)", "shape", p)
    middle: list[int] = []
    for i, d in enumerate(dims):
        if d < -1:
            ctx.fail(f"dim {d}: dims are -1 (inferred), 0 (copied) or a size", "shape", p)
        if d == 0:
            if axis + i >= len(full):
                ctx.fail(f"dim {i} is 0 (copy) but the bottom has no axis {axis + i}", "shape", p)
            middle.append(full[axis + i])
        else:
            middle.append(d)
    out = [*full[:axis], *middle, *full[end:]]
    known = math.prod(d for d in out if d != -1)
    count = math.prod(full)
    if -1 in out:
        if known == 0 or count % known:
            ctx.fail(f"cannot infer the -1 dim: {count} values do not divide by {known}", "shape", p)
        out[out.index(-1)] = count // known
    elif known != count:
        ctx.fail(
            f"the new shape holds {known} values, the bottom {count}",
            "shape",
            p,
            kind="shape",
        )
    return tuple(out)


def _reshape(ctx: Ctx) -> Spec:
    _no_blob_params(ctx)
    p = ctx.param("reshape_param")
    shape = ctx.bottoms[0]
    outs = [_reshape_full(ctx, p, (n, *shape)) for n in (1, 2)]  # per image first: its counts in messages
    if outs[0][:1] != (1,) or outs[1][:1] != (2,) or outs[0][1:] != outs[1][1:]:
        ctx.fail("Reshape must keep the batch axis: use dim: 0 (or -1) first", "shape", p, kind="shape")
    out = outs[0][1:]
    if any(d < 1 for d in out):
        ctx.fail(f"Reshape gives {fmt_shape(out)}", "shape", p, kind="shape")
    return Spec([out], [], lambda: Reshape(out))


def _power(ctx: Ctx) -> Spec:
    _no_blob_params(ctx)
    p = ctx.param("power_param")
    power, scale, shift = p.get("power"), p.get("scale"), p.get("shift")
    return Spec([ctx.bottoms[0]], [], lambda: Power(power, scale, shift))


def _softmax(ctx: Ctx) -> Spec:
    _no_blob_params(ctx)
    p = ctx.param("softmax_param")
    axis = ctx.axis(p, "axis", len(ctx.bottoms[0]), batch_ok=True)
    return Spec([ctx.bottoms[0]], [], lambda: nn.Softmax(axis))


def _loss(ctx: Ctx) -> Spec:
    _no_blob_params(ctx)
    if ctx.param("softmax_param").get("axis") != 1:
        ctx.fail("kiln's loss takes class scores on axis 1", "axis", ctx.param("softmax_param"))
    weights = ctx.layer.all("loss_weight")
    if len(weights) > 1:
        ctx.fail("one loss_weight: the loss has one top", "loss_weight", kind="structure")
    if weights and weights[0] < 0:
        ctx.fail(f"loss_weight must not be negative, not {weights[0]}", "loss_weight")
    return Spec([()], [])


def _accuracy(ctx: Ctx) -> Spec:
    _no_blob_params(ctx)
    p = ctx.param("accuracy_param")
    if p.get("top_k") < 1:
        ctx.fail("top_k must be at least 1", "top_k", p)
    if p.get("axis") != 1:
        ctx.fail("kiln's accuracy takes class scores on axis 1", "axis", p)
    return Spec([()] * max(1, len(ctx.layer.all("top"))), [])


def _data(ctx: Ctx) -> Spec:
    _no_blob_params(ctx)
    return Spec([])  # the graph gives the tops the dataset's shapes


LAYER_TYPES: dict[str, LayerType] = {
    t.name: t
    for t in (
        LayerType("Data", ("data_param", "transform_param"), (0, 0), (1, 2), "data", _data),
        LayerType("HDF5Data", ("hdf5_data_param", "transform_param"), (0, 0), (1, 2), "data", _data),
        LayerType("Input", ("input_param", "transform_param"), (0, 0), (1, 1), "data", _data),
        LayerType("Convolution", ("convolution_param",), (1, 1), (1, 1), "compute", _convolution),
        LayerType("Pooling", ("pooling_param",), (1, 1), (1, 1), "compute", _pooling),
        LayerType("InnerProduct", ("inner_product_param",), (1, 1), (1, 1), "compute", _inner_product),
        LayerType("ReLU", ("relu_param",), (1, 1), (1, 1), "compute", _relu, in_place=True),
        LayerType("PReLU", ("prelu_param",), (1, 1), (1, 1), "compute", _prelu, in_place=True),
        LayerType("ELU", ("elu_param",), (1, 1), (1, 1), "compute", _elu, in_place=True),
        LayerType("Sigmoid", ("sigmoid_param",), (1, 1), (1, 1), "compute", _same_shape(nn.Sigmoid), in_place=True),
        LayerType("TanH", ("tanh_param",), (1, 1), (1, 1), "compute", _same_shape(nn.Tanh), in_place=True),
        LayerType("Dropout", ("dropout_param",), (1, 1), (1, 1), "compute", _dropout, in_place=True),
        LayerType("LRN", ("lrn_param",), (1, 1), (1, 1), "compute", _lrn),
        LayerType("BatchNorm", ("batch_norm_param",), (1, 1), (1, 1), "compute", _batch_norm, in_place=True),
        LayerType("Scale", ("scale_param",), (1, 2), (1, 1), "compute", lambda c: _affine(c, "Scale"), in_place=True),
        LayerType("Bias", ("bias_param",), (1, 2), (1, 1), "compute", lambda c: _affine(c, "Bias"), in_place=True),
        LayerType("Eltwise", ("eltwise_param",), (2, -1), (1, 1), "compute", _eltwise),
        LayerType("Concat", ("concat_param",), (1, -1), (1, 1), "compute", _concat),
        LayerType("Flatten", ("flatten_param",), (1, 1), (1, 1), "compute", _flatten),
        LayerType("Reshape", ("reshape_param",), (1, 1), (1, 1), "compute", _reshape),
        LayerType("Power", ("power_param",), (1, 1), (1, 1), "compute", _power, in_place=True),
        LayerType("Softmax", ("softmax_param",), (1, 1), (1, 1), "compute", _softmax),
        LayerType("SoftmaxWithLoss", ("loss_param", "softmax_param"), (2, 2), (0, 1), "loss", _loss),
        LayerType("Accuracy", ("accuracy_param",), (2, 2), (0, 2), "accuracy", _accuracy),
    )
}

# LayerParameter fields every layer may carry; the *_param messages are checked per type
COMMON_FIELDS = frozenset(
    ("name", "type", "bottom", "top", "phase", "loss_weight", "param", "propagate_down", "include", "exclude")
)
