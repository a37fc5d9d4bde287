"""Classify many: a `path [label]` list → top-5 per image, and accuracy + confusion matrix
when labels are given (DIGITS showed those in HTML only; kiln adds them to the JSON too)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiln import paths


@dataclass
class ManyReport:
    labels: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)  # path, truth, top5 | error
    skipped: list[str] = field(default_factory=list)  # lines that were not 'path [label]'

    @property
    def scored(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("truth") is not None and r.get("top5")]

    def accuracy(self, k: int) -> float | None:
        scored = self.scored
        if not scored:
            return None
        hits = sum(1 for r in scored if self.labels[r["truth"]] in [lab for lab, _ in r["top5"][:k]])
        return round(100.0 * hits / len(scored), 2)

    def confusion(self) -> list[list[int]]:
        """Rows = ground truth, columns = top-1 prediction."""
        n = len(self.labels)
        matrix = np.zeros((n, n), dtype=int)
        index = {lab: i for i, lab in enumerate(self.labels)}
        for r in self.scored:
            matrix[r["truth"], index[r["top5"][0][0]]] += 1
        return matrix.tolist()

    def per_class(self) -> list[dict[str, Any]]:
        return per_class_metrics(np.array(self.confusion()), self.labels)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"classifications": {r["path"]: r["top5"] for r in self.rows if r.get("top5")}}
        errors = {r["path"]: r["error"] for r in self.rows if r.get("error")}
        if errors:
            out["errors"] = errors
        if self.scored:
            out.update(
                top1_accuracy=self.accuracy(1),
                top5_accuracy=self.accuracy(5),
                confusion_matrix=self.confusion(),
                per_class=self.per_class(),
                labels=self.labels,
            )
        if self.skipped:
            out["skipped_lines"] = self.skipped
        return out


def per_class_metrics(matrix: np.ndarray, labels: list[str]) -> list[dict[str, Any]]:
    """Per class with examples: support, accuracy (= recall), precision and F1, in percent.
    ``matrix``: rows = ground truth, columns = top-1 prediction."""
    out = []
    for i, lab in enumerate(labels):
        support, predicted, tp = int(matrix[i].sum()), int(matrix[:, i].sum()), int(matrix[i, i])
        if not support:
            continue
        recall = tp / support
        precision = tp / predicted if predicted else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append(
            {
                "label": lab,
                "support": support,
                "accuracy": round(100 * recall, 2),
                "recall": round(100 * recall, 2),
                "precision": round(100 * precision, 2),
                "f1": round(100 * f1, 2),
            }
        )
    return out


def parse_list(
    text: str, folder: str | None, limit: int | None, labels: list[str]
) -> tuple[list[tuple[str, int | None]], list[str]]:
    """`path [label]` lines: the label an index (DIGITS) or a name (``img.png Trouser``); a label the
    model does not know is a skipped line that says so, never an unscored or misscored image."""
    from kiln.inference.sources import LabelIndex, list_lines, parse_line

    index = LabelIndex(labels)
    items, skipped = [], []
    for number, line in list_lines(text):
        try:
            path, truth = parse_line(line, index)
        except ValueError as exc:
            skipped.append(f"line {number}: {exc}")
            continue
        if folder and not Path(path).is_absolute():
            path = str(Path(folder) / path)
        items.append((path, truth))
        if limit and len(items) >= limit:
            break
    return items, skipped


# Images decoded and held at once, whatever the model's training batch size: a 60,000-image list
# (or a model trained with batch 10,000) costs the memory of one chunk, not of the whole list.
CHUNK = 256  # at most this many images,
CHUNK_VALUES = 1 << 24  # and at most this many input values (height x width x channels each)


def chunk_size(predictor: Any, most: int = CHUNK) -> int:
    """Images per chunk for this predictor's input size: CHUNK small images, fewer large ones."""
    p = getattr(predictor, "preprocess", None)
    values = int(p.height * p.width * p.channels) if p is not None else 1
    return max(1, min(most, CHUNK_VALUES // max(1, values)))


class ListTooLong(ValueError):
    """The list names more images than one request may classify."""


def classify_list(
    predictor: Any,
    text: str,
    folder: str | None = None,
    limit: int | None = None,
    max_images: int | None = None,
    chunk: int | None = None,
    roots: list[Path] | None = None,
    max_bytes: int = paths.DEFAULT_MAX_FILE_BYTES,
) -> ManyReport:
    """Top-5 of every image of a `path [label]` list, one bounded chunk at a time; raises ListTooLong
    when the list (after `limit`, DIGITS' num_test_images) names more than `max_images` images.

    Every path is resolved (symlinks, `..`) and must lie inside `roots` (None: anywhere); one that
    does not is an error row with the same words whether or not it exists. Files are read as
    Predictor.load says: regular files only, at most max_bytes each (no FIFO hang, no /dev/zero)."""
    stop = limit
    if max_images is not None:  # parse no further than one past the cap
        stop = min(limit, max_images + 1) if limit else max_images + 1
    items, skipped = parse_list(text, folder, stop, list(predictor.labels))
    if max_images is not None and len(items) > max_images:
        raise ListTooLong(
            f"image_list: more than {max_images} images; one request classifies at most {max_images} "
            f"(KILN_MAX_CLASSIFY_IMAGES). Split the list, or set num_test_images."
        )
    report = ManyReport(labels=list(predictor.labels), skipped=skipped)
    size = chunk or chunk_size(predictor)
    for start in range(0, len(items), size):
        part = items[start : start + size]
        refused: dict[int, str] = {}
        sources: list[str] = []
        for i, (path, _) in enumerate(part):
            try:
                sources.append(str(paths.check_inside(path, roots)))
            except paths.PathRefused as exc:  # outside the roots (or not a path at all)
                refused[i] = f"{path} {exc if roots is None else paths.OUTSIDE}"
        found = iter(predictor.classify(sources, batch_size=size, max_bytes=max_bytes) if sources else [])
        for i, (path, truth) in enumerate(part):
            row: dict[str, Any] = {"path": path, "truth": truth}
            result = None if i in refused else next(found)
            if result is None:
                row["error"] = refused[i]
            elif getattr(result, "error", None):
                row["error"] = result.error
            else:
                row["top5"] = [[lab, pct] for lab, pct in result]
            report.rows.append(row)
    return report
