"""kiln's pages under its own Content-Security-Policy and CSRF tokens, in a real browser; and a page
of another origin that tries to post to kiln with the user's cookies (kiln/web/security.py)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Server
from .test_pages import api_dataset, expect

pytestmark = pytest.mark.browser

RECORD_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def test_pages_run_under_the_csp(page: Any, live_server: Server, make_folder: Callable[..., Path]) -> None:
    page.context.add_init_script(RECORD_CSP)
    dataset_id = api_dataset(live_server, make_folder({"a": 8, "b": 8}), "shapes")
    for path, ready in [
        ("/", "#datasets-table tbody tr"),
        ("/datasets/images/classification/new", "#dataset-form"),
        ("/models/images/classification/new", "#lr-preview .main-svg"),  # Plotly draws the LR preview
        (f"/datasets/{dataset_id}", "#distribution .main-svg"),  # and the class distribution
    ]:
        page.goto(f"{live_server.url}{path}")
        expect(page.locator(ready).first).to_be_visible()
        assert page.evaluate("window.__csp") == [], path
        assert page.errors == [], path
    # a fetch that changes something carries the page's token: rename the dataset in place
    page.fill("#job-name", "renamed in the browser")
    page.locator("#job-name").dispatch_event("change")
    expect(page.locator("#title-name")).to_have_text("renamed in the browser")
    assert page.dialogs == [], page.dialogs


@pytest.fixture
def other_site(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Serve an HTML page from another origin (another port of 127.0.0.1); returns its URL."""
    root = tmp_path / "elsewhere"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def publish(html: str) -> str:
        (root / "page.html").write_text(html)
        return f"http://127.0.0.1:{server.server_address[1]}/page.html"

    yield publish
    server.shutdown()
    server.server_close()


def test_another_site_cannot_post_to_kiln(page: Any, live_server: Server, other_site: Callable[[str], str]) -> None:
    """The logged-in user opens another site whose form posts to kiln: the browser sends the session
    cookie (same site: only the port differs), and kiln refuses the request by its Origin."""
    url = other_site(f'<form method="post" action="{live_server.url}/logout"><button id="go">go</button></form>')
    page.goto(url)
    page.click("#go")
    expect(page.locator("body")).to_contain_text("Cross-site request refused")
    page.goto(f"{live_server.url}/")
    expect(page.locator("nav .user")).to_have_text("alice")  # still logged in: the logout was refused
