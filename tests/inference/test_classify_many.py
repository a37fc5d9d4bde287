"""Classify many through the API: every number checked against values computed here.

The ground truths of the list are chosen from the predictor's own ranking of each image, so the
report has top-1 hits, top-5-only hits and top-5 misses whatever the trained weights are; the
expected accuracies, confusion matrix and per-class precision/recall/F1 are then computed in this
test with numpy from the predictor's top-5, independently of kiln.inference.many.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.inference.predictor import Predictor
from tests.conftest import Kiln, copy_data_dir, write_class_folder

CLASSES = ["c0", "c1", "c2", "c3", "c4", "c5"]  # six: a truth ranked sixth is a top-5 miss
URL = "/models/images/classification/classify_many"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A dataset of six classes and a LeNet trained on it for one epoch, in this process."""
    root = tmp_path_factory.mktemp("many")
    folder = write_class_folder(root / "imgs", {c: 10 for c in CLASSES}, size=(28, 28))
    kiln = Kiln(root / "data")
    try:
        dataset_id = kiln.built_dataset(folder, "six")
        res = kiln.client.post(
            "/models/images/classification.json",
            data={
                "dataset": dataset_id,
                "model_name": "six",
                "standard_networks": "lenet",
                "train_epochs": "1",
                "learning_rate": "0.01",
                "random_seed": "1",
                "device": "cpu",
            },
        )
        model_id = res.json()["id"]
        assert kiln.run(model_id) == "Done"
    finally:
        kiln.close()
    return {"data": root / "data", "folder": folder, "model_id": model_id}


@pytest.fixture
def kiln(template: dict[str, Any], tmp_path: Path) -> Iterator[Kiln]:
    app = Kiln(copy_data_dir(template["data"], tmp_path / "data"))
    yield app
    app.close()


@pytest.fixture
def case(template: dict[str, Any], kiln: Kiln) -> dict[str, Any]:
    """The uploaded list and what it must give."""
    folder: Path = template["folder"]
    predictor = Predictor.from_job_dir(kiln.settings.jobs_dir / template["model_id"])
    assert predictor.labels == CLASSES
    relative = [f"{c}/{i:04d}.png" for c in CLASSES for i in (0, 1)]  # 12 images
    tops = predictor.classify([str(folder / p) for p in relative])
    ranks = [[CLASSES.index(label) for label, _ in top] for top in tops]
    # the truth is the class ranked 1st (top-1 hit), 3rd (top-5 hit only) or 6th (a top-5 miss)
    full = [r + [c for c in range(len(CLASSES)) if c not in r] for r in ranks]
    truths = [full[i][[0, 0, 2, 5][i % 4]] for i in range(len(relative))]

    lines = ["# a comment, then a blank line", ""]
    lines += [f"{p} {t}" for p, t in zip(relative, truths)]
    absolute = str(folder / "c3" / "0005.png")  # absolute: no prefix
    lines += [f"{absolute} 3", "missing/0000.png 1", "c0/0002.png 99", "c1/0002.png"]  # error, bad label, no truth
    limit = len(lines) - 3  # images counted: not comments, not the line whose label the model lacks
    lines += ["c2/0003.png 5", "c4/0003.png 0"]  # past num_test_images
    scored_paths = [str(folder / p) for p in relative] + [absolute]
    top_abs = predictor.classify([absolute])[0]
    scored_tops = tops + [top_abs]
    scored_truths = truths + [3]
    unscored = {str(folder / "c1" / "0002.png")}
    return {
        "text": "\n".join(lines) + "\n",
        "limit": limit,
        "folder": folder,
        "model_id": template["model_id"],
        "paths": scored_paths,
        "tops": scored_tops,
        "truths": scored_truths,
        "unscored": unscored,
        "missing": str(folder / "missing" / "0000.png"),
        "unscored_tops": dict(zip(sorted(unscored), predictor.classify(sorted(unscored)))),
    }


def expected(case: dict[str, Any]) -> dict[str, Any]:
    """The report's numbers, computed from the predictor's top-5 with numpy."""
    n = len(CLASSES)
    truth = np.array(case["truths"])
    top5 = np.array([[CLASSES.index(label) for label, _ in top] for top in case["tops"]])
    top1 = top5[:, 0]
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (truth, top1), 1)
    support, predicted, tp = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=precision + recall > 0)
    per_class = [
        {
            "label": CLASSES[i],
            "support": int(support[i]),
            "accuracy": 100 * recall[i],
            "precision": 100 * precision[i],
            "f1": 100 * f1[i],
        }
        for i in range(n)
        if support[i]
    ]
    return {
        "top1": 100 * np.mean(top1 == truth),
        "top5": 100 * np.mean((top5 == truth[:, None]).any(1)),
        "confusion": confusion,
        "per_class": per_class,
    }


def post(kiln: Kiln, case: dict[str, Any], url: str, **fields: str):
    data = {
        "job_id": case["model_id"],
        "image_folder": str(case["folder"]),
        "num_test_images": str(case["limit"]),
        **fields,
    }
    return kiln.client.post(url, data=data, files={"image_list": ("list.txt", case["text"].encode())})


def test_the_json_numbers_match_a_hand_computation(kiln: Kiln, case: dict[str, Any]) -> None:
    want = expected(case)
    assert 0 < want["top1"] < want["top5"] < 100  # the list really has all three kinds of line
    res = post(kiln, case, URL + ".json")
    assert res.status_code == 200, res.text
    got = res.json()
    assert got["labels"] == CLASSES
    assert set(got["classifications"]) == set(case["paths"]) | case["unscored"]  # image_folder, limit
    for path, top in zip(case["paths"], case["tops"]):
        assert got["classifications"][path] == [list(p) for p in top]
    for path, top in case["unscored_tops"].items():
        assert got["classifications"][path] == [list(p) for p in top]
    assert list(got["errors"]) == [case["missing"]]
    # a label the model cannot have is reported by line, not scored or silently dropped (issue 9)
    assert got["skipped_lines"] == ["line 17: label 99 is out of range: the model has 6 classes (0 to 5)"]
    assert got["top1_accuracy"] == pytest.approx(want["top1"], abs=0.005)
    assert got["top5_accuracy"] == pytest.approx(want["top5"], abs=0.005)
    assert got["confusion_matrix"] == want["confusion"].tolist()
    assert [c["label"] for c in got["per_class"]] == [c["label"] for c in want["per_class"]]
    for mine, theirs in zip(want["per_class"], got["per_class"]):
        assert theirs["support"] == mine["support"]
        for key in ("accuracy", "precision", "f1"):
            assert theirs[key] == pytest.approx(mine[key], abs=0.005), (mine["label"], key)


def test_without_a_limit_every_line_counts(kiln: Kiln, case: dict[str, Any]) -> None:
    got = post(kiln, case, URL + ".json", num_test_images="").json()
    assert str(case["folder"] / "c2" / "0003.png") in got["classifications"]
    assert sum(map(sum, got["confusion_matrix"])) == len(case["paths"]) + 2


def test_list_errors(kiln: Kiln, case: dict[str, Any]) -> None:
    res = post(kiln, case, URL + ".json", image_folder=str(case["folder"] / "nope"))
    assert res.status_code == 400 and "image_folder" in res.json()["error"]["message"]
    res = post(kiln, case, URL + ".json", num_test_images="many")
    assert res.status_code == 400 and "num_test_images" in res.json()["error"]["message"]
    unlabelled = kiln.client.post(
        URL + ".json",
        data={"job_id": case["model_id"]},
        files={"image_list": ("l.txt", str(case["paths"][0]).encode())},
    ).json()
    assert list(unlabelled["classifications"]) == [case["paths"][0]]
    assert "top1_accuracy" not in unlabelled and "confusion_matrix" not in unlabelled  # no labels, no scores


class Tables(HTMLParser):
    """The text of every table cell, per table id (anonymous tables numbered), and <b id=...> texts."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.bold: dict[str, str] = {}
        self._cell: list[str] | None = None
        self._bold: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables.append((a.get("id") or str(len(self.tables)), []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "b" and a.get("id"):
            self._bold = a["id"]
            self.bold[self._bold] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "b":
            self._bold = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._bold:
            self.bold[self._bold] += data


def pct(text: str) -> float:
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)%", text.strip())
    assert m, text
    return float(m.group(1))


def test_the_html_page_shows_the_same_numbers(kiln: Kiln, case: dict[str, Any]) -> None:
    want = expected(case)
    res = post(kiln, case, URL)
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    page = Tables()
    page.feed(res.text)
    assert pct(page.bold["top1"]) == pytest.approx(want["top1"], abs=0.005)
    assert pct(page.bold["top5"]) == pytest.approx(want["top5"], abs=0.005)
    assert f"over {len(case['paths'])} labelled images" in res.text
    tables = dict(page.tables)
    header, *rows = tables["confusion"]
    assert header[1:-1] == CLASSES
    shown = {r[0]: r for r in rows}
    for i, label in enumerate(CLASSES):
        if not want["confusion"][i].sum():
            assert label not in shown
            continue
        assert [int(c) for c in shown[label][1:-1]] == want["confusion"][i].tolist()
        assert pct(shown[label][-1]) == pytest.approx(
            100 * want["confusion"][i, i] / want["confusion"][i].sum(), abs=0.005
        )
    per_class = next(t for _, t in page.tables if t and t[0][:2] == ["class", "images"])
    assert [r[0] for r in per_class[1:]] == [c["label"] for c in want["per_class"]]
    for row, mine in zip(per_class[1:], want["per_class"]):
        assert int(row[1]) == mine["support"]
        assert [pct(v) for v in row[2:5]] == pytest.approx([mine["accuracy"], mine["precision"], mine["f1"]], abs=0.005)
    listed = next(t for _, t in page.tables if t and t[0][:2] == ["#", "path"])
    assert len(listed) - 1 == len(case["paths"]) + len(case["unscored"]) + 1  # + the missing file
    assert any(case["missing"] in r[1] and r[3] for r in listed[1:])  # its error is shown
