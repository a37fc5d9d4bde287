"""Snapshot files: names, atomic writes, listing, selection by epoch, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kiln.networks.registry import create_network
from kiln.training import checkpoint


def meta(epoch: float, **kw) -> dict:
    base = dict(
        network="lenet",
        num_classes=3,
        in_channels=1,
        height=28,
        width=28,
        labels=["a", "b", "c"],
        preprocess={"channels": 1, "height": 28, "width": 28, "use_mean": "none"},
        epoch=epoch,
        iteration=int(epoch * 10),
        metrics={"val_accuracy": 50.0},
        config={"network": "lenet"},
    )
    return checkpoint.snapshot_meta(**{**base, **kw})


@pytest.mark.parametrize(
    "epoch, text", [(2.0, "2"), (0.5, "0.5"), (1 / 3, "0.333"), (10, "10"), (1.2345, "1.234"), (0.0004, "0")]
)
def test_format_epoch(epoch, text):
    assert checkpoint.format_epoch(epoch) == text


def test_save_and_load_round_trip(tmp_path):
    model = create_network("lenet", 3, 1, 28, 28).to(memory_format=torch.channels_last)
    path = checkpoint.save_snapshot(tmp_path, model, meta(2.0))
    assert path == tmp_path / "snapshot_2.safetensors"
    loaded, info = checkpoint.load_snapshot(tmp_path, 2)
    assert info["labels"] == ["a", "b", "c"] and info["weights"] == "snapshot_2.safetensors"
    assert not loaded.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_list_and_resolve_snapshots(tmp_path):
    model = create_network("lenet", 3, 1, 28, 28)
    for epoch in (10.0, 2.0, 0.5):
        checkpoint.save_snapshot(tmp_path, model, meta(epoch))
    (tmp_path / "snapshot_11.json").write_text("{}")  # weights missing: incomplete
    (tmp_path / "snapshot_12.safetensors").write_bytes(b"")  # json missing: incomplete
    assert checkpoint.list_snapshots(tmp_path) == [0.5, 2.0, 10.0]  # numeric order
    assert checkpoint.resolve_epoch(tmp_path) == 10.0
    assert checkpoint.resolve_epoch(tmp_path, -1) == checkpoint.resolve_epoch(tmp_path, "0") == 10.0
    assert checkpoint.resolve_epoch(tmp_path, "0.5") == 0.5
    with pytest.raises(FileNotFoundError, match="0.5, 2, 10"):
        checkpoint.resolve_epoch(tmp_path, 3)
    with pytest.raises(FileNotFoundError, match="no snapshots"):
        checkpoint.resolve_epoch(tmp_path / "empty")


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "x.json"
    checkpoint.write_json(target, {"v": 1})

    def broken(tmp: str) -> None:
        Path(tmp).write_text('{"v": 2, "trunc')
        raise OSError("disk full")

    with pytest.raises(OSError):
        checkpoint._atomic(target, broken)
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_resume_state_loads_without_pickled_code(tmp_path):
    state = {
        "model": {"w": torch.ones(2)},
        "epoch": 1.5,
        "iteration": 15,
        "rng": [{"python": [3, [1, 2], None]}],
        "state": {"history": [{"epoch": 1.0, "phase": "val", "loss": 0.5}]},
    }
    checkpoint.save_resume(tmp_path, state)
    back = checkpoint.load_resume(tmp_path)
    assert back["iteration"] == 15 and torch.equal(back["model"]["w"], torch.ones(2))
    assert checkpoint.resume_epoch(tmp_path) == 1.5
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        checkpoint.load_resume(tmp_path / "none")
    assert checkpoint.resume_epoch(tmp_path / "none") is None


def test_weights_file_is_plain_safetensors(tmp_path):
    from safetensors import safe_open

    model = create_network("lenet", 3, 1, 28, 28)
    path = checkpoint.save_snapshot(tmp_path, model, meta(1.0))
    with safe_open(str(path), "pt") as f:
        assert f.metadata()["network"] == "lenet"
        assert set(f.keys()) == set(model.state_dict())
        assert np.array_equal(f.get_tensor("conv1.weight").numpy(), model.conv1.weight.detach().numpy())
