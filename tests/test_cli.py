"""The `kiln` command end to end: dataset create, train (with a sweep), classify, jobs; data roots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import start_server, stop_server, write_class_folder


def kiln(data: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kiln", "--data-dir", str(data), *args], capture_output=True, text=True, timeout=timeout
    )


def test_train_and_classify_from_the_command_line(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "imgs", {"left": 30, "right": 30}, size=(16, 16))
    data = tmp_path / "data"
    made = kiln(
        data,
        "dataset",
        "create",
        "--name",
        "lr",
        "--folder",
        str(folder),
        "--channels",
        "1",
        "--width",
        "16",
        "--height",
        "16",
    )
    assert made.returncode == 0, made.stderr
    out = kiln(
        data,
        "train",
        "--dataset",
        "lr",
        "--name",
        "cli-lenet",
        "--epochs",
        "2",
        "--lr",
        "0.01,0.001",
        "--seed",
        "3",
        "--set",
        "solver_type=ADAM",
        "--set",
        "lr_policy=fixed",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("model job ") == 2 and out.stdout.count(": Done") == 2
    assert "cli-lenet learning_rate:0.01 batch_size:64" in out.stdout
    assert "epochs" in out.stderr and "val accuracy" in out.stderr  # the progress bar shows metrics
    listed = kiln(data, "jobs", "list").stdout
    assert listed.count("model") == 2 and listed.count("Done") == 3
    model_id = next(line.split()[0] for line in listed.splitlines() if "learning_rate:0.001" in line)
    top = kiln(data, "classify", model_id, str(folder / "right" / "0001.png"), str(tmp_path / "missing.png"))
    assert top.returncode == 1  # one image could not be read
    lines = top.stdout.splitlines()
    assert lines[1].strip().endswith(("right", "left")) and "%" in lines[1]
    assert "error" in top.stdout and "Traceback" not in top.stderr
    bad = kiln(data, "train", "--dataset", "nope", "--name", "x", "--set", "aug_noise=9")
    assert bad.returncode == 2 and "dataset" in bad.stderr and "aug_noise" in bad.stderr


def test_data_roots_limit_what_users_can_read(tmp_path: Path) -> None:
    inside = write_class_folder(tmp_path / "allowed" / "imgs", {"a": 3, "b": 3})
    outside = write_class_folder(tmp_path / "elsewhere", {"a": 3, "b": 3})
    server = start_server(tmp_path / "data", env={"KILN_DATA_ROOTS": str(tmp_path / "allowed")})
    try:

        def create(folder: Path):
            return server.client.post(
                "/datasets/images/classification.json",
                data={"dataset_name": "d", "folder_train": str(folder), "resize_width": "8", "resize_height": "8"},
            )

        assert create(inside).status_code == 200
        refused = create(outside)
        assert refused.status_code == 400 and "folder_train" in refused.json()["errors"]
    finally:
        stop_server(server)


def test_serving_on_the_network_requires_data_roots(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KILN_DATA_ROOTS"}
    out = subprocess.run(
        [sys.executable, "-m", "kiln", "--data-dir", str(tmp_path), "serve", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert out.returncode == 2 and "KILN_DATA_ROOTS" in out.stderr


def test_recipe_fills_the_form_and_flags_still_win() -> None:
    from kiln.cli import build_parser
    from kiln.cli_models import form_from_args
    from kiln.training.recipe import KILN_RECIPES, apply_to_form

    args = build_parser().parse_args(["train", "--dataset", "d", "--name", "n", "--recipe", "--epochs", "5"])
    form = apply_to_form(form_from_args(args, "d"))  # as the model form does
    lenet = KILN_RECIPES["lenet"]
    assert (form["recipe"], form["solver_type"], form["lr_policy"], form["batch_size"]) == (
        "kiln",
        lenet["solver_type"],
        lenet["lr_policy"],
        str(lenet["batch_size"]),
    )
    assert float(form["aug_shift"]) > 0 and float(form["aug_invert"]) > 0
    assert form["train_epochs"] == "5"
    plain = build_parser().parse_args(["train", "--dataset", "d", "--name", "n", "--recipe", "none"])
    assert "solver_type" not in apply_to_form(form_from_args(plain, "d"))


def test_relative_folder_is_resolved(tmp_path: Path) -> None:
    write_class_folder(tmp_path / "imgs", {"a": 3, "b": 3})
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "kiln",
            "--data-dir",
            str(tmp_path / "data"),
            "dataset",
            "create",
            "--name",
            "rel",
            "--folder",
            "imgs",
            "--width",
            "8",
            "--height",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr


def test_jobs_commands(tmp_path: Path) -> None:
    folder = write_class_folder(tmp_path / "imgs", {"a": 3, "b": 3})
    data = tmp_path / "data"
    queued = kiln(
        data, "dataset", "create", "--name", "q", "--folder", str(folder), "--width", "8", "--height", "8", "--queue"
    )
    job_id = queued.stdout.split()[2]
    assert '"status": "Initialized"' in kiln(data, "jobs", "show", job_id).stdout
    aborted = kiln(data, "jobs", "abort", job_id)
    assert aborted.returncode == 0 and aborted.stdout.strip() == "Job aborted."
    resumed = kiln(data, "jobs", "resume", job_id)  # runs here, as `kiln train` does
    assert resumed.returncode == 0 and f"{job_id}: Done" in resumed.stdout, resumed.stderr
    again = kiln(data, "jobs", "resume", job_id)
    assert again.returncode == 1 and "Job not resumed: it is Done." in again.stderr
    assert kiln(data, "jobs", "delete", job_id).stdout.strip() == "Job deleted."
    missing = kiln(data, "jobs", "show", job_id)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_global_options_before_or_after_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kiln.cli import build_parser, main

    for argv in (["serve", "--data-dir", "D"], ["--data-dir", "D", "serve"]):
        assert build_parser().parse_args(argv).data_dir == "D"
    assert build_parser().parse_args(["serve"]).data_dir is None
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KILN_DATA_DIR", raising=False)
    write_class_folder(tmp_path / "imgs", {"a": 3, "b": 3})
    data = str(tmp_path / "d")
    assert (
        main(
            [
                "dataset",
                "create",
                "--name",
                "ds",
                "--folder",
                "imgs",
                "--width",
                "16",  # LeNet needs 13x13 at least: the form checks the network for the images
                "--height",
                "16",
                "--queue",
                "--data-dir",
                data,
            ]
        )
        == 0
    )
    assert main(["train", "--dataset", "ds", "--name", "after", "--queue", "--data-dir", data]) == 0
    assert main(["--data-dir", data, "train", "--dataset", "ds", "--name", "before", "--queue"]) == 0
    capsys.readouterr()
    for argv in (["jobs", "list", "--data-dir", data], ["--data-dir", data, "jobs", "list"]):
        assert main(argv) == 0
        names = [line.split()[-1] for line in capsys.readouterr().out.splitlines()]
        assert sorted(names) == ["after", "before", "ds"]
    assert not (tmp_path / "kiln-data").exists()  # nothing went to the default folder
