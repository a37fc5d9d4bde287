"""Write one '## <heading>' section of docs/benchmarks.md, leaving the other sections as they are."""
from __future__ import annotations

import os
from pathlib import Path

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
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(doc)
    os.replace(tmp, path)
    return path
