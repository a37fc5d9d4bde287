"""Kiln's recipe: it fills in only what a form leaves out, its values pass the engine's check, it
reaches the training (the log names it and its augmentations, and they change the batches), and on
a small slice of MNIST it reads dark digits on light paper that plain training cannot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kiln.fields import FieldError
from kiln.reporting import RecordingReporter
from kiln.training.config import TrainConfig
from kiln.training.loop import train
from kiln.training.options import check_config
from kiln.training.recipe import KILN_RECIPES, apply_to_form, form_values, recipe_values

pytestmark = pytest.mark.usefixtures("one_thread")
LENET = KILN_RECIPES["lenet"]


def test_recipe_values_pass_the_engine_check_and_differ_from_digits() -> None:
    config = TrainConfig(**recipe_values("kiln", "lenet"), recipe="kiln")
    check_config(config)
    defaults = TrainConfig()
    assert {k for k in LENET if getattr(defaults, k) != LENET[k]} == set(LENET)  # every value changes something
    assert TrainConfig(
        **{k: type(v)(s) for (k, v), s in zip(LENET.items(), form_values("kiln", "lenet").values())}
    ) == TrainConfig(**LENET)


def test_apply_to_form_fills_only_what_is_left_out() -> None:
    form = {"standard_networks": "lenet", "recipe": "kiln", "train_epochs": "7", "aug_shift": " ", "model_name": "m"}
    filled = apply_to_form(form)
    assert filled["train_epochs"] == "7"  # explicit wins
    assert float(filled["aug_shift"]) == LENET["aug_shift"]  # blank is left out
    assert filled["solver_type"] == LENET["solver_type"] and filled["model_name"] == "m"
    assert form["aug_shift"] == " "  # the caller's form is not changed
    assert apply_to_form({"standard_networks": "lenet"}) == {"standard_networks": "lenet", "recipe": "none"}


@pytest.mark.parametrize(
    "form",
    [
        {"standard_networks": "lenet", "recipe": "best"},
        {"standard_networks": "alexnet", "recipe": "kiln"},
        {"method": "custom", "custom_network": "name: 'x'", "recipe": "kiln"},
    ],
)
def test_bad_recipe_names_the_field(form: dict) -> None:
    with pytest.raises(FieldError) as caught:
        apply_to_form(form)
    assert caught.value.field == "recipe"


def _first_losses(tiny, out: Path, augment: bool) -> tuple[list[float], list[str]]:
    """Train 1 epoch at learning rate 0 (weights never change), so the losses differ only by the batches."""
    values = {**LENET, "recipe": "kiln", "learning_rate": 0.0, "batch_size": 6, "train_epochs": 1}
    if not augment:
        values = {k: v for k, v in values.items() if not k.startswith("aug_")}
    reporter = RecordingReporter()
    config = TrainConfig(**values, network="lenet", random_seed=4, device="cpu", val_interval=0, snapshot_interval=0)
    train(config, tiny, out, reporter)
    return [row[1]["loss"] for row in reporter.rows if row[2] == "train"], reporter.lines


def test_the_recipe_reaches_the_batches_and_the_log(tiny, tmp_path: Path) -> None:
    with_aug, lines = _first_losses(tiny, tmp_path / "a", True)
    without, plain_lines = _first_losses(tiny, tmp_path / "b", False)
    again, _ = _first_losses(tiny, tmp_path / "c", True)
    assert with_aug == again  # same seed, same batches
    assert with_aug != without  # the augmentations changed what the network saw
    assert any(line.startswith("Recipe: kiln") for line in lines)
    augmentations = next(line for line in lines if line.startswith("Augmentations:"))
    expected = [
        f"rotation ±{LENET['aug_rot']:g}°",
        f"shift ±{LENET['aug_shift']:g}",
        f"invert p={LENET['aug_invert']:g}",
    ]
    for part in (*expected, "shear", "stroke width", "blur", "contrast", "brightness"):
        assert part in augmentations, (part, augmentations)
    assert "Augmentations: none" in plain_lines


@pytest.fixture(scope="module")
def mnist_slice(tmp_path_factory: pytest.TempPathFactory):
    """The first 2,000 MNIST training images (PNG folders, packed by kiln), the test split's first
    2,000 as val: light digits on dark only, no inverted copies."""
    from kiln.datasets.pack import build_dataset
    from kiln.datasets.reader import PackedDataset
    from kiln.datasets.stdsets import SourceMissing, folders_spec, write_mnist

    root = tmp_path_factory.mktemp("mnist")
    try:
        write_mnist(root / "mnist", limit=2000)
    except SourceMissing as exc:
        pytest.skip(str(exc))
    spec = folders_spec(root / "mnist")
    build_dataset(spec, root / "packed", RecordingReporter(), workers=1)
    return PackedDataset(root / "packed")


def _dark_on_light_accuracy(dataset, out: Path, recipe: bool) -> float:
    from kiln.inference.predictor import Predictor

    values = dict(LENET) if recipe else {k: v for k, v in LENET.items() if not k.startswith("aug_")}
    values.update(train_epochs=2, batch_size=32, network="lenet", random_seed=1, device="cpu", val_interval=0)
    values.update(snapshot_interval=0)
    train(TrainConfig(**values), dataset, out, RecordingReporter())
    dark = 255 - np.asarray(dataset.images("val"))
    predicted = Predictor.from_job_dir(out).probabilities(dark).argmax(1)
    return float((predicted == np.asarray(dataset.targets("val"))).mean())


def test_the_recipe_reads_dark_digits_on_light_paper(mnist_slice, tmp_path: Path) -> None:
    """The same data, seed, solver and schedule, with and without the recipe's augmentations."""
    plain = _dark_on_light_accuracy(mnist_slice, tmp_path / "plain", recipe=False)
    recipe = _dark_on_light_accuracy(mnist_slice, tmp_path / "recipe", recipe=True)
    assert recipe > plain + 0.3, (plain, recipe)
