"""The same probabilities everywhere: the server's predictor, predict.py on model.pt, predict.py on
model.onnx (ONNX Runtime), for every standard network and a custom prototxt text, in colour and
grey, with and without crop, through each resize mode. Weights are random: parity needs no training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.export import write_archive
from kiln.inference.predictor import Predictor
from kiln.networks.prototxt import standard_text
from tests.export.conftest import extract, make_snapshot, run_predict, write_images

TOL = 1e-4
# LeNet's text with other layer widths and a ReLU after pool1: the lab's "Customize" experiment
CUSTOM = (
    standard_text("lenet")
    .replace("num_output: 20", "num_output: 7")
    .replace("num_output: 50", "num_output: 9")
    .replace("num_output: 500", "num_output: 16")
)

CASES: dict[str, dict[str, Any]] = {
    "lenet": dict(network="lenet", channels=1, size=(28, 28), resize_mode="squash", use_mean="image"),
    "alexnet": dict(network="alexnet", channels=3, size=(72, 72), resize_mode="crop", use_mean="pixel", crop=64),
    "googlenet": dict(network="googlenet", channels=3, size=(70, 70), resize_mode="fill", use_mean="image", crop=64),
    "resnet18": dict(network="resnet18", channels=3, size=(32, 32), resize_mode="half_crop", use_mean="none"),
    "custom": dict(network="custom", channels=3, size=(30, 30), resize_mode="half_crop", use_mean="image", crop=28),
}


def server_probabilities(job_dir: Path, images: list[Path]) -> np.ndarray:
    pred = Predictor.from_job_dir(job_dir)
    batch, ok, errors = pred.load(images)
    assert not errors and ok == list(range(len(images)))
    return pred.probabilities(batch)


@pytest.mark.parametrize("case", list(CASES))
def test_predict_py_torchscript_and_onnx_match_the_server(case: str, tmp_path: Path) -> None:
    kw = dict(CASES[case])
    job_dir = make_snapshot(tmp_path / "job", kw.pop("network"), text=CUSTOM if case == "custom" else "", **kw)
    images = write_images(tmp_path / "images")
    info = write_archive(job_dir, tmp_path / "model.tar.gz", fmt="tar.gz", job_info={"id": "job"})
    folder = extract(tmp_path / "model.tar.gz", tmp_path / "unpacked")
    assert json.loads((folder / "info.json").read_text()) == info

    want = server_probabilities(job_dir, images)
    assert want.shape == (len(images), 3) and np.ptp(want) > 1e-3  # not a degenerate constant model
    for flags in ((), ("--onnx",)):
        lines = run_predict(folder, images, "--all", *flags)
        got = np.array([line["probabilities"] for line in lines])
        assert np.abs(got - want).max() <= TOL, (case, flags, np.abs(got - want).max())
        top = Predictor.from_job_dir(job_dir).top_k(want)
        for line, expected in zip(lines, top):
            assert [label for label, _ in line["predictions"]] == [label for label, _ in expected]
            assert np.allclose([p for _, p in line["predictions"]], [p for _, p in expected], atol=0.011)
