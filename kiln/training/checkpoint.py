"""Snapshots and the resume state, written so that no file is ever seen half written.

A training job's folder holds, per snapshot epoch E (formatted by `format_epoch`: 2, 0.5, 1.333):

- ``snapshot_E.safetensors``: the weights (a plain state dict; loads without running code);
- ``snapshot_E.json``: everything needed to rebuild the network and its preprocessing
  (see `snapshot_meta`); written after the weights, so a json file means a complete snapshot;
- ``best.safetensors`` + ``best.json`` when the job keeps its best validation snapshot;
- ``resume.pt`` + ``resume.json``: the full training state at the latest snapshot (model,
  optimizer, scheduler, counters, RNG states, metric history), rewritten at every snapshot.

Every write goes through kiln.atomic: a temporary name in the same folder, fsynced, renamed, folder fsynced.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import kiln
from kiln.atomic import atomic_path, atomic_write_json

SNAPSHOT_RE = re.compile(r"^snapshot_(\d+(?:\.\d+)?)\.json$")
FORMAT = "kiln-snapshot/1"


# -- atomic writes (kiln.atomic) ----------------------------------------------------------------
def _atomic(path: Path, write: Callable[[str], None]) -> Path:
    """Call write(tmp_path); kiln.atomic fsyncs it and renames it over `path`."""
    with atomic_path(path) as tmp:
        write(str(tmp))
    return Path(path)


def write_json(path: Path, data: Any) -> Path:
    return atomic_write_json(path, data, indent=1)


def write_torch(path: Path, obj: Any) -> Path:
    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def write_weights(path: Path, model: nn.Module, metadata: dict[str, str] | None = None) -> Path:
    state = {k: v.detach().to("cpu").contiguous() for k, v in unwrap(model).state_dict().items()}
    return _atomic(path, lambda tmp: save_file(state, tmp, metadata=metadata))


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


# -- snapshot names -----------------------------------------------------------------------------
def format_epoch(epoch: float) -> str:
    """2.0 -> '2', 0.5 -> '0.5', 1.3333 -> '1.333' (DIGITS rounded epochs to 3 decimals)."""
    text = f"{round(float(epoch), 3):.3f}".rstrip("0").rstrip(".")
    return text or "0"


def snapshot_paths(out_dir: Path, epoch: float | str) -> tuple[Path, Path]:
    stem = epoch if isinstance(epoch, str) else f"snapshot_{format_epoch(epoch)}"
    return Path(out_dir) / f"{stem}.safetensors", Path(out_dir) / f"{stem}.json"


def snapshot_meta(
    *,
    network: str,
    num_classes: int,
    in_channels: int,
    height: int,
    width: int,
    labels: list[str],
    preprocess: dict[str, Any],
    epoch: float,
    iteration: int,
    metrics: dict[str, float],
    config: dict[str, Any],
    network_kwargs: dict[str, Any] | None = None,
    network_text: str = "",
    network_language: str = "prototxt",
) -> dict[str, Any]:
    """The json that travels with a snapshot's weights; height/width are the network's input size.

    ``network_text`` is the text that ran (a standard network's too), so the snapshot rebuilds
    exactly even after kiln's own texts change; "" for networks written as Python classes.
    """
    return {
        "format": FORMAT,
        "kiln_version": kiln.__version__,
        "network": network,
        "network_text": network_text,
        "network_language": network_language,
        "network_kwargs": network_kwargs or {},
        "num_classes": num_classes,
        "in_channels": in_channels,
        "height": height,
        "width": width,
        "labels": list(labels),
        "preprocess": preprocess,
        "epoch": round(float(epoch), 3),
        "iteration": iteration,
        "metrics": metrics,
        "config": config,
        "created": time.time(),
    }


def save_snapshot(out_dir: Path, model: nn.Module, meta: dict[str, Any], stem: str | None = None) -> Path:
    """Write weights then json; returns the weights path. stem defaults to snapshot_<epoch>."""
    weights, meta_path = snapshot_paths(out_dir, stem or meta["epoch"])
    meta = dict(meta, weights=weights.name)
    write_weights(weights, model, {"format": "pt", "kiln": FORMAT, "network": meta["network"]})
    write_json(meta_path, meta)
    return weights


# -- reading snapshots --------------------------------------------------------------------------
def list_snapshots(out_dir: Path) -> list[float]:
    """Epochs of the complete snapshots in out_dir, ascending."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    epochs = []
    for p in out_dir.iterdir():
        m = SNAPSHOT_RE.match(p.name)
        if m and p.with_suffix(".safetensors").exists():
            epochs.append(float(m.group(1)))
    return sorted(epochs)


def resolve_epoch(out_dir: Path, epoch: float | str | None = None) -> float:
    """DIGITS' snapshot_epoch: None, -1 or 0 mean the latest; otherwise the nearest existing epoch."""
    epochs = list_snapshots(out_dir)
    if not epochs:
        raise FileNotFoundError(f"no snapshots in {out_dir}; the model has not finished an epoch yet")
    if epoch is None or float(epoch) in (-1.0, 0.0):
        return epochs[-1]
    want = float(epoch)
    best = min(epochs, key=lambda e: abs(e - want))
    if abs(best - want) > 1e-3:
        raise FileNotFoundError(
            f"no snapshot at epoch {format_epoch(want)}; "
            f"snapshots exist at {', '.join(format_epoch(e) for e in epochs)}"
        )
    return best


def read_meta(out_dir: Path, epoch: float | str | None = None) -> dict[str, Any]:
    """The json of a snapshot: an epoch (latest when None/-1/0) or a stem such as 'best'."""
    stem = epoch if isinstance(epoch, str) and not _is_number(epoch) else None
    key = stem or resolve_epoch(out_dir, epoch)
    weights, meta_path = snapshot_paths(out_dir, key)
    meta = json.loads(meta_path.read_text())
    meta["weights_path"] = str(weights)
    return meta


def build_network(meta: dict[str, Any]) -> nn.Module:
    """A fresh network with the snapshot's architecture (not its weights).

    A Python network's code runs again here: the job that saved the snapshot was allowed to run it.
    """
    from kiln.networks.definition import NetworkDef
    from kiln.networks.registry import create_network

    kwargs = meta.get("network_kwargs") or {}
    shape = (meta["in_channels"], meta["height"], meta["width"])
    if kwargs:
        return create_network(meta["network"], meta["num_classes"], *shape, **kwargs)
    return NetworkDef.of_meta(meta).build(meta["num_classes"], shape)


def load_matching(model: nn.Module, path: Path | str) -> list[str]:
    """Copy the weights of ``path`` whose names and shapes match ``model``'s (fine-tuning).

    Returns what starts fresh, one line per tensor: missing from the snapshot, or of another
    shape there (a new class count). Loads safetensors only: no code runs.
    """
    saved = load_file(str(path), device="cpu")
    own = model.state_dict()
    fresh, take = [], {}
    for name, tensor in own.items():
        other = saved.get(name)
        if other is None:
            fresh.append(f"{name} (not in the snapshot)")
        elif tuple(other.shape) != tuple(tensor.shape):
            fresh.append(
                f"{name} ({'x'.join(map(str, other.shape))} in the snapshot, {'x'.join(map(str, tensor.shape))} here)"
            )
        else:
            take[name] = other
    if not take:
        raise ValueError(f"no layer of {Path(path).name} fits this network: names and shapes all differ")
    model.load_state_dict(take, strict=False)
    return fresh


def load_snapshot(
    out_dir: Path, epoch: float | str | None = None, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode with the snapshot's weights, its meta). epoch None/-1/0 = latest; 'best'."""
    meta = read_meta(out_dir, epoch)
    model = build_network(meta)
    model.load_state_dict(load_file(meta["weights_path"], device="cpu"))
    model.to(device).eval()
    return model, meta


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# -- resume state -------------------------------------------------------------------------------
def save_resume(out_dir: Path, state: dict[str, Any]) -> None:
    """resume.pt (everything) and resume.json (epoch/iteration, cheap to read for the job page)."""
    write_torch(Path(out_dir) / "resume.pt", state)
    write_json(
        Path(out_dir) / "resume.json",
        {"epoch": state["epoch"], "iteration": state["iteration"], "kiln_version": kiln.__version__},
    )


def load_resume(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / "resume.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: nothing to resume; start the training again")
    # tensors, numbers, strings and lists only (RNG states are stored as such): loads no code
    return torch.load(path, map_location="cpu", weights_only=True)


def resume_epoch(out_dir: Path) -> float | None:
    """The epoch a resume would continue from (to trim metrics recorded after it), or None."""
    path = Path(out_dir) / "resume.json"
    if not path.exists():
        return None
    return float(json.loads(path.read_text())["epoch"])
