"""Pretrained models from archives (issue 10): every archive version's fixture keeps loading with the
same answers; DIGITS' layout loads; archives kiln must refuse are refused with the file named."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kiln import pretrained
from kiln.archives import extract_archive, flatten_single_folder
from kiln.export import ARCHIVE_VERSION
from kiln.inference.predictor import Predictor
from tests.fixtures.archives.make_fixtures import images

FIXTURES = Path(__file__).parent / "fixtures" / "archives"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def imported(archive: Path, tmp_path: Path, name: str = "pre") -> Path:
    """The archive unpacked and saved as a pretrained model's folder."""
    folder = flatten_single_folder(extract_archive(archive, tmp_path / f"{name}-unpacked"))
    source = pretrained.import_archive_folder(folder)
    pretrained.save(source, tmp_path / name, allow_python=False)
    return tmp_path / name


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_every_archive_fixture_loads_with_the_same_answers(fixture: str, tmp_path: Path) -> None:
    """One fixture per archive version (and DIGITS' layout): a later kiln must answer exactly as the
    kiln that wrote it did (tests/fixtures/archives/make_fixtures.py)."""
    job = imported(FIXTURES / fixture, tmp_path)
    probs = Predictor.from_job_dir(job).probabilities(np.stack(images())[..., None])
    assert np.allclose(probs, EXPECTED[fixture], atol=1e-5)
    assert Predictor.from_job_dir(job).labels == ["class 0", "class 1", "class 2"]


def test_there_is_a_fixture_for_the_current_archive_version() -> None:
    assert f"v{ARCHIVE_VERSION}.tar.gz" in EXPECTED, "a new ARCHIVE_VERSION needs its fixture: run make_fixtures.py"


@pytest.fixture
def digits_folder(tmp_path: Path) -> Path:
    return extract_archive(FIXTURES / "digits-layout.zip", tmp_path / "digits")


def refusal(folder: Path) -> pretrained.PretrainedError:
    with pytest.raises(pretrained.PretrainedError) as err:
        pretrained.save(pretrained.import_archive_folder(folder), folder.parent / "out", allow_python=False)
    assert not (folder.parent / "out").exists()
    return err.value


def edit_info(folder: Path, **changes: object) -> None:
    info = json.loads((folder / "info.json").read_text())
    info.update({k.replace("_", " "): v for k, v in changes.items()})
    (folder / "info.json").write_text(json.dumps(info))


def test_missing_info_json_is_refused(digits_folder: Path) -> None:
    (digits_folder / "info.json").unlink()
    assert "no info.json" in refusal(digits_folder).message


def test_pickled_weights_are_refused_without_being_read(digits_folder: Path) -> None:
    (digits_folder / "snapshot.pt").write_bytes(b"\x80\x04 not read")
    edit_info(digits_folder, snapshot_file="snapshot.pt")
    assert "safetensors only" in refusal(digits_folder).message


def test_weights_that_do_not_match_the_network_are_refused(digits_folder: Path) -> None:
    save_file({"conv1.weight": torch.zeros(8, 1, 3, 3)}, str(digits_folder / "snapshot.safetensors"))
    error = refusal(digits_folder)
    assert "do not match the network" in error.message and "conv1.weight is 8x1x3x3" in error.message


def test_member_outside_the_folder_is_refused(digits_folder: Path) -> None:
    edit_info(digits_folder, model_file="../deploy.prototxt")
    assert "top level" in refusal(digits_folder).message


def test_newer_archive_version_is_refused(digits_folder: Path) -> None:
    edit_info(digits_folder, archive_version=ARCHIVE_VERSION + 1)
    assert "newer kiln" in refusal(digits_folder).message


def test_other_frameworks_and_broken_texts_are_refused(digits_folder: Path) -> None:
    edit_info(digits_folder, framework="caffe")
    assert "PyTorch" in refusal(digits_folder).message
    edit_info(digits_folder, framework="pytorch")
    (digits_folder / "deploy.prototxt").write_text('layer { name: "x" type: "Nope" }')
    assert "does not build" in refusal(digits_folder).message


def test_python_network_refused_unless_allowed(digits_folder: Path) -> None:
    (digits_folder / "net.py").write_text("import os\ndef network(num_classes, input_shape):\n    raise SystemExit\n")
    edit_info(digits_folder, model_file="net.py")
    assert "Python networks are off" in refusal(digits_folder).message


def test_without_labels_the_class_count_comes_from_the_weights(digits_folder: Path, tmp_path: Path) -> None:
    (digits_folder / "labels.txt").unlink()
    edit_info(digits_folder, labels_file=None)
    info = pretrained.save(pretrained.import_archive_folder(digits_folder), tmp_path / "out", allow_python=False)
    assert info["num_classes"] == 3 and info["has_labels"] is False
    assert Predictor.from_job_dir(tmp_path / "out").labels == ["0", "1", "2"]


def test_a_folder_wrapping_the_archive_is_looked_into(tmp_path: Path) -> None:
    wrapped = tmp_path / "w"
    extract_archive(FIXTURES / "digits-layout.zip", wrapped / "inner" / "small")
    shutil.make_archive(str(tmp_path / "wrapped"), "gztar", wrapped / "inner")
    job = imported(tmp_path / "wrapped.tar.gz", tmp_path, "w2")
    assert Predictor.from_job_dir(job).labels == ["class 0", "class 1", "class 2"]
