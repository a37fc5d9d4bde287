"""What a dataset job is asked to build. Field names are DIGITS' form field names."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from kiln import paths


@dataclass
class DatasetSpec:
    dataset_name: str = ""
    group_name: str = ""
    method: str = "folder"  # folder | textfile
    resize_channels: int = 3  # 1 grey, 3 colour (RGB)
    resize_width: int = 256
    resize_height: int = 256
    resize_mode: str = "squash"  # squash | crop | fill | half_crop
    encoding: str = "none"  # none | png | jpg  (kiln default none: fastest to train from)
    add_inverted: bool = False  # also store 255 - x of every training image
    seed: int = 0  # split shuffling and fill noise
    # method = folder
    folder_train: str = ""
    folder_pct_val: int = 25
    folder_pct_test: int = 0
    folder_train_min_per_class: int = 2
    folder_train_max_per_class: int | None = None
    has_val_folder: bool = False
    folder_val: str = ""
    folder_val_min_per_class: int = 2
    folder_val_max_per_class: int | None = None
    has_test_folder: bool = False
    folder_test: str = ""
    folder_test_min_per_class: int = 2
    folder_test_max_per_class: int | None = None
    # method = textfile (server-side paths; uploads are saved into the job folder first)
    textfile_train_images: str = ""
    textfile_train_folder: str = ""
    textfile_use_val: bool = True  # DIGITS' default; when on, textfile_val_images is required
    textfile_val_images: str = ""
    textfile_val_folder: str = ""
    textfile_use_test: bool = False
    textfile_test_images: str = ""
    textfile_test_folder: str = ""
    textfile_labels_file: str = ""
    textfile_shuffle: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetSpec:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


# ---------------------------------------------------------------- validation (cheap checks only)

MAX_SIDE = 4096
MAX_PER_CLASS = 100_000_000  # images per class and split: more than any folder holds, still a finite bound
MAX_SEED = 2**32 - 1  # what NumPy's and PyTorch's generators accept everywhere
# Implemented by kiln.datasets.images (resize, encode); labels are what forms show.
RESIZE_MODES = {"squash": "Squash", "crop": "Crop", "fill": "Fill", "half_crop": "Half crop, half fill"}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")
ENCODINGS = {"none": "None (raw, fastest to train)", "png": "PNG (lossless)", "jpg": "JPEG (lossy, 90% quality)"}
METHODS = ("folder", "textfile")
ROOTS_SETTING = paths.ROOTS_SETTING


class _Errors(dict):
    def add(self, field_name: str, message: str) -> None:
        self.setdefault(field_name, []).append(message)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _check_int(
    errors: _Errors, spec: DatasetSpec, name: str, lo: int, hi: int | None, label: str, blank: int | None = None
) -> int | None:
    raw = getattr(spec, name)
    if raw in (None, "") and blank is not None:
        return blank
    value = _int_or_none(raw)
    if value is None:
        errors.add(name, f"{label} must be a whole number (got {raw!r})")
    elif value < lo or (hi is not None and value > hi):
        errors.add(
            name, f"{label} must be {'at least ' + str(lo) if hi is None else f'between {lo} and {hi}'} (got {value})"
        )
    else:
        return value
    return None


def _check_path(
    errors: _Errors, spec: DatasetSpec, name: str, label: str, kind: str, roots: list[Path] | None
) -> Path | None:
    """A required server path: inside the allowed roots first (so nothing outside is probed), then exists."""
    raw = str(getattr(spec, name) or "").strip()
    if not raw:
        errors.add(name, f"{label} is required")
        return None
    path = Path(raw).expanduser()
    if not path.is_absolute():
        errors.add(name, f"{label} must be an absolute path on the server (got {raw!r})")
        return None
    try:  # kiln.paths: the one rule for user-given paths (roots after symlinks, regular files only)
        return paths.check_readable(path, roots, kind)
    except paths.PathRefused as exc:
        errors.add(name, f"{raw} {exc}")
        return None


def _has_image(folder: str, budget: list[int]) -> bool:
    """True once any image file is found below folder; budget caps directory reads (a quick scan)."""
    stack = [folder]
    while stack and budget[0] > 0:
        budget[0] -= 1
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=True):
                        stack.append(entry.path)
                    elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                        return True
        except OSError:
            continue
    return False


def _check_class_folders(errors: _Errors, name: str, folder: Path) -> None:
    try:
        with os.scandir(folder) as it:
            subdirs = sorted(e.path for e in it if not e.name.startswith(".") and e.is_dir(follow_symlinks=True))
    except OSError as exc:
        errors.add(name, f"cannot read {folder}: {exc.strerror or exc}")
        return
    budget = [2000]
    with_images = sum(1 for d in subdirs if _has_image(d, budget))
    if with_images < 2:
        errors.add(
            name,
            f"{folder} must contain at least 2 class sub-folders with images "
            f"(.png .jpg .jpeg .bmp .ppm .pgm); found {len(subdirs)} sub-folders, "
            f"{with_images} with images",
        )


def _check_folder_method(errors: _Errors, spec: DatasetSpec, roots: list[Path] | None) -> None:
    train = _check_path(errors, spec, "folder_train", "Training images folder", "dir", roots)
    if train is not None:
        _check_class_folders(errors, "folder_train", train)
    pct = {}
    for name, label in (("folder_pct_val", "% for validation"), ("folder_pct_test", "% for testing")):
        pct[name] = _check_int(errors, spec, name, 0, 100, label, blank=0)
    val = 0 if spec.has_val_folder else pct["folder_pct_val"]
    test = 0 if spec.has_test_folder else pct["folder_pct_test"]
    if val is not None and test is not None:
        if val + test > 100:
            errors.add("folder_pct_val", f"% for validation plus % for testing is {val + test}; it must not exceed 100")
        elif val + test == 100:
            errors.add(
                "folder_pct_val", "% for validation plus % for testing is 100, which leaves no images for training"
            )
    for split, use in (("train", True), ("val", spec.has_val_folder), ("test", spec.has_test_folder)):
        if not use:
            continue
        if split != "train":
            _check_path(errors, spec, f"folder_{split}", f"{split.capitalize()} images folder", "dir", roots)
        lo = _check_int(
            errors, spec, f"folder_{split}_min_per_class", 1, MAX_PER_CLASS, "Minimum samples per class", blank=1
        )
        hi = _check_int(
            errors, spec, f"folder_{split}_max_per_class", 1, MAX_PER_CLASS, "Maximum samples per class", blank=0
        )
        if lo is not None and hi and hi < lo:
            errors.add(
                f"folder_{split}_max_per_class", f"Maximum samples per class ({hi}) must be at least the minimum ({lo})"
            )


def _check_textfile_method(errors: _Errors, spec: DatasetSpec, roots: list[Path] | None) -> None:
    _check_path(errors, spec, "textfile_labels_file", "Labels file", "file", roots)
    for split, use in (("train", True), ("val", spec.textfile_use_val), ("test", spec.textfile_use_test)):
        if not use:
            continue
        _check_path(errors, spec, f"textfile_{split}_images", f"{split.capitalize()} image list", "file", roots)
        if str(getattr(spec, f"textfile_{split}_folder") or "").strip():
            _check_path(errors, spec, f"textfile_{split}_folder", f"{split.capitalize()} image folder", "dir", roots)


def validate_spec(spec: DatasetSpec, allowed_roots: list[Path] | None) -> dict[str, list[str]]:
    """Per-field error messages for a dataset spec ({} when it looks buildable).

    Cheap checks only: values, choices, paths (inside allowed_roots when given, symlinks
    resolved) and, for method=folder, a quick look for at least 2 class sub-folders with images.
    """
    errors = _Errors()
    if allowed_roots is not None:
        allowed_roots = [paths.resolve(r) for r in allowed_roots]
    if not str(spec.dataset_name or "").strip():
        errors.add("dataset_name", "A dataset name is required")
    for name, label in (("resize_width", "Width"), ("resize_height", "Height")):
        _check_int(errors, spec, name, 1, MAX_SIDE, label)
    _check_int(errors, spec, "seed", 0, MAX_SEED, "Seed", blank=0)
    if _int_or_none(spec.resize_channels) not in (1, 3):
        errors.add("resize_channels", f"Image type must be 1 (grayscale) or 3 (color), not {spec.resize_channels!r}")
    for name, choices in (("resize_mode", RESIZE_MODES), ("encoding", ENCODINGS), ("method", METHODS)):
        if getattr(spec, name) not in choices:
            errors.add(name, f"must be one of {', '.join(choices)}, not {getattr(spec, name)!r}")
    if spec.method == "folder":
        _check_folder_method(errors, spec, allowed_roots)
    elif spec.method == "textfile":
        _check_textfile_method(errors, spec, allowed_roots)
    return dict(errors)
