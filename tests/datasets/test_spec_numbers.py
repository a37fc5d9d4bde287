"""Every number of a dataset spec is a finite whole number in range at creation, whatever sends it
(the form's text, the CLI, a JSON spec): NaN, infinities, floats and huge values are refused there,
naming the field, instead of failing the job later."""

from __future__ import annotations

from pathlib import Path

import pytest

from kiln.datasets.spec import MAX_PER_CLASS, MAX_SEED, validate_spec
from kiln.forms import FormErrors
from kiln.jobs.dataset_form import spec_from_form
from tests.datasets.conftest import folder_spec, make_classes

NUMBERS = ("resize_width", "resize_height", "folder_pct_val", "folder_pct_test", "seed")
COUNTS = ("folder_train_min_per_class", "folder_train_max_per_class")


@pytest.mark.parametrize("field", NUMBERS + COUNTS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 2.5, "12abc", 10**40, -1])
def test_a_bad_number_is_refused_naming_its_field(tmp_path: Path, field: str, value: object) -> None:
    root = make_classes(tmp_path / "d", {"a": 2, "b": 2})
    errors = validate_spec(folder_spec(root, **{field: value}), None)
    assert field in errors, (field, value, errors)


@pytest.mark.parametrize("field", NUMBERS + COUNTS)
@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400", "2.5"])
def test_form_text_that_is_not_a_whole_number_is_refused(field: str, text: str) -> None:
    with pytest.raises(FormErrors) as caught:
        spec_from_form({"dataset_name": "d", "method": "folder", field: text})
    assert field in caught.value.errors


def test_the_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    root = make_classes(tmp_path / "d", {"a": 2, "b": 2})
    spec = folder_spec(root, seed=MAX_SEED, folder_train_min_per_class=1, folder_train_max_per_class=MAX_PER_CLASS)
    assert validate_spec(spec, None) == {}
    assert "seed" in validate_spec(folder_spec(root, seed=MAX_SEED + 1), None)
    assert "folder_train_max_per_class" in validate_spec(
        folder_spec(root, folder_train_max_per_class=MAX_PER_CLASS + 1), None
    )
