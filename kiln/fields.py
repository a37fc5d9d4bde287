"""A user-settable field, declared once: its type, label, help, choices or range.

Engine modules declare the fields they implement (solvers, LR policies, augmentations...);
the web form, its template, the CLI options, the OpenAPI description and docs/api.md all read
those declarations, and :meth:`Field.check` is the same check at job creation and in the engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class FieldError(ValueError):
    """A value the engine refuses, with the name of the field it came from."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.field = name
        self.message = message


@dataclass(frozen=True)
class Field:
    """One field. Numbers are finite and within [low, high] (bounds open where asked)."""

    name: str
    label: str
    type: type = float  # int, float, str or bool
    help: str = ""
    choices: Mapping[str, str] | None = None  # value -> label, in display order
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: value must be > low
    high_open: bool = False  # True: value must be < high
    optional: bool = False  # blank / None allowed (means "the default rule")
    extra_check: Callable[[Any], str | None] | None = field(default=None, compare=False)

    def check(self, value: Any) -> None:
        """Raise FieldError unless the value is acceptable for this field."""
        if value is None:
            if not self.optional:
                raise FieldError(self.name, "This field is required.")
            return
        if self.choices is not None and value not in self.choices:
            raise FieldError(self.name, f"Pick one of: {', '.join(map(str, self.choices))}; got {value!r}.")
        if self.type in (int, float):
            self._check_number(value)
        if self.extra_check is not None:
            problem = self.extra_check(value)
            if problem:
                raise FieldError(self.name, problem)

    def _check_number(self, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FieldError(self.name, f"Must be a number, got {value!r}.")
        if not math.isfinite(value):
            raise FieldError(self.name, f"Must be a finite number, got {value!r}.")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if too_low or too_high:
            raise FieldError(self.name, f"Must be {self.range_text()}, got {_num(value)}.")

    def range_text(self) -> str:
        """'between 0 and 180', 'greater than 0', 'in [0, 1)' ..."""
        lo, hi = _num(self.low), _num(self.high)
        if lo and hi:
            if not self.low_open and not self.high_open:
                return f"between {lo} and {hi}"
            return f"in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"
        if lo:
            return f"greater than {lo}" if self.low_open else f"{lo} or more"
        if hi:
            return f"less than {hi}" if self.high_open else f"{hi} or less"
        return "a finite number"

    def describe(self) -> str:
        """One line for --help and docs: help text, then choices or range."""
        parts = [self.help or self.label]
        if self.choices is not None:
            parts.append("one of: " + ", ".join(map(str, self.choices)))
        elif self.type in (int, float) and (self.low is not None or self.high is not None):
            parts.append(self.range_text())
        return "; ".join(parts)

    def json_schema(self) -> dict[str, Any]:
        """This field in OpenAPI / JSON Schema terms (form values are text, so numbers may come as text)."""
        kind = {int: "integer", float: "number", bool: "boolean"}.get(self.type, "string")
        schema: dict[str, Any] = {"type": kind, "title": self.label, "description": self.describe()}
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        if self.type in (int, float):
            if self.low is not None:
                schema["exclusiveMinimum" if self.low_open else "minimum"] = self.low
            if self.high is not None:
                schema["exclusiveMaximum" if self.high_open else "maximum"] = self.high
        return schema


def _num(x: float | None) -> str:
    """A bound as people write it: 4294967295, not 4.29497e+09; '' for None."""
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def markdown_table(fields: Mapping[str, Field]) -> str:
    """The fields as a Markdown table for docs/api.md: name, type, default rule, choices or range."""
    lines = ["| Field | Type | Meaning | Values |", "|---|---|---|---|"]
    for name, f in fields.items():
        if f.choices is not None:
            values = ", ".join(f"`{v}`" for v in f.choices)
        elif f.type in (int, float) and (f.low is not None or f.high is not None):
            values = f.range_text()
        else:
            values = ""
        kind = f.type.__name__ + (" or blank" if f.optional else "")
        lines.append(f"| `{name}` | {kind} | {f.help or f.label} | {values} |")
    return "\n".join(lines) + "\n"
