"""The Custom network editor (issue 8) in a real browser: Customize LeNet into the MNIST lab's variant,
Visualize its shapes, train it, and see the same layers on the model page; a typo is marked by line."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .conftest import Server, api_dataset

pytestmark = pytest.mark.browser

CLASSES = {"circle": 8, "square": 8, "stripe": 8}  # 24 grey 28x28 images: one epoch takes seconds

POOL1_END = """  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
"""  # the end of pool1 (pool2 ends the same way; pool1 comes first)
RELU_POOL1 = """layer {
  name: "relu_pool1"
  type: "ReLU"
  bottom: "pool1"
  top: "pool1"
}
"""


def expect(*args: Any, **kw: Any) -> Any:
    from playwright.sync_api import expect as pw_expect

    return pw_expect(*args, **kw)


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in the network text"
    return text.replace(old, new)


def mnist_lab_variant(lenet: str) -> tuple[str, int]:
    """LeNet edited as in the MNIST lab: conv1 20 -> 75 outputs, conv2 50 -> 100, and a ReLU in place
    after pool1. Returns the text and the line where the new layer starts."""
    text = replace_once(lenet, "num_output: 20\n", "num_output: 75\n")
    text = replace_once(text, "num_output: 50\n", "num_output: 100\n")  # not ip1's 500
    at = text.index('name: "pool1"')
    end = text.index(POOL1_END, at) + len(POOL1_END)
    text = text[:end] + RELU_POOL1 + text[end:]
    return text, text[:end].count("\n") + 1


def layer_cell(page: Any, layer: str, column: int) -> Any:
    """One cell of the #network-layers row of ``layer`` (columns: 1 name, 2 type, 3 shape, 4 params, 5 line)."""
    return page.locator(f"#network-layers tr:has(td:first-child:text-is('{layer}')) td:nth-child({column})")


def layer_names(page: Any) -> list[str]:
    return page.locator("#network-layers tr:not(.total) td:first-child").all_inner_texts()


def expect_variant_layers(page: Any, relu_line: int | None) -> None:
    expect(page.locator("#network-layers")).to_be_visible()
    expect(layer_cell(page, "conv1", 3)).to_have_text("75×24×24")
    expect(layer_cell(page, "pool1", 3)).to_have_text("75×12×12")
    expect(layer_cell(page, "relu_pool1", 2)).to_have_text("ReLU")
    expect(layer_cell(page, "relu_pool1", 3)).to_have_text("75×12×12")
    if relu_line is not None:
        expect(layer_cell(page, "relu_pool1", 5)).to_have_text(str(relu_line))
    expect(layer_cell(page, "conv2", 3)).to_have_text("100×8×8")
    expect(layer_cell(page, "pool2", 3)).to_have_text("100×4×4")
    expect(layer_cell(page, "conv2", 4)).to_have_text("187,600")  # 75 * 100 * 5 * 5 + 100
    names = layer_names(page)
    assert names.index("pool1") < names.index("relu_pool1") < names.index("conv2"), names


def model_ids(server: Server) -> list[str]:
    return [m["id"] for m in server.client.get("/index.json").json()["models"]]


def wait_model_done(page: Any, base_url: str, model_id: str, timeout: float = 300) -> dict[str, Any]:
    """Polls /models/<id>.json through the page's own (logged-in) request context."""
    deadline = time.monotonic() + timeout
    while True:
        res = page.request.get(f"{base_url}/models/{model_id}.json")
        assert res.ok, res.text()
        model = res.json()
        assert model["status"] not in ("Error", "Aborted"), model
        if model["status"] == "Done":
            return model
        assert time.monotonic() < deadline, f"model still {model['status']} after {timeout} s"
        time.sleep(0.5)


def customize_lenet(page: Any, base_url: str, dataset_id: str) -> str:
    """The New Model page with the dataset chosen and LeNet's text in the Custom tab; returns the text."""
    page.goto(f"{base_url}/models/images/classification/new")
    page.select_option("#dataset", dataset_id)
    expect(page.locator("#dataset-summary")).not_to_be_empty()
    expect(page.locator("#method")).to_have_value("standard")
    expect(page.locator("#pane-custom")).to_be_hidden()
    page.click("#customize-lenet")
    editor = page.locator("#custom_network")
    expect(editor).to_have_value(re.compile(r'name: "LeNet"'))
    expect(page.locator("#method")).to_have_value("custom")
    expect(page.locator("#tab-custom")).to_have_class(re.compile(r"\bactive\b"))
    expect(page.locator("#pane-custom")).to_be_visible()
    expect(page.locator("#pane-standard")).to_be_hidden()
    lenet = editor.input_value()
    expect(page.locator("#custom-gutter span")).to_have_count(lenet.count("\n") + 1)
    return lenet


def test_customize_lenet_visualize_train_and_see_it_on_the_model_page(
    page: Any, live_server: Server, make_folder: Callable[..., Path]
) -> None:
    dataset_id = api_dataset(live_server, make_folder(CLASSES), "grey28")
    url = live_server.url
    lenet = customize_lenet(page, url, dataset_id)
    edited, relu_line = mnist_lab_variant(lenet)

    editor = page.locator("#custom_network")
    editor.fill(edited)
    expect(editor).to_have_value(edited)
    expect(page.locator("#custom-gutter span")).to_have_count(edited.count("\n") + 1)  # the gutter follows

    page.click("#visualize")
    expect_variant_layers(page, relu_line)
    expect(page.locator("#network-layers caption")).to_contain_text("1×28×28 input, 3 classes")
    expect(page.locator("#network-error")).to_have_count(0)
    expect(page.locator("#bad-line")).to_have_count(0)
    drawing = page.locator("#network-visual .network-drawing svg")
    expect(drawing).to_be_visible()
    expect(drawing).to_contain_text("conv1 (Convolution) line 36: 75x24x24")  # the drawing writes x
    expect(drawing).to_contain_text(f"relu_pool1 (ReLU) line {relu_line}: 75x12x12")

    page.fill("#train_epochs", "1")
    page.fill("#snapshot_interval", "1")
    page.fill("#val_interval", "1")
    page.fill("#random_seed", "1")
    page.select_option("#device", "cpu")
    page.fill("#model_name", "lenet-75-100")
    page.click("#create-model")
    page.wait_for_url(re.compile(r"/models/[0-9a-f-]+$"), timeout=120_000)
    model_id = page.url.rsplit("/", 1)[1]

    model = wait_model_done(page, url, model_id)
    assert model["name"] == "lenet-75-100", model
    page.reload()
    expect(page.locator("#job-status")).to_have_text("Done")
    expect(page.locator("#title-name")).to_have_text("lenet-75-100")
    card = page.locator("#network")
    expect(card.locator("#network-layers")).to_be_visible()
    expect_variant_layers(page, relu_line)
    expect(card.locator("#customize-model")).to_have_attribute(
        "href", f"/models/images/classification/new?customize={model_id}"
    )

    # and its Customize brings the edited text back into the editor, starting from its weights
    page.click("#customize-model")
    page.wait_for_url(re.compile(r"/models/images/classification/new\?customize="))
    expect(page.locator("#method")).to_have_value("custom")
    expect(page.locator("#tab-custom")).to_have_class(re.compile(r"\bactive\b"))
    expect(editor).to_have_value(edited)
    expect(page.locator("#dataset")).to_have_value(dataset_id)
    expect(page.locator("#custom_network_snapshot")).to_have_value(re.compile(rf"^{model_id}:\d"))
    assert not page.errors, page.errors


def test_a_typo_in_a_layer_type_is_marked_by_line_and_creates_nothing(
    page: Any, live_server: Server, make_folder: Callable[..., Path]
) -> None:
    dataset_id = api_dataset(live_server, make_folder(CLASSES), "grey28")
    url = live_server.url
    lenet = customize_lenet(page, url, dataset_id)
    pool1 = lenet.index('name: "pool1"')
    typo = lenet.index('type: "Pooling"', pool1)
    broken = lenet[:typo] + 'type: "Poolling"' + lenet[typo + len('type: "Pooling"') :]
    line = broken[:typo].count("\n") + 1
    assert broken.splitlines()[line - 1].strip() == 'type: "Poolling"'

    editor = page.locator("#custom_network")
    editor.fill(broken)
    expect(editor).to_have_value(broken)
    page.click("#visualize")
    error = page.locator("#network-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(f"line {line}")
    expect(error).to_contain_text("Poolling")
    expect(error).to_have_attribute("data-line", str(line))
    expect(page.locator("#network-layers")).to_have_count(0)
    bad = page.locator("#custom-gutter #bad-line")
    expect(bad).to_have_text(str(line))
    expect(page.locator("#custom-gutter span.bad")).to_have_count(1)

    before = model_ids(live_server)
    page.fill("#train_epochs", "1")
    page.select_option("#device", "cpu")
    page.fill("#model_name", "typo")
    with page.expect_navigation() as nav:
        page.click("#create-model")
    assert nav.value.status == 400
    expect(page.locator("#form-errors")).to_be_visible()
    # the error is under the editor, on the network text's own field, naming the line
    field_error = page.locator("#pane-custom .editor + .field-error[data-field=custom_network]")
    expect(field_error).to_be_visible()
    expect(field_error).to_contain_text(f"line {line}")
    expect(page.locator("#pane-custom .editor")).to_have_class(re.compile(r"\bhas-error\b"))
    # what was typed comes back in the Custom tab, with the same line marked
    expect(page.locator("#method")).to_have_value("custom")
    expect(page.locator("#pane-custom")).to_be_visible()
    expect(editor).to_have_value(broken)
    expect(page.locator("#model_name")).to_have_value("typo")
    expect(bad).to_have_text(str(line))
    # and no model was created
    assert model_ids(live_server) == before
    assert "typo" not in [m["name"] for m in live_server.client.get("/index.json").json()["models"]]
    assert not page.errors, page.errors
