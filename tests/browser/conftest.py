"""Real-browser fixtures: Debian's Chromium driven by Playwright against a real kiln server.

Without Chromium or Playwright the browser tests skip loudly; under CI=true they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TIMEOUT_MS = 60_000  # Playwright's default wait for every action and expect() here


def _root_conftest() -> Any:
    """tests/conftest.py, loaded by path: the name `conftest` may belong to another folder's."""
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    name = "_kiln_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


helpers = _root_conftest()
Server = helpers.Server
ThreadServer = helpers.ThreadServer
start_server = helpers.start_server
stop_server = helpers.stop_server
write_class_folder = helpers.write_class_folder


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None if they can."""
    if importlib.util.find_spec("playwright") is None:
        return "the playwright Python package is not installed (pip install -e '.[test]')"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} is missing (apt-get install chromium, or run `make test` as root)"
    return None


def _unavailable(reason: str) -> None:
    message = f"BROWSER TESTS NOT RUN: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true requires them", pytrace=False)
    print(f"\n*** WARNING: {message} ***", file=sys.stderr)
    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason:
        _unavailable(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:  # a Chromium that will not start counts as missing
            _unavailable(f"{CHROMIUM} did not start: {exc}")
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[ThreadServer]:
    """This test's own kiln over real HTTP, with its scheduler and real workers (on a thread of
    this process: nothing to start, so every test can have a fresh one)."""
    srv = ThreadServer(tmp_path / "kiln-data")
    yield srv
    srv.stop()


def login(page: Any, base_url: str, username: str = "alice") -> None:
    """Log in through the real /login form."""
    from playwright.sync_api import expect

    page.goto(f"{base_url}/login")
    page.fill("#username", username)
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url(f"{base_url}/")
    expect(page.locator("nav .user")).to_have_text(username)


@pytest.fixture
def page(browser: Any, live_server: Server) -> Iterator[Any]:
    """A fresh, logged-in tab; dialogs are accepted and recorded in page.dialogs."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    tab.dialogs = []

    def on_dialog(dialog: Any) -> None:
        tab.dialogs.append((dialog.type, dialog.message))
        dialog.accept()

    tab.on("dialog", on_dialog)
    tab.errors = []
    tab.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    login(tab, live_server.url)
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def make_folder(tmp_path: Path) -> Callable[..., Path]:
    def make(classes: dict[str, int], size: tuple[int, int] = (28, 28), mode: str = "L", seed: int = 0) -> Path:
        root = tmp_path / f"images{len(list(tmp_path.iterdir()))}"
        return write_class_folder(root, classes, size=size, mode=mode, seed=seed)

    return make


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say it once more at the end, where nobody can miss it."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "BROWSER TESTS NOT RUN" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_sep(
            "!", f"{len(skipped)} browser tests skipped: {_missing() or 'Chromium did not start'}", red=True, bold=True
        )


def api_dataset(server: Server, folder: Path, name: str, wait: bool = True) -> str:
    """A 28x28 grey dataset (25 % val) from a class folder, over the API; built unless wait=False."""
    res = server.client.post(
        "/datasets/images/classification.json",
        data={
            "dataset_name": name,
            "folder_train": str(folder),
            "resize_channels": "1",
            "resize_width": "28",
            "resize_height": "28",
            "folder_pct_val": "25",
        },
    )
    assert res.status_code == 200, res.text
    job_id = res.json()["id"]
    if wait:
        assert server.wait_job(job_id, timeout=180)["status"] == "Done"
    return job_id
