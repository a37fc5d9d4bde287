"""What an evaluation reads: a dataset split, a `path [label]` list, or a folder of class folders.

Each source yields :class:`Item`s in order; ground truth is a label index (DIGITS' lists) or a
label name (what people type: ``img.png Trouser``, or a class folder's name). A label the model
does not know is reported on its line, never scored silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kiln import paths
from kiln.datasets.images import IMAGE_EXTENSIONS

LINE = re.compile(r"^(?P<path>.+?)(?:\s+(?P<label>\S+))?\s*$")


@dataclass(frozen=True)
class Item:
    source: str | int  # a file path, or an index into a dataset split
    truth: int | None  # the label index, None when there is no ground truth
    name: str  # what pages show: the path, or "<split> #<index>"
    line: int = 0  # the list's line (1-based), 0 for other sources


class LabelIndex:
    """Label names → index, as users write them: exact, or with "_" for spaces, any case."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self._by_name: dict[str, int] = {}
        for i, name in enumerate(labels):
            for key in (name, name.replace(" ", "_"), name.replace("_", " ")):
                self._by_name.setdefault(key.casefold(), i)

    def find(self, text: str) -> int | None:
        """The index of ``text`` (a number in range or a known name); None when it matches nothing."""
        if re.fullmatch(r"-?\d+", text):
            number = int(text)
            return number if 0 <= number < len(self.labels) else None
        return self._by_name.get(text.casefold())


def parse_line(line: str, index: LabelIndex) -> tuple[str, int | None]:
    """``path [label]`` → (path, label index or None); ValueError naming a label the model does not know."""
    match = LINE.match(line)
    assert match is not None  # any non-empty line matches
    path, label = match["path"].strip(), match["label"]
    if label is not None and label.lower().endswith(IMAGE_EXTENSIONS):
        return line, None  # "my image.png": a name with a space, no label
    truth = None if label is None else index.find(label)
    if label is not None and truth is None:
        raise ValueError(unknown_label(label, index.labels))
    return path, truth


def list_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, stripped line) of a list's lines, without blanks and # comments."""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            yield number, line


def list_items(
    text: str, folder: str | None, labels: list[str], roots: list[Path] | None
) -> tuple[list[Item], list[dict[str, object]]]:
    """The images of a `path [label]` list, and the lines that cannot be used (``{"line", "path", "error"}``)."""
    index = LabelIndex(labels)
    items: list[Item] = []
    problems: list[dict[str, object]] = []
    for number, line in list_lines(text):
        try:
            shown, truth = parse_line(line, index)
        except ValueError as exc:
            problems.append({"line": number, "path": line, "error": str(exc)})
            continue
        path = str(Path(folder) / shown) if folder and not Path(shown).is_absolute() else shown
        try:
            path = str(paths.check_inside(path, roots))
        except paths.PathRefused as exc:
            problems.append({"line": number, "path": shown, "error": f"{exc if roots is None else paths.OUTSIDE}"})
            continue
        items.append(Item(path, truth, shown, number))
    return items, problems


def unknown_label(label: str, labels: list[str]) -> str:
    if re.fullmatch(r"-?\d+", label):
        return f"label {label} is out of range: the model has {len(labels)} classes (0 to {len(labels) - 1})"
    shown = ", ".join(labels[:12]) + (", ..." if len(labels) > 12 else "")
    return f"label {label!r} is not one of the model's classes ({shown})"


def folder_items(folder: Path, labels: list[str]) -> tuple[list[Item], list[dict[str, object]]]:
    """Images under class folders named like the model's labels (``hot_dog`` for "hot dog")."""
    index = LabelIndex(labels)
    items: list[Item] = []
    problems: list[dict[str, object]] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink()):
        truth = index.find(sub.name)
        if truth is None:
            problems.append({"line": 0, "path": sub.name + "/", "error": unknown_label(sub.name, labels)})
            continue
        for path in sorted(sub.rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file() and not path.is_symlink():
                items.append(Item(str(path), truth, str(path.relative_to(folder))))
    if not items and not problems:
        problems.append({"line": 0, "path": str(folder), "error": "no class folders with images in it"})
    return items, problems


def split_items(targets: Iterable[int], split: str) -> list[Item]:
    """Every entry of a dataset split (its stored label is the truth)."""
    return [Item(i, int(truth), f"{split} #{i}") for i, truth in enumerate(targets)]
