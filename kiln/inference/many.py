"""Classify many: a `path [label]` list → top-5 per image, and accuracy + confusion matrix
when labels are given (DIGITS showed those in HTML only; kiln adds them to the JSON too)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

LINE = re.compile(r"^(.+?)(?:\s+(-?\d+))?\s*$")


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
        """Accuracy (= recall), precision and F1 per class, for classes with examples."""
        m = np.array(self.confusion())
        out = []
        for i, lab in enumerate(self.labels):
            support, predicted, tp = int(m[i].sum()), int(m[:, i].sum()), int(m[i, i])
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
                    "precision": round(100 * precision, 2),
                    "f1": round(100 * f1, 2),
                }
            )
        return out

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


def parse_list(
    text: str, folder: str | None, limit: int | None, n_labels: int
) -> tuple[list[tuple[str, int | None]], list[str]]:
    items, skipped = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            skipped.append(f"line {number}: {line}")
            continue
        path, label = m.group(1).strip(), m.group(2)
        if folder and not Path(path).is_absolute():
            path = str(Path(folder) / path)
        truth = int(label) if label is not None and 0 <= int(label) < n_labels else None  # others: no ground truth
        items.append((path, truth))
        if limit and len(items) >= limit:
            break
    return items, skipped


def classify_list(predictor: Any, text: str, folder: str | None = None, limit: int | None = None) -> ManyReport:
    items, skipped = parse_list(text, folder, limit, len(predictor.labels))
    report = ManyReport(labels=list(predictor.labels), skipped=skipped)
    results = predictor.classify([p for p, _ in items]) if items else []
    for (path, truth), result in zip(items, results):
        row: dict[str, Any] = {"path": path, "truth": truth}
        if getattr(result, "error", None):
            row["error"] = result.error
        else:
            row["top5"] = [[lab, pct] for lab, pct in result]
        report.rows.append(row)
    return report
