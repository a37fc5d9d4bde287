"""A snapshot as ONNX (dynamic batch axis) and TorchScript, each checked against the eager model.

Both are traced, not scripted: kiln's prototxt networks run a step plan in a Python loop that
torch.jit.script cannot compile, and tracing records the plan's operations for any network,
standard, custom text or user Python module. The trace runs in eval mode (dropout off, GoogLeNet's
auxiliary heads absent), and every export is run again on a batch of another size and compared
with the eager model, so an export that silently froze the batch size or a branch is refused.

ONNX uses the TorchScript-based exporter (``dynamo=False``): it exports every kiln network with
``dynamic_axes`` in seconds. The dynamo exporter handles them too but takes 5-10 times longer;
it is the fallback for a module the first one cannot export.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kiln.atomic import atomic_path
from kiln.preprocess import Preprocess
from kiln.training import checkpoint

OPSET = 17
INPUT, OUTPUT = "input", "logits"
TOLERANCE = 1e-4  # max absolute difference of probabilities, export vs eager


class ExportError(RuntimeError):
    """A network that could not be exported faithfully; the message says which step failed."""


def load_for_export(job_dir: Path, epoch: float | str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(eval-mode CPU model with the snapshot's safetensors weights, its meta); epoch as read_meta.

    FileNotFoundError, saying which snapshots exist, for an epoch the model has no snapshot of."""
    if epoch == "best" and not checkpoint.snapshot_paths(Path(job_dir), "best")[1].exists():
        epochs = ", ".join(checkpoint.format_epoch(e) for e in checkpoint.list_snapshots(Path(job_dir)))
        raise FileNotFoundError(
            f"this model keeps no best snapshot (it trained without keep_best); snapshots: {epochs}"
        )
    return checkpoint.load_snapshot(Path(job_dir), epoch, device="cpu")


def input_shape(meta: dict[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) the network is fed: the crop when cropping, else the stored image size."""
    pre = Preprocess.from_dict(meta["preprocess"])
    return (pre.channels, *pre.input_size)


def sample(meta: dict[str, Any], batch: int, seed: int) -> torch.Tensor:
    """Mean-subtracted-looking inputs (-128..127) of the network's shape, reproducible."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *input_shape(meta)), generator=gen) * 255.0 - 128.0


def _probs(out: Any) -> np.ndarray:
    logits = out[0] if isinstance(out, (tuple, list)) else out
    return torch.softmax(torch.as_tensor(logits).float(), dim=1).numpy()


def _check(name: str, got: np.ndarray, want: np.ndarray) -> None:
    diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
    if not diff <= TOLERANCE:
        raise ExportError(f"{name} export differs from the PyTorch model (max |p| difference {diff:.2g})")


def export_torchscript(model: nn.Module, meta: dict[str, Any], dest: Path | str) -> Path:
    """Trace the snapshot's model into ``dest`` (written atomically); checked at another batch size."""
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning, and TorchScript's own deprecation notice
        try:
            traced = torch.jit.trace(model, sample(meta, 2, 0), check_trace=False)
        except Exception as exc:  # tracing runs user code: any error means "cannot export"
            raise ExportError(f"TorchScript: tracing {meta['network']} failed ({type(exc).__name__}: {exc})") from exc
        x = sample(meta, 3, 1)
        _check("TorchScript", _probs(traced(x)), _probs(model(x)))
    with atomic_path(Path(dest)) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(traced, str(tmp))
    return Path(dest)


def _onnx_export(model: nn.Module, x: torch.Tensor, path: Path, dynamo: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            shapes = ({0: torch.export.Dim("batch")},)
            torch.onnx.export(
                model, (x,), str(path), input_names=[INPUT], output_names=[OUTPUT], dynamic_shapes=shapes, dynamo=True
            )
        else:
            axes = {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}
            torch.onnx.export(
                model,
                (x,),
                str(path),
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )


def run_onnx(path: Path | str, x: np.ndarray) -> np.ndarray:
    """Logits from ONNX Runtime on CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x, np.float32)})[0]


def export_onnx(model: nn.Module, meta: dict[str, Any], dest: Path | str) -> Path:
    """The snapshot's model as ONNX with a dynamic batch axis in ``dest`` (atomic), checked in ONNX Runtime."""
    model.eval()
    x3 = sample(meta, 3, 1)
    with torch.no_grad():
        want = _probs(model(x3))
    errors = []
    with atomic_path(Path(dest)) as tmp:
        for dynamo in (False, True):
            try:
                with torch.no_grad():
                    _onnx_export(model, sample(meta, 2, 0), tmp, dynamo)
                _check("ONNX", _probs(run_onnx(tmp, x3.numpy())), want)
                break
            except Exception as exc:  # either exporter may refuse a module; try the other, then report both
                errors.append(f"{'dynamo' if dynamo else 'TorchScript-based'} exporter: {type(exc).__name__}: {exc}")
        else:
            raise ExportError(f"ONNX: {meta['network']} could not be exported ({'; '.join(errors)})")
    return Path(dest)
