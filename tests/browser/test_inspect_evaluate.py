"""Issue 9 in a real browser: classify one uploaded image with its visualizations and Grad-CAM, then
evaluate the val split, open a confusion-matrix cell and see exactly its images, which load."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from .conftest import Server

pytestmark = pytest.mark.browser

CLASSES = {"circle": 12, "square": 12, "stripe": 12}  # 36 grey 28x28 training images: 2 epochs take seconds
VAL = {"circle": 6, "square": 4, "stripe": 4}  # the val folder, before two circles move into square/
MISLABELLED = 2  # circles filed under square/ in the val folder: the model calls them circle
LENET_LAYERS = ["conv1", "pool1", "conv2", "pool2", "ip1", "ip2"]  # in order; others may sit between
LENET_PARAMS = {"conv1": 520, "conv2": 25_050, "ip1": 400_500, "ip2": 1_503}  # for 1x28x28 in, 3 classes out
CELL_IMAGES = 200  # a cell lists at most this many images


def expect(*args: Any, **kw: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(*args, **kw)


def val_folder(make_folder: Callable[..., Path]) -> Path:
    """Fresh images of each class (another seed), with the last circles filed under square/."""
    folder = make_folder(VAL, size=(28, 28), seed=1)
    for i in range(MISLABELLED):
        n = VAL["circle"] - 1 - i
        (folder / "circle" / f"{n:04d}.png").rename(folder / "square" / f"mislabelled_{n:04d}.png")
    return folder


def api_dataset(server: Server, train: Path, val: Path, name: str) -> dict[str, Any]:
    res = server.client.post(
        "/datasets/images/classification.json",
        data={
            "dataset_name": name,
            "folder_train": str(train),
            "has_val_folder": "1",
            "folder_val": str(val),
            "folder_val_min_per_class": "1",
            "resize_channels": "1",
            "resize_width": "28",
            "resize_height": "28",
        },
    )
    assert res.status_code == 200, res.text
    job_id = res.json()["id"]
    assert server.wait_job(job_id, timeout=180)["status"] == "Done"
    return server.client.get(f"/datasets/{job_id}.json").json()


def api_lenet(server: Server, dataset_id: str, name: str) -> str:
    """LeNet, 2 epochs on the CPU, trained by the server's scheduler; returns the model's id."""
    fields = {
        "dataset": dataset_id,
        "model_name": name,
        "standard_networks": "lenet",
        "train_epochs": "2",
        "random_seed": "1",
        "solver_type": "ADAM",
        "learning_rate": "0.001",
        "device": "cpu",
    }
    res = server.client.post("/models/images/classification.json", data=fields)
    assert res.status_code == 200, res.text
    model_id = res.json()["id"]
    assert server.wait_job(model_id, timeout=300)["status"] == "Done", server.wait_job(model_id)
    return model_id


def image_loaded(img: Any) -> int:
    """The natural width of a loaded <img> (0 if it failed to load)."""
    img.scroll_into_view_if_needed()
    expect(img).to_have_js_property("complete", True)
    return img.evaluate("e => e.naturalWidth")


def classify_with_visualizations(page: Any, image: Path) -> list[tuple[float, str]]:
    """Upload ``image`` with "Show visualizations" ticked; check the top-5 and the pictures; returns the top-5."""
    page.set_input_files("#image_file", str(image))
    page.check("#show_visualizations")
    page.click("#classify-one-button")
    result = page.locator("#classify-one-result")
    items = result.locator("#predictions li")
    expect(items.first).to_be_visible()
    texts = items.all_inner_texts()
    assert 1 <= len(texts) <= 5, texts
    assert len(texts) == min(5, len(CLASSES)), texts  # 3 classes: all three are in the top-5
    predictions = []
    for text in texts:
        m = re.fullmatch(r"(\d+\.\d\d)% (\S.*)", text.strip())
        assert m, texts
        predictions.append((float(m[1]), m[2]))
    percents = [p for p, _ in predictions]
    assert percents == sorted(percents, reverse=True), texts
    assert sum(percents) == pytest.approx(100, abs=0.05), texts  # every class is listed
    assert {label for _, label in predictions} == set(CLASSES), texts

    vis = result.locator("section#visualizations")
    expect(vis).to_be_visible()
    # the input as the network saw it
    shown = vis.locator("#vis-input img")
    expect(shown).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    assert image_loaded(shown) > 0
    expect(vis.locator("#vis-input figcaption")).to_contain_text("1×28×28")
    # Grad-CAM for the top prediction, drawn over the input, at least 224 pixels wide
    gradcam = vis.locator("figure#gradcam")
    expect(gradcam).to_be_visible()
    gradcam_img = gradcam.locator("img[alt=Grad-CAM]")
    expect(gradcam_img).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    assert image_loaded(gradcam_img) >= 224
    expect(gradcam.locator("figcaption")).to_contain_text(f"Grad-CAM for {predictions[0][1]} (layer conv2)")
    # one row per layer, in order, each with its activations (and the learned layers their weights)
    rows = vis.locator("table.vis-layers tr.vis-layer")
    expect(rows.first).to_be_visible()
    names = rows.evaluate_all("rows => rows.map(r => r.dataset.layer)")
    assert [n for n in names if n in LENET_LAYERS] == LENET_LAYERS, names
    for name in LENET_LAYERS:
        row = vis.locator(f"tr.vis-layer[data-layer='{name}']")
        act = row.locator(f"img.vis-img[alt='{name} activations']")
        expect(act).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
        assert image_loaded(act) > 0, name
        expect(row.locator("td").nth(1)).to_contain_text("Data shape")
        params = row.locator("td").first.locator("div.hint").last
        if name in LENET_PARAMS:  # learned: weights, a picture and a parameter count
            weights = row.locator(f"img.vis-img[alt='{name} weights']")
            expect(weights).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
            assert image_loaded(weights) > 0, name
            expect(params).to_have_text(f"{LENET_PARAMS[name]:,} learned parameters")
        else:
            expect(params).to_have_text("0 learned parameters")
            expect(row.locator("td").nth(2)).to_have_text("–")
    expect(vis.locator("table.vis-layers tr.vis-layer[data-layer=conv1] td").first).to_contain_text("20×24×24")
    expect(vis.locator("#vis-total")).to_have_text(f"{sum(LENET_PARAMS.values()):,}")
    # click a picture to zoom it, and again to unzoom
    gradcam_img.click()
    expect(gradcam_img).to_have_class(re.compile(r"\bzoom\b"))
    gradcam_img.click()
    expect(gradcam_img).not_to_have_class(re.compile(r"\bzoom\b"))
    return predictions


def confusion_matrix(page: Any) -> list[list[int]]:
    """The matrix as the page shows it, checking that the empty cells, and only they, are disabled."""
    cells = page.locator("#confusion-matrix button.cell")
    n = len(CLASSES)
    expect(cells).to_have_count(n * n)
    found = cells.evaluate_all(
        "bs => bs.map(b => [+b.dataset.truth, +b.dataset.predicted, b.textContent.trim(), b.disabled])"
    )
    matrix = [[0] * n for _ in range(n)]
    for truth, predicted, text, disabled in found:
        matrix[truth][predicted] = int(text)
        assert disabled == (int(text) == 0), found
    return matrix


def open_cell(page: Any, base_url: str, eval_id: str, truth: int, predicted: int, count: int) -> list[bytes]:
    """Click a cell: its title names it, and it lists exactly its images, which all load as PNGs
    (returned, in the order shown)."""
    labels = sorted(CLASSES)
    page.click(f"#confusion-matrix button.cell[data-truth='{truth}'][data-predicted='{predicted}']")
    title = page.locator("#cell-images #cell-title")
    expect(title).to_have_text(f"{count} × true {labels[truth]}, predicted {labels[predicted]}")
    thumbs = page.locator("#cell-images figure.thumb")
    expect(thumbs).to_have_count(min(count, CELL_IMAGES))
    srcs = thumbs.locator("img").evaluate_all("imgs => imgs.map(i => i.getAttribute('src'))")
    pattern = re.compile(rf"^/evaluations/{re.escape(eval_id)}/images/(\d+)$")
    assert all(pattern.match(s) for s in srcs), srcs
    assert len(set(srcs)) == len(srcs), srcs
    captions = thumbs.locator("figcaption").all_inner_texts()
    confidences = [float(c.rsplit(" · ", 1)[1].rstrip("%")) for c in captions]
    assert confidences == sorted(confidences, reverse=True), captions  # surest first
    # each listed image is one the evaluation put in this cell (its CSV: truth and top-1 per image)
    res = page.request.get(f"{base_url}/evaluations/{eval_id}/classifications.csv")
    assert res.ok, res.status
    rows = list(csv.DictReader(io.StringIO(res.text())))
    for src, caption in zip(srcs, captions):
        row = rows[int(pattern.match(src)[1])]
        assert caption.startswith(row["image"] + " · "), (caption, row)
        assert (row["truth"], row["top1"]) == (labels[truth], labels[predicted]), row
    in_cell = sum(1 for r in rows if (r["truth"], r["top1"]) == (labels[truth], labels[predicted]))
    assert in_cell == count, (in_cell, count)
    pngs = []
    for src in srcs:  # and they load: PNG over HTTP, and decoded in the page
        res = page.request.get(base_url + src)
        assert res.status == 200, (src, res.status)
        assert res.headers["content-type"] == "image/png", (src, res.headers)
        pngs.append(res.body())
        assert pngs[-1][:8] == b"\x89PNG\r\n\x1a\n", src
    for img in thumbs.locator("img").all():
        assert image_loaded(img) == 28
    return pngs


def pixels(png: bytes | Path) -> bytes:
    with Image.open(io.BytesIO(png) if isinstance(png, bytes) else png) as im:
        assert im.size == (28, 28), im.size
        return im.convert("L").tobytes()


def test_classify_one_with_visualizations_then_evaluate_val_and_open_a_cell(
    page: Any, live_server: Server, make_folder: Callable[..., Path]
) -> None:
    url = live_server.url
    folder = make_folder(CLASSES, size=(28, 28))
    val = val_folder(make_folder)
    dataset = api_dataset(live_server, folder, val, "grey28")
    counts = dataset["ParseFolderTasks"][0]
    val_count = counts["val_count"]
    assert (counts["train_count"], val_count) == (sum(CLASSES.values()), sum(VAL.values())), dataset
    model_id = api_lenet(live_server, dataset["id"], "lenet-inspect")

    page.goto(f"{url}/models/{model_id}")
    expect(page.locator("#job-status")).to_have_text("Done")
    expect(page.locator("#snapshot_epoch")).to_have_value("2")
    expect(page.locator("#evaluations-table")).to_have_count(0)  # nothing evaluated yet

    classify_with_visualizations(page, folder / "square" / "0003.png")

    # evaluate the val split: a job, and its page
    page.select_option("#evaluate-split", "val")
    page.click("#evaluate-button")
    page.wait_for_url(re.compile(r"/evaluations/[0-9a-f-]+$"))
    eval_id = page.url.rsplit("/", 1)[1]
    expect(page.locator("#model-link")).to_have_attribute("href", f"/models/{model_id}")
    top1 = page.locator("#top1")
    expect(top1).to_be_visible(timeout=180_000)  # the page reloads itself every 2 s until Done
    expect(page.locator("#job-status")).to_have_text("Done")
    page.wait_for_load_state("load")
    result = live_server.client.get(f"/evaluations/{eval_id}.json").json()
    assert result["status"] == "Done" and result["images"] == result["scored"] == val_count, result
    assert result["snapshot_epoch"] == 2 and result["source"]["split"] == "val", result
    expect(top1).to_have_text(f"{result['top1_accuracy']:.2f}%")
    expect(page.locator("#evaluation-summary")).to_contain_text(f"on {val_count} images with labels")

    matrix = confusion_matrix(page)
    assert sum(map(sum, matrix)) == val_count, matrix
    assert matrix == result["confusion_matrix"], (matrix, result["confusion_matrix"])
    right = sum(matrix[i][i] for i in range(len(matrix)))
    assert result["top1_accuracy"] == pytest.approx(100 * right / val_count, abs=0.01)
    expect(page.locator("#cell-images")).to_be_empty()  # nothing opened yet

    labels = sorted(CLASSES)
    circle, square = labels.index("circle"), labels.index("square")
    assert [sum(row) for row in matrix] == [VAL["circle"] - MISLABELLED, VAL["square"] + MISLABELLED, VAL["stripe"]]
    assert matrix[square][circle] >= 1, matrix  # the circles filed under square/ (all of them, if it learned)
    # the fullest cell, then the mistakes: each replaces what was shown
    cells = sorted(((n, t, p) for t, row in enumerate(matrix) for p, n in enumerate(row) if n), reverse=True)
    n, truth, predicted = cells[0]
    open_cell(page, url, eval_id, truth, predicted, n)
    shown = open_cell(page, url, eval_id, square, circle, matrix[square][circle])
    mislabelled = {pixels(p) for p in (val / "square").glob("mislabelled_*.png")}
    assert len(mislabelled) == MISLABELLED
    assert {pixels(p) for p in shown} <= mislabelled  # the cell shows the very circles filed under square/

    # the rest of the page
    per_class = page.locator("#per-class tr:has(td)")
    expect(per_class).to_have_count(len(CLASSES))
    assert per_class.locator("td:first-child").all_inner_texts() == sorted(CLASSES)
    supports = [int(s) for s in per_class.locator("td:nth-child(2)").all_inner_texts()]
    assert supports == [sum(row) for row in matrix], (supports, matrix)
    worst = page.locator("#worst figure.thumb")
    wrong = [w for w in result["worst"] if w["truth"] != w["predicted"]]
    assert bool(wrong) == (right < val_count), result["worst"]
    expect(worst).to_have_count(len(wrong))
    if val_count == right:
        expect(page.locator("#worst")).to_contain_text("No mistakes.")
    for figure in worst.all():  # each mistake: the image, and where the network looked to say what it said
        assert image_loaded(figure.locator("a > img")) == 28
        truth, predicted = re.fullmatch(r"(\S+) → (\S+) [\d.]+%", figure.locator("figcaption").inner_text()).groups()
        assert truth != predicted
        gradcam = figure.locator("img.gradcam")
        expect(gradcam).to_have_attribute("alt", f"Grad-CAM for {predicted}")
        assert image_loaded(gradcam) > 28
    expect(page.locator("#label-issues, #no-label-issues")).to_have_count(1)
    issues = page.locator("#label-issues tr:has(td)")
    expect(issues).to_have_count(len(result["label_issues"]))
    for issue in issues.all():  # cleanlab's suspects, if any, are the circles filed under square/
        expect(issue.locator("td").nth(2)).to_have_text("square")
        expect(issue.locator("td").nth(3)).to_contain_text("circle")
        src = issue.locator("img").get_attribute("src")
        res = page.request.get(url + src)
        assert res.ok and res.headers["content-type"] == "image/png", (src, res.status)
        assert pixels(res.body()) in mislabelled, src
    assert not page.errors, page.errors

    # the model page lists the evaluation with its accuracy
    page.goto(f"{url}/models/{model_id}")
    row = page.locator(f"#evaluations-table tr:has(a[href='/evaluations/{eval_id}'])")
    expect(row).to_be_visible()
    expect(page.locator("#evaluations-table tr")).to_have_count(1)
    expect(row.locator("td").nth(1)).to_have_text("Done")
    expect(row.locator("td").nth(2)).to_have_text(f"{result['top1_accuracy']:.2f}% top-1")
    row.locator("a").click()
    page.wait_for_url(f"{url}/evaluations/{eval_id}")
    expect(top1).to_have_text(f"{result['top1_accuracy']:.2f}%")
    assert [d for d in page.dialogs if d[0] == "alert"] == [], page.dialogs
    assert not page.errors, page.errors
