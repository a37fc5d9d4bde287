"""`make lab`: examples/lab.ipynb executed headless by examples/run_lab.py against a kiln it starts.

The quick lab (KILN_LAB_QUICK=1: an MNIST subset, 1 epoch) is the slow test of the suite: it runs
every cell, keeps the plots in the executed copy, and its last cell asserts the lab's story
(inverted copies raise dark-on-light accuracy). A failing cell fails the run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
RUNNER = ROOT / "examples" / "run_lab.py"


def _run(env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KILN_URL", "KILN_TOKEN", "KILN_LAB_"))}
    return subprocess.run(
        [sys.executable, str(RUNNER)], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=timeout
    )


def _outputs(notebook: nbformat.NotebookNode, kind: str) -> list[nbformat.NotebookNode]:
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


@pytest.mark.slow
def test_quick_lab_runs_every_cell_and_tells_the_story(tmp_path: Path) -> None:
    out = tmp_path / "lab.executed.ipynb"
    env = {
        "KILN_LAB_QUICK": "1",
        "KILN_LAB_OUT": str(out),
        "KILN_LAB_MNIST": str(tmp_path / "mnist"),  # written there: the quick subset
        "KILN_LAB_DATA_DIR": str(tmp_path / "data"),
    }
    run = _run(env, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert "the quick lab passed" in run.stdout
    executed = nbformat.read(out, as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code) and not _outputs(executed, "error")
    images = [o for o in _outputs(executed, "display_data") if "image/png" in o.data]
    assert len(images) >= 4  # curves, curves by time, the stresses, accuracy bars, top-5 images
    text = "".join(o.text for o in _outputs(executed, "stream") if o.name == "stdout")
    story = re.search(r"dark on light: ([\d.]+) % without inverted copies, ([\d.]+) % with them", text)
    assert story and float(story[2]) >= float(story[1]) + 20, text[-2000:]
    assert re.search(r"^    \d : \d+\.\d\d %$", text, re.MULTILINE)  # top-5 lines as in "8 : 99.69 %"
    assert not (tmp_path / "data").exists()  # the scratch data dir is removed


def test_a_failing_cell_fails_the_run_and_is_kept(tmp_path: Path) -> None:
    notebook = tmp_path / "broken.ipynb"
    cells = [new_code_cell("print('first cell ran')"), new_code_cell("raise ValueError('this cell breaks')")]
    nbformat.write(new_notebook(cells=cells), notebook)
    (tmp_path / "mnist" / "train").mkdir(parents=True)
    (tmp_path / "mnist" / "test").mkdir()
    out = tmp_path / "out" / "broken.executed.ipynb"
    env = {
        "KILN_LAB_NOTEBOOK": str(notebook),
        "KILN_LAB_OUT": str(out),
        "KILN_LAB_MNIST": str(tmp_path / "mnist"),
        "KILN_URL": "http://127.0.0.1:9",  # given: no server is started (this notebook needs none)
    }
    run = _run(env, timeout=300)
    assert run.returncode == 1 and "this cell breaks" in run.stderr and "lab FAILED" in run.stdout
    executed = nbformat.read(out, as_version=4)
    assert executed.cells[0].outputs[0].text == "first cell ran\n"
    assert _outputs(executed, "error")[0].evalue == "this cell breaks"
