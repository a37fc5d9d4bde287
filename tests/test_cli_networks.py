"""`kiln train` with network texts (issue 8): --network-file trains a custom network, a broken file
fails with its line and no traceback, --from MODEL[:EPOCH] fine-tunes from a model's weights.

Training runs in process (`kiln.cli.main`, as tests/test_cli.py does for its option tests) on a
copy of one small dataset built once per module; the broken file runs the real command in a
subprocess, to see exactly what a user sees on stderr.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kiln.cli import main
from kiln.networks.prototxt import standard_text
from kiln.store import Store
from tests.conftest import copy_data_dir, edit_text, lab_lenet_text, write_class_folder

LENET75 = lab_lenet_text()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding one Done dataset, "digits": 28x28 grey, three classes."""
    root = tmp_path_factory.mktemp("cli-networks")
    folder = write_class_folder(root / "imgs", {"one": 12, "two": 12, "three": 12}, size=(28, 28))
    data = root / "data"
    args = ["--data-dir", str(data), "dataset", "create", "--name", "digits", "--folder", str(folder)]
    assert main([*args, "--channels", "1", "--width", "28", "--height", "28"]) == 0
    return data


@pytest.fixture
def data(template: Path, tmp_path: Path) -> Path:
    return copy_data_dir(template, tmp_path / "data")


def train(data: Path, capsys: pytest.CaptureFixture[str], name: str, *args: str) -> str:
    """`kiln train` in this process, one epoch; the new model's id."""
    capsys.readouterr()
    argv = ["--data-dir", str(data), "train", "--dataset", "digits", "--name", name, "--epochs", "1", "--seed", "1"]
    status = main([*argv, *args])
    out = capsys.readouterr()
    assert status == 0, out.err
    job_id = out.out.split()[2]
    assert f"model job {job_id} ({name})" in out.out and f"{job_id}: Done" in out.out
    return job_id


def job_of(data: Path, job_id: str) -> tuple[dict[str, Any], list[str]]:
    """(the job's stored config, its log)."""
    store = Store(data / "kiln.db")
    try:
        job = store.get_job(job_id)
        assert job is not None
        return job.params["config"], store.logs(job_id)
    finally:
        store.close()


def test_network_file_trains_a_custom_model(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "lenet75.prototxt"
    file.write_text(LENET75, encoding="utf-8")
    job_id = train(data, capsys, "lenet75", "--network-file", str(file))
    config, log = job_of(data, job_id)
    assert config["network"] == "custom" and config["network_language"] == "prototxt"
    assert config["network_text"] == LENET75 and config["pretrained_weights"] == ""
    assert (data / "jobs" / job_id / "network.prototxt").read_text(encoding="utf-8") == LENET75
    assert (data / "jobs" / job_id / "snapshot_1.safetensors").is_file()
    assert not any("Starting from" in line for line in log)
    with pytest.raises(SystemExit, match="--network-file"):  # a file that is not there: said, not a traceback
        main(["--data-dir", str(data), "train", "--dataset", "digits", "--name", "x", "--network-file", "no.prototxt"])


def test_a_broken_network_file_fails_with_its_line(data: Path, tmp_path: Path) -> None:
    broken = edit_text(LENET75, "num_output: 100\n", "num_output 100\n")
    line = broken.splitlines().index("    num_output 100") + 1
    file = tmp_path / "broken.prototxt"
    file.write_text(broken, encoding="utf-8")
    argv = ["--data-dir", str(data), "train", "--dataset", "digits", "--name", "broken", "--network-file", str(file)]
    out = subprocess.run([sys.executable, "-m", "kiln", *argv], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert f"error: custom_network: line {line}, column 16: expected ':' or '{{'" in out.stderr
    assert "Traceback" not in out.stderr and "model job" not in out.stdout
    store = Store(data / "kiln.db")
    try:
        assert store.list_jobs("model") == []  # nothing was created
    finally:
        store.close()


def test_from_a_model_fine_tunes(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "lenet75.prototxt"
    file.write_text(LENET75, encoding="utf-8")
    base = train(data, capsys, "lenet75", "--network-file", str(file))
    started = f"Starting from the weights of lenet75 ({base}) epoch 1"

    by_epoch = train(data, capsys, "by epoch", "--from", f"{base}:1")
    config, log = job_of(data, by_epoch)
    assert config["network_text"] == LENET75 and config["pretrained_from"] == f"lenet75 ({base}) epoch 1"
    assert started in log  # the same network and classes: every layer taken, none fresh
    assert not any("started fresh" in line for line in log)

    by_name = train(data, capsys, "by name", "--from", "lenet75")  # a model's name: its latest snapshot
    config, log = job_of(data, by_name)
    assert config["network_text"] == LENET75 and started in log

    lenet = tmp_path / "lenet.prototxt"
    lenet.write_text(standard_text("lenet"), encoding="utf-8")
    other = train(data, capsys, "other text", "--network-file", str(lenet), "--from", "lenet75")
    config, log = job_of(data, other)
    assert config["network_text"] == standard_text("lenet") and config["pretrained_from"] == f"lenet75 ({base}) epoch 1"
    (line,) = [line for line in log if line.startswith(started)]
    assert "conv1.weight (75x1x5x5 in the snapshot, 20x1x5x5 here)" in line  # another shape: fresh
    assert "ip2.weight" not in line  # the same shape in both: taken

    capsys.readouterr()
    argv = ["--data-dir", str(data), "train", "--dataset", "digits", "--name", "x", "--from", f"{base}:7"]
    assert main(argv) == 2
    assert f"{base}-snapshot" in capsys.readouterr().err  # no such epoch: the form's error, no job
