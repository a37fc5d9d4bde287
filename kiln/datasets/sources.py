"""Where a dataset's images come from: a folder of class folders, or text lists (DIGITS' two methods).

Turns a DatasetSpec into labels plus a list of (path, label) per split, with DIGITS' stratified
per-class three-way split. Mistakes in the user's input raise DatasetInputError(field, message).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kiln import paths
from kiln.datasets.images import IMAGE_EXTENSIONS, round_half_up
from kiln.datasets.spec import DatasetSpec
from kiln.paths import PathRefused, ReadPolicy

SPLITS = ("train", "val", "test")
_LINE = re.compile(r"(.+)\s+(\d+)\s*$")

Entry = tuple[str, int]  # (absolute path, symlinks resolved, label index)
UNRESTRICTED = ReadPolicy()


class DatasetInputError(Exception):
    """A problem with what the user asked for, tied to one form field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def as_errors(self) -> dict[str, list[str]]:
        return {self.field: [self.message]}


def split_indices(n: int, pct_val: float, pct_test: float) -> tuple[int, int, int]:
    """(n_train, n_val, n_test) for n images, as DIGITS' three_way_split_indices.

    Every split with a non-zero percentage gets at least one image when n allows, taken first
    from train, then from val.
    """
    if not (0 <= pct_val <= 100 and 0 <= pct_test <= 100 and pct_val + pct_test <= 100):
        raise ValueError(f"bad percentages: val {pct_val}, test {pct_test}")
    pct_train = 100 - (pct_val + pct_test)
    if pct_train >= 100:
        return n, 0, 0
    if pct_val >= 100:
        return 0, n, 0
    if pct_test >= 100:
        return 0, 0, n
    a = round_half_up(n * pct_train / 100)
    if pct_train and not a:
        a = 1
    b = round_half_up(n * pct_val / 100)
    if a + b > n:
        b = n - a
    if pct_val and not b:
        if a > 1:
            a, b = a - 1, 1
        elif a != n:
            b = 1
    c = n - (a + b)
    if pct_test and not c:
        if b > 1:
            b, c = b - 1, 1
        elif a > 1:
            a, c = a - 1, 1
    return a, b, c


@dataclass
class ParsedFolder:
    """Images per label (index into labels), as found under one folder."""

    folder: str
    labels: list[str]
    images: list[list[str]]
    dropped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _class_dirs(folder: Path) -> list[os.DirEntry]:
    """Sorted sub-folders, hidden ones (.ipynb_checkpoints, .git) left out."""
    with os.scandir(folder) as it:
        dirs = [e for e in it if not e.name.startswith(".") and e.is_dir(follow_symlinks=True)]
    return sorted(dirs, key=lambda e: e.name)


def _images_under(folder: str, roots: list[Path] | None = None, refused: list[str] | None = None) -> list[str]:
    """All image files below folder, sub-folders flattened, links followed (each real folder once,
    so link loops end), as real paths (symlinks resolved). A link that leads outside the roots is
    left out and its path added to `refused`. os.scandir rather than os.walk: DirEntry.path and the
    cached d_type make this about 3x cheaper on folders of 100,000 files; only links cost a
    realpath."""
    found: list[str] = []
    seen: set[str] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        real = os.path.realpath(current)
        if real in seen:
            continue
        seen.add(real)
        if not paths.inside(Path(real), roots):
            if refused is not None:
                refused.append(current)
            continue
        try:
            entries = os.scandir(real)
        except OSError:
            continue
        with entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    stack.append(entry.path)
                elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    if not entry.is_symlink():
                        found.append(entry.path)
                        continue
                    target = os.path.realpath(entry.path)
                    if paths.inside(Path(target), roots):
                        found.append(target)
                    elif refused is not None:
                        refused.append(entry.path)
    found.sort()
    return found


def parse_folder(
    folder: str | Path,
    min_per_class: int,
    max_per_class: int | None,
    labels: list[str] | None = None,
    seed: int = 0,
    field_name: str = "folder_train",
    roots: list[Path] | None = None,
) -> ParsedFolder:
    """Parse a folder with one sub-folder per class (DIGITS' parse_folder).

    Labels are the sorted sub-folder names with `_` shown as a space. With `labels` (a separate
    val or test folder) sub-folders map onto those labels and unknown ones are skipped with a
    warning. A class with fewer than min_per_class images is dropped; above max_per_class a
    seeded random subset is kept. Everything read lies inside `roots` (None: anywhere) once
    symlinks are resolved; links that lead outside are skipped with a warning.
    """
    try:
        real = paths.check_readable(folder, roots, kind="dir")
    except PathRefused as exc:
        raise DatasetInputError(field_name, f"cannot read folder {folder}: it {exc}") from None
    folder = str(real)
    try:
        dirs = _class_dirs(real)
    except OSError as exc:
        raise DatasetInputError(field_name, f"cannot read folder {folder}: {exc.strerror or exc}") from None
    create = labels is None
    known = labels or []
    out = ParsedFolder(folder, [] if create else list(known), [] if create else [[] for _ in known])
    rng = np.random.default_rng(seed)
    refused: list[str] = []
    for entry in dirs:
        name = entry.name.replace("_", " ")
        if not create and name not in out.labels:
            out.warnings.append(f'Category "{name}" in {folder} is not a train label. Skipping.')
            continue
        images = _images_under(entry.path, roots, refused)
        if len(images) < max(min_per_class, 1):
            out.dropped.append(
                {"label": name, "reason": f"{len(images)} images, fewer than the minimum of {min_per_class} per class"}
            )
            continue
        if max_per_class is not None and len(images) > max_per_class:
            keep = np.sort(rng.choice(len(images), size=max_per_class, replace=False))
            images = [images[i] for i in keep]
        if create:
            out.labels.append(name)
            out.images.append(images)
        else:
            out.images[out.labels.index(name)] = images
    if refused:
        out.warnings.append(
            f"{len(refused)} links under {folder} lead outside the folders this server may read "
            f"(setting KILN_DATA_ROOTS) and were skipped, e.g. {refused[0]}"
        )
    return out


@dataclass
class ParsedList:
    entries: list[Entry]
    bad_lines: list[str] = field(default_factory=list)


def _read_list(path: str | Path, field_name: str, what: str, policy: ReadPolicy) -> str:
    """A list or labels file: inside the policy's list roots, a regular file, at most max_bytes."""
    try:
        real = paths.check_readable(path, policy.list_roots)
        return paths.read_text_bounded(real, policy.max_bytes)
    except PathRefused as exc:
        raise DatasetInputError(field_name, f"{what} {path} {exc}") from None
    except OSError as exc:
        raise DatasetInputError(field_name, f"cannot read {what} {path}: {exc.strerror or exc}") from None


def read_labels_file(
    path: str | Path, field_name: str = "textfile_labels_file", policy: ReadPolicy = UNRESTRICTED
) -> list[str]:
    """Line i (non-empty, stripped) is the name of label i."""
    text = _read_list(path, field_name, "labels file", policy)
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_textfile(
    list_path: str | Path,
    labels: list[str],
    prefix: str | Path = "",
    field_name: str = "textfile_train_images",
    policy: ReadPolicy = UNRESTRICTED,
) -> ParsedList:
    """Read a DIGITS image list: one `path label_index` per line.

    Relative paths are joined to prefix (or, without one, to the list file's folder). Every path
    is resolved (symlinks, `..`) and must lie inside policy.roots: a line outside them is refused
    with its line number, with the same words whether or not the file exists. Lines that do not
    parse, or whose label is not in labels, are skipped and reported the same way; a list with
    no usable line raises DatasetInputError on field_name.
    """
    text = _read_list(list_path, field_name, "list", policy)
    base = Path(prefix) if str(prefix) else Path(list_path).resolve().parent
    out = ParsedList([])
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            out.bad_lines.append(f"{list_path} line {number}: expected 'path label_index', got {line[:80]!r}")
            continue
        label = int(match.group(2))
        if label >= len(labels):
            out.bad_lines.append(
                f"{list_path} line {number}: label {label} is not in the labels file "
                f"({len(labels)} labels, 0..{len(labels) - 1})"
            )
            continue
        path = match.group(1).strip()
        try:
            real = paths.check_inside(os.path.join(base, path), policy.roots)
        except PathRefused:
            out.bad_lines.append(f"{list_path} line {number}: {path[:200]!r} {paths.OUTSIDE}; skipped")
            continue
        out.entries.append((str(real), label))
    if not out.entries:
        first = out.bad_lines[0] if out.bad_lines else f"{list_path} is empty"
        raise DatasetInputError(field_name, f"no usable lines; {first}")
    return out


@dataclass
class SourceLists:
    """What a spec resolves to: labels and the (path, label) entries of each split, in storage order."""

    labels: list[str]
    splits: dict[str, list[Entry]]
    dropped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def parse_info(self) -> dict:
        """The manifest's "parse" block; found counts the images kept, as DIGITS' "Found N images"."""
        return {
            "found": sum(len(v) for v in self.splits.values()),
            "categories": len(self.labels),
            "dropped": self.dropped,
            "warnings": self.warnings[:50],
        }


def _as_int(value: object, default: int) -> int:
    return default if value in (None, "") else int(str(value))


def _max(value: object) -> int | None:
    """A max-per-class setting: blank or 0 means no limit."""
    return _as_int(value, 0) or None


def _stratified(
    parsed: ParsedFolder, pct_val: int, pct_test: int, rng: np.random.Generator
) -> tuple[list[str], dict[str, list[Entry]], list[dict[str, str]]]:
    """Per-class shuffle and three-way split; classes too small for the requested splits are dropped."""
    required = sum(1 for p in (100 - pct_val - pct_test, pct_val, pct_test) if p > 0)
    labels: list[str] = []
    splits: dict[str, list[Entry]] = {s: [] for s in SPLITS}
    dropped: list[dict[str, str]] = []
    for name, images in zip(parsed.labels, parsed.images):
        if len(images) < required:
            dropped.append(
                {"label": name, "reason": f"{len(images)} images, fewer than the {required} splits requested"}
            )
            continue
        index = len(labels)
        labels.append(name)
        order = rng.permutation(len(images))
        a, b, _ = split_indices(len(images), pct_val, pct_test)
        for split, part in zip(SPLITS, (order[:a], order[a : a + b], order[a + b :])):
            splits[split].extend((images[i], index) for i in part)
    return labels, splits, dropped


def _from_folders(spec: DatasetSpec, policy: ReadPolicy) -> SourceLists:
    seed = _as_int(spec.seed, 0)
    pct_val = 0 if spec.has_val_folder else _as_int(spec.folder_pct_val, 0)
    pct_test = 0 if spec.has_test_folder else _as_int(spec.folder_pct_test, 0)
    train = parse_folder(
        spec.folder_train,
        _as_int(spec.folder_train_min_per_class, 1),
        _max(spec.folder_train_max_per_class),
        seed=seed,
        roots=policy.roots,
    )
    labels, splits, dropped = _stratified(train, pct_val, pct_test, np.random.default_rng(seed))
    dropped = train.dropped + dropped
    if len(labels) < 2:
        kept = f" ({', '.join(labels)})" if labels else ""
        raise DatasetInputError(
            "folder_train",
            f"found {len(labels)} usable classes{kept} in "
            f"{spec.folder_train}; need at least 2 sub-folders with at least "
            f"{_as_int(spec.folder_train_min_per_class, 1)} images each",
        )
    warnings = list(train.warnings)
    for split, use, folder, lo, hi in (
        ("val", spec.has_val_folder, spec.folder_val, spec.folder_val_min_per_class, spec.folder_val_max_per_class),
        (
            "test",
            spec.has_test_folder,
            spec.folder_test,
            spec.folder_test_min_per_class,
            spec.folder_test_max_per_class,
        ),
    ):
        if not use:
            continue
        extra = parse_folder(
            folder, _as_int(lo, 1), _max(hi), labels=labels, seed=seed, field_name=f"folder_{split}", roots=policy.roots
        )
        splits[split] = [(p, i) for i, paths in enumerate(extra.images) for p in paths]
        warnings += extra.warnings
        dropped += [{**d, "label": f"{d['label']} ({split} folder)"} for d in extra.dropped]
    return SourceLists(labels, splits, dropped, warnings)


def _from_textfiles(spec: DatasetSpec, policy: ReadPolicy) -> SourceLists:
    if not spec.textfile_labels_file:
        raise DatasetInputError("textfile_labels_file", "a labels file is required")
    labels = read_labels_file(spec.textfile_labels_file, policy=policy)
    if len(labels) < 2:
        raise DatasetInputError(
            "textfile_labels_file", f"{spec.textfile_labels_file} names {len(labels)} labels; need at least 2"
        )
    splits: dict[str, list[Entry]] = {s: [] for s in SPLITS}
    warnings: list[str] = []
    for split, use in (("train", True), ("val", spec.textfile_use_val), ("test", spec.textfile_use_test)):
        if not use:
            continue
        prefix = getattr(spec, f"textfile_{split}_folder") or ""
        if prefix:
            try:
                prefix = str(paths.check_readable(prefix, policy.roots, kind="dir"))
            except PathRefused as exc:
                raise DatasetInputError(f"textfile_{split}_folder", f"{prefix} {exc}") from None
        parsed = parse_textfile(
            getattr(spec, f"textfile_{split}_images"),
            labels,
            prefix,
            field_name=f"textfile_{split}_images",
            policy=policy,
        )
        splits[split] = parsed.entries
        warnings += parsed.bad_lines
    return SourceLists(labels, splits, [], warnings)


def collect_images(
    spec: DatasetSpec, log: Callable[[str], None] | None = None, policy: ReadPolicy = UNRESTRICTED
) -> SourceLists:
    """Resolve a spec into labels and per-split entries (shuffled with spec.seed, as DIGITS' create_db did).

    Every folder, list and entry is checked against `policy` (kiln.paths): inside its roots once
    symlinks are resolved; lists are regular files read up to its byte cap.
    """
    if spec.method not in ("folder", "textfile"):
        raise DatasetInputError("method", f"must be folder or textfile, not {spec.method!r}")
    result = _from_folders(spec, policy) if spec.method == "folder" else _from_textfiles(spec, policy)
    if spec.method == "folder" or spec.textfile_shuffle:
        rng = np.random.default_rng([_as_int(spec.seed, 0), 1])
        for split, entries in result.splits.items():
            result.splits[split] = [entries[i] for i in rng.permutation(len(entries))]
    if log is not None:
        for line in result.warnings[:100]:
            log(f"WARNING: {line}")
        for d in result.dropped:
            log(f'WARNING: Category "{d["label"]}" dropped: {d["reason"]}')
    return result
