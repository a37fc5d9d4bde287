"""kiln.datasets.packed_format: the one place that names the files, and the completeness rule."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from kiln.datasets import packed_format as fmt
from kiln.datasets.pack import build_dataset
from kiln.datasets.reader import PackedDataset
from kiln.reporting import RecordingReporter
from tests.datasets.conftest import folder_spec, make_classes

KILN = Path(__file__).resolve().parents[2] / "kiln"
# A literal that is a format file name (or its suffix, in an f-string), not prose that mentions one.
JOB_FILES = r"(manifest\.json|mean\.npy|mean\.png|errors\.log|labels\.txt)"
FORMAT_NAME = re.compile(rf"/?{JOB_FILES}|\.(u8|blob|labels\.npy|inverted\.npy|source\.npy|offsets\.npy)")
URL_OF_FORMAT_FILE = re.compile(rf"/{JOB_FILES}\b")  # in templates: /files/<job>/mean.png
# Places outside the dataset engine that still spell a format file name; each should call
# packed_format instead (is_complete / read_manifest / the name constants). Shrink, never grow.
NOT_YET_SWITCHED = {
    "datasets/stdsets.py",  # its own image-folder lists (DIGITS' labels.txt), not a packed dataset
}


def _files_named_by_the_format(files: fmt.PackedFiles, splits: list[str]) -> set[str]:
    names = {files.manifest, files.labels_txt, files.mean_npy, files.mean_png, files.errors_log}
    for split in splits:
        names |= {files.list_txt(split), files.raw(split), files.blob(split), files.offsets(split)}
        names |= {files.array(split, name) for name in fmt.SPLIT_ARRAYS}
    return {p.name for p in names}


@pytest.mark.parametrize("encoding", ["none", "png"])
def test_every_file_a_build_writes_is_named_by_the_format(tmp_path: Path, encoding: str) -> None:
    root = make_classes(tmp_path / "d", {"a": 5, "b": 5})
    (root / "a" / "000.png").write_bytes(b"junk")  # so errors.log has a line
    job = tmp_path / "job"
    manifest = build_dataset(
        folder_spec(root, encoding=encoding, add_inverted=True), job, RecordingReporter(), workers=1
    )
    written = {p.name for p in job.iterdir()}
    assert written <= _files_named_by_the_format(fmt.PackedFiles(job), list(manifest["splits"]))
    assert fmt.read_manifest(job) == manifest
    storage = fmt.storage_for(encoding)
    assert all(split["storage"] == storage for split in manifest["splits"].values())
    assert fmt.read_split_array(job, "train", "labels").dtype == fmt.INDEX_DTYPE
    assert fmt.read_split_array(job, "train", "inverted").dtype == np.bool_
    assert fmt.read_mean(job).dtype == fmt.MEAN_DTYPE


def test_the_manifest_marks_a_dataset_complete(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 3, "b": 3})
    job = tmp_path / "job"
    assert not fmt.is_complete(job) and fmt.read_manifest(job) is None
    build_dataset(folder_spec(root), job, RecordingReporter(), workers=1)
    assert fmt.is_complete(job)
    fmt.mark_incomplete(job)
    assert not fmt.is_complete(job)
    with pytest.raises(FileNotFoundError, match=f"no {fmt.MANIFEST}"):
        PackedDataset(job)
    fmt.write_manifest(job, {"labels": ["a", "b"]})
    assert fmt.is_complete(job) and fmt.read_manifest(job) == {"labels": ["a", "b"]}


def test_a_build_removes_what_a_killed_build_left(tmp_path: Path) -> None:
    from kiln.atomic import AtomicFile

    root = make_classes(tmp_path / "d", {"a": 3, "b": 3})
    job = tmp_path / "job"
    job.mkdir()
    AtomicFile(fmt.PackedFiles(job).raw("train")).file.close()  # the process died before commit
    build_dataset(folder_spec(root), job, RecordingReporter(), workers=1)
    assert not list(job.glob(".*"))


def test_the_manifest_is_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_classes(tmp_path / "d", {"a": 3, "b": 3})
    job = tmp_path / "job"
    seen: list[set[str]] = []
    real = fmt.write_manifest

    def write_manifest(job_dir: Path, manifest: dict) -> None:
        seen.append({p.name for p in job_dir.iterdir() if not p.name.startswith(".")})
        real(job_dir, manifest)

    monkeypatch.setattr(fmt, "write_manifest", write_manifest)
    build_dataset(folder_spec(root, folder_pct_val=0), job, RecordingReporter(), workers=1)
    assert seen and fmt.MANIFEST not in seen[0]
    assert {p.name for p in job.iterdir()} == seen[0] | {fmt.MANIFEST}


def test_offsets_index_the_blob() -> None:
    np.testing.assert_array_equal(fmt.offsets_from_lengths(np.array([3, 0, 5])), [0, 3, 3, 8])
    assert fmt.offsets_from_lengths(np.zeros(0, np.int64)).tolist() == [0]


def _spelled_names(path: Path) -> set[str]:
    """Format file names in a module's string literals (not its comments or docstrings)."""
    if path.suffix == ".html":
        return {m.group(0) for m in URL_OF_FORMAT_FILE.finditer(path.read_text())}
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and FORMAT_NAME.fullmatch(node.value)
    }


def test_no_module_but_the_format_spells_its_file_names() -> None:
    spelled = {}
    for path in sorted(KILN.rglob("*")):
        rel = path.relative_to(KILN).as_posix()
        if path.suffix in (".py", ".html") and rel != "datasets/packed_format.py":
            names = _spelled_names(path)
            if names and rel not in NOT_YET_SWITCHED:
                spelled[rel] = sorted(names)
    assert spelled == {}
