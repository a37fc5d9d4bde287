"""Folder and text-list parsing, and DIGITS' stratified three-way split."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from kiln.datasets.sources import (
    DatasetInputError,
    collect_images,
    parse_folder,
    parse_textfile,
    read_labels_file,
    split_indices,
)
from kiln.datasets.spec import DatasetSpec
from tests.datasets.conftest import folder_spec, make_classes


@pytest.mark.parametrize(
    "n, val, test, expected",
    [
        (100, 0, 0, (100, 0, 0)),
        (100, 10, 20, (70, 10, 20)),
        (10, 25, 0, (8, 2, 0)),
        (7, 25, 0, (5, 2, 0)),
        (6, 25, 0, (5, 1, 0)),  # round(4.5) = 5 as in Python 2, then val is trimmed to fit
        (2, 25, 0, (1, 1, 0)),  # val gets one image taken from train
        (3, 25, 25, (1, 1, 1)),  # test gets one too
        (1, 25, 0, (1, 0, 0)),  # one image cannot be split
        (5, 50, 50, (0, 3, 2)),
        (4, 0, 100, (0, 0, 4)),
        (4, 100, 0, (0, 4, 0)),
    ],
)
def test_split_indices_match_digits(n: int, val: int, test: int, expected: tuple[int, int, int]) -> None:
    assert split_indices(n, val, test) == expected


def test_split_indices_rejects_bad_percentages() -> None:
    with pytest.raises(ValueError):
        split_indices(10, 60, 50)


def test_parse_folder_labels_and_files(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"b_class": 2, "a_class": 3, "c": 2})
    (root / "a_class" / "sub" / "deeper").mkdir(parents=True)
    os.replace(root / "a_class" / "000.png", root / "a_class" / "sub" / "deeper" / "X.PNG")
    (root / "a_class" / "notes.txt").write_text("not an image")
    (root / "c" / "x.JpEg").write_bytes(b"counted by extension, read later")
    (root / "c" / "y.pgm").write_bytes(b"P5")
    (root / ".ipynb_checkpoints").mkdir()
    make_classes(root / ".ipynb_checkpoints", {"hidden": 3})
    parsed = parse_folder(root, 1, None)
    assert parsed.labels == ["a class", "b class", "c"]
    assert [len(p) for p in parsed.images] == [3, 2, 4]
    assert any(p.endswith("deeper/X.PNG") for p in parsed.images[0])
    assert all(os.path.isabs(p) for paths in parsed.images for p in paths)


def test_parse_folder_min_and_max(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"few": 1, "many": 10, "ok": 3})
    parsed = parse_folder(root, 2, 4, seed=3)
    assert parsed.labels == ["many", "ok"]
    assert [len(p) for p in parsed.images] == [4, 3]
    assert parsed.dropped[0]["label"] == "few" and "minimum of 2" in parsed.dropped[0]["reason"]
    assert parse_folder(root, 2, 4, seed=3).images == parsed.images
    assert parse_folder(root, 2, 4, seed=4).images != parsed.images


def test_parse_folder_follows_links_without_looping(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 2})
    make_classes(tmp_path / "elsewhere", {"b": 3})
    os.symlink(tmp_path / "elsewhere" / "b", root / "b")
    os.symlink(root / "a", root / "a" / "loop")
    parsed = parse_folder(root, 1, None)
    assert parsed.labels == ["a", "b"] and [len(p) for p in parsed.images] == [2, 3]


def test_parse_folder_with_train_labels(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "val", {"dog": 2, "cat": 3, "emu": 2})
    parsed = parse_folder(root, 1, None, labels=["cat", "dog", "fox"])
    assert [len(p) for p in parsed.images] == [3, 2, 0]
    assert any('"emu"' in w for w in parsed.warnings)


def test_collect_stratified_split_is_seeded(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 10, "b": 7, "c": 6})
    spec = folder_spec(root, folder_pct_val=25, folder_pct_test=0, seed=1)
    src = collect_images(spec)
    assert src.labels == ["a", "b", "c"]
    train, val = Counter(label for _, label in src.splits["train"]), Counter(label for _, label in src.splits["val"])
    assert [train[i] for i in range(3)] == [8, 5, 5] and [val[i] for i in range(3)] == [2, 2, 1]
    assert not src.splits["test"]
    assert collect_images(spec).splits == src.splits
    assert collect_images(folder_spec(root, seed=2)).splits["val"] != src.splits["val"]
    every = [p for split in src.splits.values() for p, _ in split]
    assert len(every) == len(set(every)) == 23


def test_collect_drops_classes_too_small_for_the_splits(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 2, "b": 3, "c": 3})
    src = collect_images(folder_spec(root, folder_pct_val=25, folder_pct_test=25, folder_train_min_per_class=1))
    assert src.labels == ["b", "c"]
    assert src.dropped == [{"label": "a", "reason": "2 images, fewer than the 3 splits requested"}]


def test_collect_needs_two_classes(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 5, "b": 1})
    with pytest.raises(DatasetInputError) as err:
        collect_images(folder_spec(root))
    assert err.value.field == "folder_train" and "at least 2" in err.value.message
    assert err.value.as_errors() == {"folder_train": [err.value.message]}


def test_collect_separate_val_folder(tmp_path: Path) -> None:
    train = make_classes(tmp_path / "train", {"a": 4, "b": 4})
    val = make_classes(tmp_path / "val", {"b": 2, "zebra": 2})
    src = collect_images(folder_spec(train, has_val_folder=True, folder_val=str(val), folder_val_min_per_class=1))
    assert len(src.splits["train"]) == 8  # folder_pct_val is ignored with a val folder
    assert sorted(label for _, label in src.splits["val"]) == [1, 1]
    assert any("zebra" in w for w in src.warnings)


def test_parse_textfile(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    listing = tmp_path / "train.txt"
    listing.write_text("a.png 0\n/abs/b b.png 1\n\nno label here\nc.png 7\n  d.png   1  \n")
    parsed = parse_textfile(listing, ["x", "y"], tmp_path / "imgs")
    assert parsed.entries == [
        (str(tmp_path / "imgs" / "a.png"), 0),
        ("/abs/b b.png", 1),
        (str(tmp_path / "imgs" / "d.png"), 1),
    ]
    assert parsed.bad_lines[0].endswith("line 4: expected 'path label_index', got 'no label here'")
    assert "line 5: label 7 is not in the labels file" in parsed.bad_lines[1]
    assert parse_textfile(listing, ["x", "y"]).entries[0] == (str(tmp_path / "a.png"), 0)


def test_parse_textfile_without_usable_lines(tmp_path: Path) -> None:
    listing = tmp_path / "val.txt"
    listing.write_text("just words\n")
    with pytest.raises(DatasetInputError) as err:
        parse_textfile(listing, ["x", "y"], field_name="textfile_val_images")
    assert err.value.field == "textfile_val_images" and "line 1" in err.value.message


def test_collect_from_textfiles(tmp_path: Path) -> None:
    make_classes(tmp_path, {"i": 4})
    (tmp_path / "labels.txt").write_text("zero\n\none\n")
    (tmp_path / "train.txt").write_text("i/000.png 0\ni/001.png 1\ni/002.png 1\n")
    (tmp_path / "val.txt").write_text("i/003.png 0\n")
    spec = DatasetSpec(
        method="textfile",
        textfile_labels_file=str(tmp_path / "labels.txt"),
        textfile_train_images=str(tmp_path / "train.txt"),
        textfile_use_val=True,
        textfile_val_images=str(tmp_path / "val.txt"),
        textfile_shuffle=False,
    )
    src = collect_images(spec)
    assert src.labels == ["zero", "one"] == read_labels_file(tmp_path / "labels.txt")
    assert [label for _, label in src.splits["train"]] == [0, 1, 1]
    assert src.splits["val"] == [(str(tmp_path / "i" / "003.png"), 0)]
    (tmp_path / "labels.txt").write_text("only\n")
    with pytest.raises(DatasetInputError, match="textfile_labels_file"):
        collect_images(spec)


def test_a_vanished_folder_names_its_field(tmp_path: Path) -> None:
    train = make_classes(tmp_path / "train", {"a": 3, "b": 3})
    with pytest.raises(DatasetInputError) as err:
        collect_images(folder_spec(train, has_val_folder=True, folder_val=str(tmp_path / "gone")))
    assert err.value.field == "folder_val" and "cannot read folder" in err.value.message
