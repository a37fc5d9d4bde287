"""The New Dataset and New Model pages as a browser validates them before submitting: every
number field must accept the value the page fills in (its step, min and max), or the browser
refuses to send the form and nothing tells the user why."""

from __future__ import annotations

import math
from html.parser import HTMLParser

import pytest

from tests.conftest import Kiln


class NumberInputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "input" and dict(attrs).get("type") == "number":
            self.inputs.append(dict(attrs))


def problem(field: dict[str, str | None]) -> str | None:
    """Why a browser would refuse this field's value (HTML's constraint validation), or None."""
    step = field.get("step") or "1"
    if step != "any":
        try:
            if float(step) <= 0:
                return f"step {step!r} is not a positive number"
        except ValueError:
            return f"step {step!r} is neither 'any' nor a number"
    value = field.get("value") or ""
    if not value:
        return None
    number = float(value)
    low = float(field["min"]) if field.get("min") else None
    if low is not None and number < low:
        return f"{value} is under min {low}"
    if field.get("max") and number > float(field["max"]):
        return f"{value} is over max {field['max']}"
    if step != "any":
        base = low or 0.0
        ratio = (number - base) / float(step)
        if not math.isclose(ratio, round(ratio), abs_tol=1e-9):
            return f"{value} is not a multiple of step {step} from {base}"
    return None


@pytest.mark.parametrize(
    "url",
    [
        "/models/images/classification/new",
        "/datasets/images/classification/new",
    ],
)
def test_every_number_field_accepts_its_own_value(kiln: Kiln, url: str) -> None:
    page = NumberInputs()
    page.feed(kiln.client.get(url).text)
    assert len(page.inputs) >= 3
    problems = {f["name"]: p for f in page.inputs if (p := problem(f))}
    assert problems == {}, problems
