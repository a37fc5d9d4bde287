"""Kiln's recipe and class balancing over the JSON API and `kiln train`: the recipe fills in the
fields a request leaves out (explicit fields win), bad values are refused naming the field, and
the dataset page warns when the largest class is over 3x the smallest."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from kiln.training.recipe import KILN_RECIPES
from tests.conftest import Kiln, write_class_folder

MODELS = "/models/images/classification.json"


def _dataset(kiln: Kiln) -> str:
    store = kiln.store
    dataset_id = store.create_job(
        "dataset", "digits", {"spec": {"resize_width": 28, "resize_height": 28, "resize_channels": 1}}, None
    )
    store.set_status(dataset_id, "Done")
    return dataset_id


def _config(kiln: Kiln, job_id: str) -> dict:
    return kiln.store.get_job(job_id).params["config"]


def test_recipe_fills_in_what_the_request_leaves_out(kiln: Kiln) -> None:
    form = {
        "dataset": _dataset(kiln),
        "model_name": "r",
        "standard_networks": "lenet",
        "recipe": "kiln",
        "train_epochs": "1",
    }
    res = kiln.client.post(MODELS, data=form)
    assert res.status_code == 200, res.text
    config = _config(kiln, res.json()["id"])
    recipe = KILN_RECIPES["lenet"]
    assert config["recipe"] == "kiln" and config["train_epochs"] == 1  # the explicit field wins
    for name in ("solver_type", "lr_policy", "aug_shift", "aug_stroke", "aug_invert", "batch_size"):
        assert config[name] == recipe[name], name
    # the model page shows the recipe and the augmentations that ran
    page = kiln.client.get(f"/models/{res.json()['id']}").text
    assert re.search(r'id="config-recipe">kiln', page)
    shown = dict(re.findall(r'<tr class="config-aug"><th>(\w+)</th><td>([^<]*)</td>', page))
    assert {k for k, v in recipe.items() if k.startswith("aug_")} == set(shown)
    assert float(shown["aug_shift"]) == recipe["aug_shift"]


def test_no_recipe_leaves_digits_defaults(kiln: Kiln) -> None:
    form = {"dataset": _dataset(kiln), "model_name": "p", "standard_networks": "lenet"}
    res = kiln.client.post(MODELS, data=form)
    config = _config(kiln, res.json()["id"])
    assert (config["recipe"], config["solver_type"], config["aug_shift"], config["balance_classes"]) == (
        "none",
        "SGD",
        0.0,
        "none",
    )


def test_bad_recipe_and_balance_values_name_their_field(kiln: Kiln) -> None:
    base = {"dataset": _dataset(kiln), "model_name": "b", "standard_networks": "lenet"}
    for field, value in (("recipe", "grandma"), ("balance_classes", "oversample")):
        res = kiln.client.post(MODELS, data={**base, field: value})
        assert res.status_code == 400, res.text
        assert field in res.json()["errors"], res.json()
    res = kiln.client.post(MODELS, data={**base, "standard_networks": "alexnet", "recipe": "kiln"})
    assert res.status_code == 400 and "LeNet" in res.json()["errors"]["recipe"][0].replace("lenet", "LeNet")
    assert kiln.store.list_jobs("model") == []


def test_balance_classes_reaches_the_config(kiln: Kiln) -> None:
    form = {"dataset": _dataset(kiln), "model_name": "w", "standard_networks": "lenet", "balance_classes": "sampling"}
    res = kiln.client.post(MODELS, data=form)
    assert _config(kiln, res.json()["id"])["balance_classes"] == "sampling"


def test_the_form_offers_recipe_and_balance(kiln: Kiln) -> None:
    page = kiln.client.get("/models/images/classification/new").text
    assert re.search(r'<select name="recipe"', page) and re.search(r'<select name="balance_classes"', page)
    assert 'id="aug_stroke"' in page and 'id="aug_shift"' in page


def test_kiln_train_recipe_is_accepted(kiln: Kiln) -> None:
    dataset_id = _dataset(kiln)
    base = [sys.executable, "-m", "kiln", "--data-dir", str(kiln.data_dir), "train", "--dataset", dataset_id]
    out = subprocess.run(
        [*base, "--name", "cli", "--recipe", "--epochs", "2", "--queue"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    (job,) = kiln.store.list_jobs("model")
    assert (job.params["config"]["recipe"], job.params["config"]["train_epochs"]) == ("kiln", 2)
    assert job.params["config"]["aug_stroke"] == KILN_RECIPES["lenet"]["aug_stroke"]
    bad = subprocess.run([*base, "--name", "x", "--recipe", "grandma", "--queue"], capture_output=True, text=True)
    assert bad.returncode != 0 and "recipe" in bad.stderr + bad.stdout


def test_dataset_page_warns_about_imbalanced_classes(kiln: Kiln, tmp_path: Path) -> None:
    skewed = kiln.built_dataset(write_class_folder(tmp_path / "skewed", {"big": 40, "small": 10}), "skewed")
    even = kiln.built_dataset(write_class_folder(tmp_path / "even", {"a": 12, "b": 10}), "even")
    page = kiln.client.get(f"/datasets/{skewed}").text
    warning = re.search(r'id="class-imbalance".*?</div>', page, re.S)
    assert warning, "no imbalance warning"
    text = re.sub(r"<[^>]+>", " ", warning.group(0))
    assert "Balance classes" in text and "big" in text and "small" in text
    assert re.search(r"big\s+32\b", text) and re.search(r"small\s+8\b", text)  # 20 % went to val
    assert "class-imbalance" not in kiln.client.get(f"/datasets/{even}").text
    summary = kiln.client.get("/datasets/summary", params={"job_id": skewed}).text
    assert 'id="summary-imbalance"' in summary and "4.0×" in summary
