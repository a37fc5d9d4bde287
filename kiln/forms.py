"""Turn DIGITS-style form fields into typed values, collecting per-field errors (web and CLI)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, get_type_hints

TRUE = {"1", "true", "on", "yes", "y"}


class FormErrors(Exception):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


def coerce(name: str, raw: Any, hint: Any, errors: dict[str, list[str]]) -> Any:
    """One field from its form text to the dataclass type; records an error on failure."""
    text = str(raw).strip()
    hint_s = str(hint)
    optional = "None" in hint_s
    if optional and text == "":
        return None
    try:
        if hint_s.startswith("bool") or hint is bool:
            return text.lower() in TRUE
        if hint_s.startswith("int") or hint is int:
            number = float(text)
            if not number.is_integer():
                raise ValueError(text)
            return int(number)
        if hint_s.startswith("float") or hint is float:
            return float(text)
    except ValueError:
        kind = "integer" if "int" in hint_s else "number"
        errors.setdefault(name, []).append(f"Not a valid {kind}: {text!r}.")
        return None
    return text


def parse_into(
    cls: type, form: dict[str, Any], errors: dict[str, list[str]], skip: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Values for the dataclass fields present in the form."""
    hints = get_type_hints(cls)
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in skip or f.name not in form:
            continue
        value = coerce(f.name, form[f.name], hints[f.name], errors)
        if value is not None or "None" in str(hints[f.name]):
            out[f.name] = value
    return out
