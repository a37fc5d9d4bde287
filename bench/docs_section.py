"""Write one '## <heading>' section of docs/benchmarks.md, leaving the other sections as they are."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run as a script

from kiln.atomic import atomic_write_text

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def replace_section(heading: str, section: str, path: Path = DOC) -> Path:
    """Replace (or append) the section that starts with '## heading'; written atomically."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    start = doc.find(f"\n## {heading}")
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = doc.find("\n## ", start + 1)
        doc = doc[:start] + "\n" + section.rstrip("\n") + "\n" + (doc[end:] if end >= 0 else "")
    return atomic_write_text(path, doc)
