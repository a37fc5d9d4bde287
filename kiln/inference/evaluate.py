"""Evaluate a model on many images at constant memory: a job with progress, abortable.

One chunk of images is decoded and classified at a time; what every image got is streamed to
files in the evaluation's folder, and only counters and small rankings stay in memory:

- ``evaluation.json``: top-1/top-5 accuracy, confusion matrix, per-class precision/recall/F1,
  the worst images (highest loss), the top-N images per class, suspected label errors
  (cleanlab), and the lines that could not be used;
- ``classifications.csv``: every image's truth and top-5;
- ``truth.npy``, ``pred.npy``, ``probs.npy``, ``names.txt`` (shown), ``sources.txt`` (path or
  split index): per image, for the confusion matrix's cells and the image links.
Every file appears whole (written, then renamed).
"""

from __future__ import annotations

import csv
import heapq
import warnings
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kiln import paths
from kiln.atomic import atomic_path, atomic_write_json, atomic_write_text
from kiln.inference.many import chunk_size, per_class_metrics
from kiln.inference.sources import Item
from kiln.reporting import Reporter, Stopped

TOP_N = 9  # DIGITS' top_n default
WORST = 50
LABEL_ISSUES = 50
RESULT = "evaluation.json"


class Tally:
    """Counters and small rankings over the images seen so far."""

    def __init__(self, labels: list[str]) -> None:
        n = len(labels)
        self.labels = labels
        self.confusion = np.zeros((n, n), dtype=np.int64)
        self.top5_hits = 0
        self.truth = array("q")  # -1: no ground truth; -2: not read
        self.pred = array("q")
        self.worst: list[tuple[float, int]] = []  # min-heap of (loss, position)
        self.top: list[list[tuple[float, int]]] = [[] for _ in range(n)]  # per class: (prob, position)

    def score(self, positions: np.ndarray, truths: np.ndarray, probs: np.ndarray, top5: np.ndarray) -> None:
        """Counters and rankings of the read images of one chunk; ``truths`` -1 where there is none."""
        known = truths >= 0
        t, p, rows = truths[known], top5[known, 0], probs[known]
        np.add.at(self.confusion, (t, p), 1)
        self.top5_hits += int((top5[known] == t[:, None]).any(1).sum())
        if len(t):
            loss = -np.log(np.maximum(rows[np.arange(len(t)), t], 1e-12))
            for j in np.argsort(-loss, kind="stable")[:WORST]:
                _keep(self.worst, (float(loss[j]), int(positions[known][j])), WORST)
        k = min(TOP_N, len(probs))
        for c in range(len(self.labels)):  # the images each class is surest of
            column = probs[:, c]
            for j in np.argpartition(-column, k - 1)[:k] if k else ():
                _keep(self.top[c], (float(column[j]), int(positions[j])), TOP_N)

    @property
    def scored(self) -> int:
        return int(self.confusion.sum())


def _keep(heap: list[tuple[float, int]], entry: tuple[float, int], size: int) -> None:
    if len(heap) < size:
        heapq.heappush(heap, entry)
    elif entry > heap[0]:
        heapq.heapreplace(heap, entry)


def evaluate(
    predictor: Any,
    items: Sequence[Item],
    out_dir: Path,
    report: Reporter,
    *,
    stored: Any = None,
    problems: list[dict[str, Any]] | None = None,
    max_bytes: int = paths.DEFAULT_MAX_FILE_BYTES,
) -> dict[str, Any]:
    """Classify ``items`` (paths, or indices into ``stored``: a split's uint8 NHWC images) and
    write the files above into ``out_dir``; returns the summary (evaluation.json without lists)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = list(predictor.labels)
    tally = Tally(labels)
    errors = list(problems or [])
    size = chunk_size(predictor)
    probs_path = out_dir / "probs.f32"
    with atomic_path(out_dir / "classifications.csv") as csv_tmp, open(csv_tmp, "w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["image", "truth", *[f"top{k}" for k in range(1, 6)], *[f"top{k}_percent" for k in range(1, 6)]])
        with open(probs_path, "wb") as probs_file:
            for start in range(0, len(items), size):
                if report.should_stop():
                    raise Stopped()
                chunk = items[start : start + size]
                batch, ok, failed = _load(predictor, chunk, stored, max_bytes)
                probs = predictor.probabilities(batch) if len(batch) else np.zeros((0, len(labels)), np.float32)
                _record(tally, rows, probs_file, chunk, start, ok, failed, probs, errors, labels)
                done = min(len(items), start + size)
                report.progress(done / max(1, len(items)), f"{done} of {len(items)} images")
    summary = _results(tally, items, errors, probs_path, out_dir)
    report.log(_describe(summary))
    return summary


def _load(
    predictor: Any, chunk: Sequence[Item], stored: Any, max_bytes: int
) -> tuple[np.ndarray, list[int], dict[int, str]]:
    if stored is not None:
        index = np.array([int(it.source) for it in chunk], dtype=np.int64)
        return np.asarray(stored[index]), list(range(len(chunk))), {}
    return predictor.load([str(it.source) for it in chunk], max_bytes)


def _record(
    tally: Tally,
    rows: Any,
    probs_file: Any,
    chunk: Sequence[Item],
    start: int,
    ok: list[int],
    failed: dict[int, str],
    probs: np.ndarray,
    errors: list[dict[str, Any]],
    labels: list[str],
) -> None:
    """Counters, csv rows and per-image probabilities of one chunk, in the items' order (vectorised:
    the per-image cost is what decides evaluation speed for small networks)."""
    every = np.full((len(chunk), len(labels)), np.nan, np.float32)
    every[ok] = probs
    probs_file.write(every.tobytes())
    top5 = np.argsort(-probs, axis=1, kind="stable")[:, :5]
    truths = np.array([-1 if chunk[i].truth is None else chunk[i].truth for i in ok], dtype=np.int64)
    preds = np.full(len(chunk), -1, np.int64)
    marks = np.full(len(chunk), -2, np.int64)  # -2: not read
    preds[ok], marks[ok] = top5[:, 0] if len(ok) else [], truths
    tally.truth.extend(marks.tolist())
    tally.pred.extend(preds.tolist())
    percents = (100 * np.take_along_axis(probs, top5, 1)).tolist()
    names = ["" if t < 0 else labels[t] for t in truths.tolist()]
    rows.writerows(
        [chunk[i].name, truth, *[labels[j] for j in best], *[f"{v:.2f}" for v in pct]]
        for i, truth, best, pct in zip(ok, names, top5.tolist(), percents)
    )
    for i in sorted(failed):
        errors.append({"line": chunk[i].line, "path": chunk[i].name, "error": failed[i]})
    tally.score(np.asarray(ok, np.int64) + start, truths, probs, top5)


def _results(
    tally: Tally, items: Sequence[Item], errors: list[dict[str, Any]], probs_path: Path, out_dir: Path
) -> dict[str, Any]:
    """evaluation.json and the per-image arrays; returns the summary (no per-image lists)."""
    n, labels = len(items), tally.labels
    probs = np.fromfile(probs_path, dtype=np.float32).reshape(n, len(labels)) if n else np.zeros((0, len(labels)))
    truth, pred = np.asarray(tally.truth, np.int64), np.asarray(tally.pred, np.int64)
    for name, arr in (("truth", truth), ("pred", pred), ("probs", probs)):
        with atomic_path(out_dir / f"{name}.npy") as tmp, open(tmp, "wb") as f:  # a name would get ".npy" added
            np.save(f, arr, allow_pickle=False)
    probs_path.unlink(missing_ok=True)
    for name, field in (("names.txt", "name"), ("sources.txt", "source")):  # for the pages' image links
        atomic_write_text(out_dir / name, "".join(str(getattr(it, field)).replace("\n", " ") + "\n" for it in items))
    scored = tally.scored
    summary: dict[str, Any] = {
        "images": n,
        "scored": scored,
        "errors_count": len(errors),
        "top1_accuracy": round(100.0 * float(np.trace(tally.confusion)) / scored, 2) if scored else None,
        "top5_accuracy": round(100.0 * tally.top5_hits / scored, 2) if scored else None,
    }
    full = {
        **summary,
        "labels": labels,
        "confusion_matrix": tally.confusion.tolist(),
        "per_class": per_class_metrics(tally.confusion, labels),
        "worst": [
            _entry(pos, items, labels, truth, pred, probs, loss=loss) for loss, pos in sorted(tally.worst, reverse=True)
        ],
        "top_n": {
            labels[c]: [
                _entry(pos, items, labels, truth, pred, probs, class_percent=100 * p)
                for p, pos in sorted(heap, reverse=True)
            ]
            for c, heap in enumerate(tally.top)
        },
        "label_issues": label_issues(truth, probs, items, labels, pred),
        "errors": errors,
    }
    atomic_write_json(out_dir / RESULT, full)
    return summary


def _entry(
    pos: int,
    items: Sequence[Item],
    labels: list[str],
    truth: np.ndarray,
    pred: np.ndarray,
    probs: np.ndarray,
    **extra: float,
) -> dict[str, Any]:
    t = int(truth[pos])
    out = {
        "index": pos,
        "image": items[pos].name,
        "truth": labels[t] if t >= 0 else None,
        "predicted": labels[int(pred[pos])],
        "confidence": round(100.0 * float(probs[pos, int(pred[pos])]), 2),
    }
    out.update({k: round(v, 4) for k, v in extra.items()})
    return out


def label_issues(
    truth: np.ndarray, probs: np.ndarray, items: Sequence[Item], labels: list[str], pred: np.ndarray
) -> list[dict[str, Any]]:
    """Suspected label errors among the scored images, ranked by cleanlab's self-confidence score."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    keep = np.flatnonzero(truth >= 0)
    if len(keep) < 2 or len(set(truth[keep].tolist())) < 2:
        return []
    given, pred_probs = truth[keep], probs[keep].astype(np.float64)
    pred_probs = pred_probs / pred_probs.sum(1, keepdims=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "too few examples of class k": expected on small sets
            # n_jobs=1: cleanlab's default forks a pool, which deadlocks after torch has started its threads
            ranked = find_label_issues(given, pred_probs, return_indices_ranked_by="self_confidence", n_jobs=1)
            scores = get_label_quality_scores(given, pred_probs, method="self_confidence")
    except (ValueError, IndexError):  # too few examples of a class for confident learning
        return []
    return [
        _entry(int(keep[j]), items, labels, truth, pred, probs, label_quality=float(scores[j]))
        for j in ranked[:LABEL_ISSUES]
    ]


def _describe(summary: dict[str, Any]) -> str:
    text = f"Evaluated {summary['images']} images"
    if summary["scored"]:
        text += f": top-1 {summary['top1_accuracy']:.2f} %, top-5 {summary['top5_accuracy']:.2f} % on {summary['scored']} with labels"
    if summary["errors_count"]:
        text += f"; {summary['errors_count']} could not be used (see the errors)"
    return text + "."
