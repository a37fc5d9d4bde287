"""Kiln's recipe: settings measured to make a network read handwriting unlike its training set.

The recipe is a set of ordinary form fields (augmentations, solver, schedule), so a model made
with it shows in its configuration exactly what ran, and a field the user sets explicitly wins.
The ``recipe`` field records which recipe filled the form. How each value was chosen, and every
candidate tried: docs/benchmarks.md, "Kiln's recipe"; `bench/bench_recipe.py` measures them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kiln.fields import Field, FieldError

RECIPE_CHOICES = {"none": "None (the fields as set)", "kiln": "Kiln's recipe (fills in the fields)"}
FIELDS = {
    "recipe": Field(
        "recipe",
        "Recipe",
        str,
        "kiln's measured recipe fills in every field the form leaves out (LeNet: reads real handwriting, "
        "light on dark and dark on light)",
        choices=RECIPE_CHOICES,
    )
}

# LeNet on MNIST with inverted copies (120,000 images), measured in docs/benchmarks.md ("Kiln's
# recipe"): 99.2-99.3 % on MNIST's test split (the 99.4 % target is missed: LeNet levels off there at
# this budget, with or without augmentation), 90-91 % on the all-stresses-at-once sets (thick and
# thin strokes, blur, low resolution, shifts, slants, grey paper) light on dark and dark on light,
# where plain training reads 41 %; about 3 minutes on 2 CPU cores. Values as TrainConfig holds them.
KILN_RECIPES: dict[str, dict[str, Any]] = {
    "lenet": {
        "train_epochs": 4.0,  # 3 epochs: 99.2 %; 6 epochs: no better than 4
        "batch_size": 256,  # the fastest batch per image on 2 cores (oneDNN, channels_last)
        "solver_type": "ADAM",
        "learning_rate": 0.003,
        "lr_policy": "cosine",
        "use_mean": "pixel",  # one mean for either polarity
        "aug_rot": 12.0,
        "aug_scale": 0.1,
        "aug_shear": 10.0,
        "aug_shift": 0.1,
        "aug_stroke": 1.0,
        "aug_blur": 1.0,
        "aug_contrast": 0.5,
        "aug_brightness": 0.2,
        "aug_invert": 0.5,
        "aug_clean": 0.3,  # crisp images too: +0.15-0.3 points on MNIST's test split
    },
}


def recipe_values(recipe: str, network: str) -> dict[str, Any]:
    """The fields recipe `recipe` sets for standard network `network` (none: no fields).

    Raises FieldError naming ``recipe`` for an unknown recipe or a network it was not measured on.
    """
    FIELDS["recipe"].check(recipe)
    if recipe == "none":
        return {}
    if network not in KILN_RECIPES:
        measured = ", ".join(sorted(KILN_RECIPES))
        raise FieldError(
            "recipe",
            f"Kiln's recipe is measured for the standard {measured} network only, not {network or 'this network'}.",
        )
    return dict(KILN_RECIPES[network])


def form_values(recipe: str, network: str) -> dict[str, str]:
    """The recipe as form text (what the New Model page fills in and `kiln train --recipe` sends)."""
    return {name: _text(value) for name, value in recipe_values(recipe, network).items()}


def apply_to_form(form: Mapping[str, Any]) -> dict[str, Any]:
    """The form with the chosen recipe's values filled in wherever the form leaves a field out or
    blank; raises FieldError naming ``recipe``. A form without a recipe comes back unchanged."""
    recipe = str(form.get("recipe") or "none").strip()
    network = str(form.get("standard_networks") or "").strip() if form.get("method", "standard") == "standard" else ""
    values = form_values(recipe, network)
    filled = dict(form)
    for name, value in values.items():
        if str(form.get(name, "")).strip() == "":
            filled[name] = value
    filled["recipe"] = recipe
    return filled


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
