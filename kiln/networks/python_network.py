"""A network written in Python: a file defining ``network(num_classes, input_shape)``.

It runs arbitrary code with the worker's rights, so kiln accepts one only when the server was
started with KILN_ALLOW_PYTHON_NETWORKS=1 (checked by the callers, kiln.networks.definition).

The function gets the number of classes and the input shape ``(channels, height, width)`` and
returns a ``torch.nn.Module`` that takes float NCHW images at pixel scale (0-255, mean already
subtracted) and returns class scores ``(N, num_classes)``, like every kiln network.
"""

from __future__ import annotations

import traceback
from typing import Any

import torch
from torch import nn

FILENAME = "network.py"
FUNCTION = "network"
EXAMPLE = """import torch
from torch import nn


def network(num_classes, input_shape):
    channels, height, width = input_shape
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.LazyLinear(num_classes),
    )
"""


class PythonNetworkError(ValueError):
    """A Python network that cannot be used; ``line`` is the line of the text to mark (0: none)."""

    def __init__(self, message: str, line: int = 0) -> None:
        self.message = message
        self.line = line
        self.column = 1
        super().__init__(f"line {line}: {message}" if line else message)

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "line": self.line, "column": self.column, "kind": "python"}


def _line_in_text(exc: BaseException) -> int:
    """The last line of the user's file in the traceback (0 when it failed elsewhere)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == FILENAME]
    return frames[-1].lineno or 0 if frames else 0


def build_python_network(text: str, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """Run ``text`` and call its ``network``; the module is checked with a forward pass of two images."""
    try:
        code = compile(text, FILENAME, "exec")
    except SyntaxError as exc:
        raise PythonNetworkError(f"syntax error: {exc.msg}", exc.lineno or 0) from None
    namespace: dict[str, Any] = {"__name__": "kiln_user_network"}
    try:
        exec(code, namespace)  # allowed by KILN_ALLOW_PYTHON_NETWORKS only
        build = namespace.get(FUNCTION)
        if not callable(build):
            raise PythonNetworkError(f"the file must define a function {FUNCTION}(num_classes, input_shape)")
        module = build(int(num_classes), tuple(int(d) for d in input_shape))
    except PythonNetworkError:
        raise
    except Exception as exc:  # the user's code: any failure is theirs to fix
        raise PythonNetworkError(f"{type(exc).__name__}: {exc}", _line_in_text(exc)) from None
    if not isinstance(module, nn.Module):
        raise PythonNetworkError(f"{FUNCTION}() must return a torch.nn.Module, not {type(module).__name__}")
    _check_output(module, num_classes, input_shape)
    return module


def _check_output(module: nn.Module, num_classes: int, input_shape: tuple[int, int, int]) -> None:
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(2, *input_shape))
    except Exception as exc:
        raise PythonNetworkError(
            f"the network fails on a batch of {tuple(input_shape)} images: {type(exc).__name__}: {exc}",
            _line_in_text(exc),
        ) from None
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PythonNetworkError(f"the network must return scores of shape (N, {num_classes}); it returned {shape}")


def layer_table(module: nn.Module, input_shape: tuple[int, int, int]) -> list[dict[str, Any]]:
    """Every leaf module run on one image, in order: name, type, output shape, parameters."""
    rows: list[dict[str, Any]] = []
    hooks = []
    for name, child in module.named_modules():
        if next(child.children(), None) is None:

            def record(m: nn.Module, _: Any, out: Any, name: str = name) -> None:
                shapes = [list(out.shape[1:])] if isinstance(out, torch.Tensor) else []
                params = sum(p.numel() for p in m.parameters(recurse=False))
                rows.append({"name": name, "type": type(m).__name__, "line": 0, "shapes": shapes, "params": params})

            hooks.append(child.register_forward_hook(record))
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    return rows
