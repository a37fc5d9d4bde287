"""validate_spec: one message per mistake, keyed by the DIGITS form field."""

from __future__ import annotations

import os
from pathlib import Path

from kiln.datasets.spec import DatasetSpec, validate_spec
from tests.datasets.conftest import folder_spec, make_classes


def test_a_good_folder_spec_has_no_errors(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 2, "b": 2})
    assert validate_spec(folder_spec(root), None) == {}
    assert validate_spec(folder_spec(root), [tmp_path]) == {}


def test_values_and_choices(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 2, "b": 2})
    spec = folder_spec(
        root,
        dataset_name=" ",
        resize_width=0,
        resize_height=5000,
        resize_channels=2,
        resize_mode="stretch",
        encoding="gif",
        folder_pct_val=60,
        folder_pct_test=50,
        folder_train_min_per_class=0,
        folder_train_max_per_class=None,
    )
    errors = validate_spec(spec, None)
    assert set(errors) == {
        "dataset_name",
        "resize_width",
        "resize_height",
        "resize_channels",
        "resize_mode",
        "encoding",
        "folder_pct_val",
        "folder_train_min_per_class",
    }
    assert errors["resize_width"] == ["Width must be between 1 and 4096 (got 0)"]
    assert "110" in errors["folder_pct_val"][0]
    spec = folder_spec(
        root,
        resize_width="abc",
        folder_pct_val=50,
        folder_pct_test=50,
        folder_train_min_per_class=5,
        folder_train_max_per_class=3,
    )
    errors = validate_spec(spec, None)
    assert "whole number" in errors["resize_width"][0]
    assert "no images for training" in errors["folder_pct_val"][0]
    assert errors["folder_train_max_per_class"] == ["Maximum samples per class (3) must be at least the minimum (5)"]


def test_folder_paths(tmp_path: Path) -> None:
    assert "is required" in validate_spec(folder_spec(""), None)["folder_train"][0]
    assert "does not exist" in validate_spec(folder_spec(tmp_path / "nope"), None)["folder_train"][0]
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in validate_spec(folder_spec(tmp_path / "file"), None)["folder_train"][0]
    assert "absolute" in validate_spec(folder_spec("relative/dir"), None)["folder_train"][0]
    one = make_classes(tmp_path / "one", {"a": 2})
    (one / "empty").mkdir()
    message = validate_spec(folder_spec(one), None)["folder_train"][0]
    assert "at least 2 class sub-folders" in message and "found 2 sub-folders, 1 with images" in message
    root = make_classes(tmp_path / "d", {"a": 2, "b": 2})
    errors = validate_spec(folder_spec(root, has_val_folder=True, folder_val="", folder_pct_val=100), None)
    assert errors == {"folder_val": ["Val images folder is required"]}  # pct_val is ignored then


def test_allowed_roots_resolve_links(tmp_path: Path) -> None:
    inside, outside = tmp_path / "inside", tmp_path / "outside"
    make_classes(outside / "d", {"a": 2, "b": 2})
    inside.mkdir()
    os.symlink(outside / "d", inside / "link")
    errors = validate_spec(folder_spec(inside / "link"), [inside])
    assert "outside the folders this server may read" in errors["folder_train"][0]
    assert "KILN_DATA_ROOTS" in errors["folder_train"][0]
    assert validate_spec(folder_spec(inside / "link"), [outside]) == {}
    # nothing is revealed about paths outside the roots
    assert "outside" in validate_spec(folder_spec(tmp_path / "missing"), [inside])["folder_train"][0]


def test_textfile_method(tmp_path: Path) -> None:
    (tmp_path / "labels.txt").write_text("a\nb\n")
    (tmp_path / "train.txt").write_text("x.png 0\n")
    spec = DatasetSpec(
        dataset_name="t",
        method="textfile",
        textfile_labels_file=str(tmp_path / "labels.txt"),
        textfile_train_images=str(tmp_path / "train.txt"),
        textfile_use_val=False,
    )
    assert validate_spec(spec, None) == {}
    spec.textfile_use_val = True
    spec.textfile_train_folder = str(tmp_path / "nowhere")
    errors = validate_spec(spec, None)
    assert errors == {
        "textfile_val_images": ["Val image list is required"],
        "textfile_train_folder": [f"{tmp_path / 'nowhere'} does not exist"],
    }
    spec.method = "s3"
    assert "method" in validate_spec(spec, None)
