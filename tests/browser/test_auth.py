"""Accounts in a real browser: the password login, its error, the account page's token, the
admin's Users page, and logging out (a POST with its CSRF field, from the top bar)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.accounts import Accounts
from tests.browser.conftest import TIMEOUT_MS, ThreadServer

PASSWORD = "correct horse"


@pytest.fixture
def accounts_server(tmp_path: Path) -> Iterator[ThreadServer]:
    data = tmp_path / "kiln-data"
    acc = Accounts(data / "kiln.db")
    acc.add_user("root", PASSWORD, is_admin=True)
    acc.add_user("alice", PASSWORD)
    acc.close()
    srv = ThreadServer(data, scheduler=False, auth="accounts")
    yield srv
    srv.stop()


@pytest.fixture
def tab(browser: Any) -> Iterator[Any]:
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())
    try:
        yield page
    finally:
        context.close()


def log_in(page: Any, url: str, name: str, password: str) -> None:
    page.fill("#username", name)
    page.fill("#password", password)
    page.click("form[action='/login'] button[type=submit]")


def test_password_login_token_and_logout(tab: Any, accounts_server: ThreadServer) -> None:
    from playwright.sync_api import expect

    url = accounts_server.url
    tab.goto(f"{url}/")
    tab.wait_for_url(f"{url}/login?next=/")  # with accounts every page needs a login
    log_in(tab, url, "alice", "not the password")
    expect(tab.locator("#login-error")).to_have_text("Wrong username or password.")
    log_in(tab, url, "alice", PASSWORD)
    tab.wait_for_url(f"{url}/")
    expect(tab.locator("nav .user")).to_have_text("alice")
    expect(tab.locator("#nav-users")).to_have_count(0)
    tab.click("nav .user")
    tab.wait_for_url(f"{url}/account")
    tab.fill("input[name=label]", "notebook")
    tab.click("form[action='/account/tokens'] button[type=submit]")
    expect(tab.locator("#new-token code")).to_have_text(re.compile(r"^kiln_\S{40,}$"))
    expect(tab.locator("#tokens-table tbody tr")).to_have_count(1)
    tab.click("#tokens-table button")  # revoke
    tab.wait_for_url(f"{url}/account")
    expect(tab.locator("#tokens-table tbody tr")).to_have_count(0)
    tab.click("#nav-logout")
    tab.wait_for_url(f"{url}/login?next=/")
    expect(tab.locator("nav")).to_contain_text("Log in")


def test_admin_adds_and_deletes_a_user(tab: Any, accounts_server: ThreadServer) -> None:
    from playwright.sync_api import expect

    url = accounts_server.url
    tab.goto(f"{url}/login")
    log_in(tab, url, "root", PASSWORD)
    tab.wait_for_url(f"{url}/")
    tab.click("#nav-users")
    tab.wait_for_url(f"{url}/users")
    tab.fill("#add-user input[name=username]", "carol")
    tab.fill("#add-user input[name=password]", PASSWORD)
    tab.click("#add-user button[type=submit]")
    expect(tab.locator("#users-table tr[data-name=carol]")).to_be_visible()
    tab.click("#users-table tr[data-name=carol] button")
    expect(tab.locator("#users-table tr[data-name=carol]")).to_have_count(0)
