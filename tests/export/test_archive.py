"""The archive's format, version 1: its members, info.json's keys, loading without unpickling."""

from __future__ import annotations

import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from safetensors.torch import load_file

from kiln.export import ARCHIVE_VERSION, export_onnx, export_torchscript, load_for_export, write_archive
from kiln.networks.definition import NetworkDef
from tests.export.conftest import make_snapshot

V1_MEMBERS = [
    "info.json",
    "labels.txt",
    "mean.npy",
    "mean.png",
    "model.onnx",
    "model.pt",
    "network.prototxt",
    "predict.py",
    "weights.safetensors",
]
V1_KEYS = {
    "archive version", "image dimensions", "image resize mode", "mean file", "mean subtraction", "crop size",
    "snapshot file", "framework", "model file", "labels file", "onnx file", "torchscript file", "predict file",
    "digits version", "kiln version", "epoch", "network", "network_language", "num_classes", "labels", "preprocess",
}  # fmt: skip


@pytest.fixture(scope="module")
def lenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    job = tmp_path_factory.mktemp("lenet") / "job"
    return make_snapshot(job, "lenet", channels=1, size=(28, 28), use_mean="image", epoch=2)


def test_version_1_members_and_keys(lenet: Path, tmp_path: Path) -> None:
    """The fixture for archive version 1: a later kiln must keep reading exactly this layout."""
    info = write_archive(lenet, tmp_path / "a.zip", fmt="zip", job_info={"id": "j1", "name": "digits"})
    assert ARCHIVE_VERSION == 1 and info["archive version"] == 1
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.namelist()[0] == "info.json" and sorted(zf.namelist()) == V1_MEMBERS
        zf.extractall(tmp_path / "x")
    x = tmp_path / "x"
    info = json.loads((x / "info.json").read_text())
    assert set(info) >= V1_KEYS and info["id"] == "j1" and info["name"] == "digits"
    assert info["image dimensions"] == [28, 28, 1] and info["epoch"] == 2 and info["model file"] == "network.prototxt"
    assert info["preprocess"]["input"]["shape"] == [None, 1, 28, 28] and info["preprocess"]["scale"] == 1.0
    assert (x / "labels.txt").read_text().splitlines() == info["labels"] == ["class 0", "class 1", "class 2"]
    # rebuilt from the archive alone: network text + safetensors, no pickle anywhere
    meta = dict(info["snapshot"], preprocess=info["preprocess"])
    model = NetworkDef.of_meta(meta).build(info["num_classes"], (1, 28, 28))
    model.load_state_dict(load_file(x / "weights.safetensors"))
    original, _ = load_for_export(lenet, 2)
    sample = torch.rand(2, 1, 28, 28) * 255
    assert torch.equal(model.eval()(sample), original(sample))
    mean = np.load(x / "mean.npy", allow_pickle=False)
    assert mean.shape == (28, 28, 1) and np.array_equal(mean, np.asarray(meta_mean(lenet), np.float32))


def meta_mean(job: Path) -> list:
    return json.loads((job / "snapshot_2.json").read_text())["preprocess"]["mean"]


@pytest.mark.parametrize("fmt", ["tar", "tgz", "tar.bz2"])
def test_tar_formats(lenet: Path, tmp_path: Path, fmt: str) -> None:
    write_archive(lenet, tmp_path / f"m.{fmt}", fmt=fmt)
    with tarfile.open(tmp_path / f"m.{fmt}") as tf:
        assert sorted(tf.getnames()) == V1_MEMBERS and all(m.isfile() for m in tf.getmembers())


def test_bad_format_and_missing_epoch_leave_nothing(lenet: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="format must be one of"):
        write_archive(lenet, tmp_path / "m.rar", fmt="rar")
    with pytest.raises(FileNotFoundError, match="no snapshot at epoch 7"):
        write_archive(lenet, tmp_path / "m.tar", fmt="tar", epoch=7)
    assert list(tmp_path.iterdir()) == []  # no half-written archive, no temp file


def test_onnx_batch_axis_is_dynamic_and_torchscript_takes_any_batch(lenet: Path, tmp_path: Path) -> None:
    model, meta = load_for_export(lenet)
    export_onnx(model, meta, tmp_path / "m.onnx")
    dims = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    export_torchscript(model, meta, tmp_path / "m.pt")
    traced = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.rand(5, 1, 28, 28) * 255
    assert torch.allclose(traced(x), model(x), atol=1e-5)
