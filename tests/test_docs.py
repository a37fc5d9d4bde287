"""Every setting and every CLI command is documented in the README (Datasette's habit)."""

from dataclasses import fields
from pathlib import Path

from kiln.cli import build_parser
from kiln.config import Settings

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_setting_documented() -> None:
    for f in fields(Settings):
        assert f"KILN_{f.name.upper()}" in README, f.name
        assert f.metadata.get("help"), f"{f.name} has no help text"


def test_every_command_documented() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in sub.choices:
        assert f"kiln {name}" in README, name
