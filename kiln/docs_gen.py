"""Regenerates the parts of docs/ that come from declarations: `python -m kiln.docs_gen [--check]`.

docs/api.md holds the model form's fields between marker comments; tests fail when it is stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from kiln.atomic import atomic_write_text
from kiln.fields import markdown_table
from kiln.jobs.gpus import FIELDS as GPU_FIELDS
from kiln.training.options import FIELDS

API_MD = Path(__file__).resolve().parents[1] / "docs" / "api.md"
START, END = "<!-- model-fields:start (python -m kiln.docs_gen) -->", "<!-- model-fields:end -->"


def render(text: str) -> str:
    """``text`` with the generated section replaced (or appended when missing)."""
    section = f"{START}\n{markdown_table({**FIELDS, **GPU_FIELDS})}{END}"
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text)
    return text.rstrip() + "\n\n## Model form fields\n\n" + section + "\n"


def main(argv: list[str] | None = None) -> int:
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    current = API_MD.read_text()
    wanted = render(current)
    if check:
        if current != wanted:
            print("docs/api.md is stale: run python -m kiln.docs_gen", file=sys.stderr)
            return 1
        return 0
    atomic_write_text(API_MD, wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
