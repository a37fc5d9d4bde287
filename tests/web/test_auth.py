"""Who may change what: every mutating route against every kind of caller, in both auth modes.

The routes come from the app itself (every POST/PUT/DELETE route but /login and /logout), so a new
route fails `test_every_mutating_route_has_a_call` until CALLS says how to call it, and is then
covered by the whole matrix. Callers: nobody, another user, the owner, an admin, the owner's API
token, forged cookies (a hand-made `username=alice`, a tampered signed one, one signed with
another secret), and a `username=alice` form field or query parameter (ignored).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kiln import accounts
from kiln.accounts import Accounts
from kiln.config import Settings
from kiln.store import Store
from kiln.web.app import create_app
from tests.conftest import write_class_folder

BASE = "http://127.0.0.1"  # a Host kiln answers to
PASSWORD = "correct horse"
CHANGING = {"POST", "PUT", "DELETE", "PATCH"}
OPEN = {"/login", "/logout"}


@pytest.fixture(scope="module", autouse=True)
def cheap_hashes() -> Iterator[None]:
    """argon2id still, with small costs: hundreds of logins in a test run (one test checks the real ones)."""
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    saved = accounts._hasher
    accounts._hasher = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))
    yield
    accounts._hasher = saved


def client(app: Any, cookies: dict[str, str] | None = None, token: str | None = None) -> TestClient:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return TestClient(app, base_url=BASE, follow_redirects=False, cookies=cookies, headers=headers)


def login(app: Any, name: str, password: str = "") -> TestClient:
    c = client(app)
    res = c.post("/login", data={"username": name, **({"password": password} if password else {})})
    assert res.status_code == 302, (name, res.status_code, res.text[:300])
    return c


# -- the routes and how to call them ---------------------------------------------------------------
def mutating_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every state-changing route of the app, /login and /logout excepted."""

    def walk(routes: list[Any]) -> Iterator[Any]:
        for r in routes:
            inner = getattr(r, "original_router", None) or (None if hasattr(r, "path") else getattr(r, "router", None))
            if inner is not None:
                yield from walk(inner.routes)
            else:
                yield r

    found = set()
    for r in walk(app.routes):
        for method in set(getattr(r, "methods", None) or ()) & CHANGING:
            if r.path not in OPEN:
                found.add((method, r.path))
    return sorted(found)


@dataclass
class World:
    """One app with its users and a folder of images; each call makes its own target jobs."""

    app: Any
    settings: Settings
    store: Store
    folder: Path
    mode: str
    tokens: dict[str, str] = field(default_factory=dict)

    def job(self, type_: str = "dataset", owner: str | None = "alice", status: str = "Done", **kw: Any) -> str:
        params = {"spec": {"resize_width": 28, "resize_height": 28, "resize_channels": 1}}  # LeNet's size
        if type_ == "model":
            params = {"config": {"train_epochs": 1}, "form": {}}
        job_id = self.store.create_job(type_, f"{type_} of {owner}", params, owner, **kw)
        (self.settings.jobs_dir / job_id).mkdir(parents=True, exist_ok=True)
        if status != "Initialized":
            self.store.set_status(job_id, status)
        return job_id


@dataclass
class Call:
    """How to call one route. `kind`: who may: 'owner' (owners and admins), 'user' (anyone logged in),
    'admin', 'account' (a user with an account), 'token' (revoking one: its user, admins).
    `prepare` makes the target and returns the path's values and the form; `changed` says whether
    the call did its work; `refused`: the status of a refusal that is not a 401 (the batch routes
    answer DIGITS' 400 that lists what was not done)."""

    kind: str
    prepare: Callable[[World, str], tuple[dict[str, str], dict[str, Any]]]
    changed: Callable[[World, dict[str, str]], bool] | None = None
    refused: str = "403"


def _gone(w: World, v: dict[str, str]) -> bool:
    return w.store.get_job(v["job_id"]) is None


def _status_is(status: str) -> Callable[[World, dict[str, str]], bool]:
    return lambda w, v: (job := w.store.get_job(v["job_id"])) is not None and job.status == status


def _one(type_: str, status: str) -> Callable[[World, str], tuple[dict[str, str], dict[str, Any]]]:
    return lambda w, owner: ({"job_id": w.job(type_, owner, status)}, {})


def _many(status: str, form: dict[str, Any] | None = None):
    def prepare(w: World, owner: str) -> tuple[dict[str, str], dict[str, Any]]:
        job_id = w.job("dataset", owner, status)
        return {"job_id": job_id}, {"job_ids[]": [job_id], **(form or {})}

    return prepare


def _dataset_form(w: World, owner: str) -> tuple[dict[str, str], dict[str, Any]]:
    return {}, {"dataset_name": "d", "folder_train": str(w.folder), "resize_width": "8", "resize_height": "8"}


def _model_form(w: World, owner: str) -> tuple[dict[str, str], dict[str, Any]]:
    dataset = w.job("dataset", owner, "Done")
    return {}, {"dataset": dataset, "model_name": "m", "standard_networks": "lenet", "train_epochs": "1"}


def _classify_form(w: World, owner: str) -> tuple[dict[str, str], dict[str, Any]]:
    return {}, {"job_id": w.job("model", owner, "Done"), "image_path": str(next(w.folder.rglob("*.png")))}


def _evaluate_form(w: World, owner: str) -> tuple[dict[str, str], dict[str, Any]]:
    """A model with a (never read) epoch-1 snapshot, evaluated on the image folder."""
    model = w.job("model", owner, "Done")
    for suffix in ("json", "safetensors"):
        (w.settings.jobs_dir / model / f"snapshot_1.{suffix}").write_text("{}")
    return {}, {"job_id": model, "image_folder": str(w.folder)}


def _new_user(w: World, owner: str) -> tuple[dict[str, str], dict[str, Any]]:
    return {}, {"username": f"u{os.urandom(4).hex()}", "password": PASSWORD}


def _existing_user(w: World, owner: str) -> tuple[dict[str, str], dict[str, Any]]:
    name = f"u{os.urandom(4).hex()}"
    Accounts(w.settings.db_path).add_user(name, PASSWORD)
    return {"name": name}, {}


def _own_token(w: World, owner: str) -> tuple[dict[str, str], dict[str, Any]]:
    """A token of alice's (on loopback alice has no account: root's)."""
    token_id, _ = Accounts(w.settings.db_path).create_token(owner if w.mode == "accounts" else "root", "to revoke")
    return {"token_id": str(token_id)}, {}


def _token_gone(w: World, v: dict[str, str]) -> bool:
    return all(str(t["id"]) != v["token_id"] for t in Accounts(w.settings.db_path).list_tokens())


PREFIXES = (
    ("jobs", "dataset"),
    ("datasets", "dataset"),
    ("models", "model"),
    ("evaluations", "evaluation"),
    ("pretrained_models", "pretrained_model"),
)
CALLS: dict[tuple[str, str], Call] = {
    ("PUT", "/jobs/{job_id}"): Call(
        "owner",
        lambda w, o: ({"job_id": w.job("dataset", o)}, {"job_name": "renamed"}),
        lambda w, v: w.store.get_job(v["job_id"]).name == "renamed",
    ),
    **{
        ("POST", f"/{prefix}/{{job_id}}/abort"): Call("owner", _one(type_, "Initialized"), _status_is("Aborted"))
        for prefix, type_ in PREFIXES
    },
    **{
        ("POST", f"/{prefix}/{{job_id}}/resume"): Call("owner", _one(type_, "Aborted"), _status_is("Initialized"))
        for prefix, type_ in PREFIXES
    },
    **{("DELETE", f"/{prefix}/{{job_id}}"): Call("owner", _one(type_, "Done"), _gone) for prefix, type_ in PREFIXES},
    ("DELETE", "/jobs"): Call("owner", _many("Done"), _gone, refused="400"),
    ("POST", "/abort_jobs"): Call("owner", _many("Initialized"), _status_is("Aborted"), refused="400"),
    ("POST", "/group"): Call(
        "owner", _many("Done", {"group_name": "g"}), lambda w, v: w.store.get_job(v["job_id"]).group_name == "g"
    ),
    ("POST", "/clone/{job_id}"): Call("user", _one("dataset", "Done")),
    ("POST", "/datasets/images/classification"): Call("user", _dataset_form),
    ("POST", "/datasets/images/classification.json"): Call("user", _dataset_form),
    ("POST", "/models/images/classification"): Call("user", _model_form),
    ("POST", "/models/images/classification.json"): Call("user", _model_form),
    ("POST", "/models/visualize-lr"): Call("user", lambda w, o: ({}, {"learning_rate": "0.01", "train_epochs": "2"})),
    ("POST", "/models/customize"): Call("user", lambda w, o: ({}, {"network": "lenet"})),
    ("POST", "/models/customize.json"): Call("user", lambda w, o: ({}, {"network": "lenet"})),
    ("POST", "/models/visualize-network"): Call("user", lambda w, o: ({}, {"standard_networks": "lenet"})),
    ("POST", "/models/visualize-network.json"): Call("user", lambda w, o: ({}, {"standard_networks": "lenet"})),
    # reads (POST as DIGITS' forms post them): anyone logged in; this model has no snapshot, a 404
    ("POST", "/models/{job_id}/download"): Call("user", lambda w, o: ({"job_id": w.job("model", o)}, {})),
    ("POST", "/models/{job_id}/download.{ext}"): Call(
        "user", lambda w, o: ({"job_id": w.job("model", o), "ext": "zip"}, {})
    ),
    ("POST", "/models/{job_id}/export.{ext}"): Call(
        "user", lambda w, o: ({"job_id": w.job("model", o), "ext": "onnx"}, {})
    ),
    ("POST", "/pretrained_models/{job_id}/download"): Call(
        "user", lambda w, o: ({"job_id": w.job("pretrained_model", o)}, {})
    ),
    ("POST", "/pretrained_models/{job_id}/download.{ext}"): Call(
        "user", lambda w, o: ({"job_id": w.job("pretrained_model", o), "ext": "zip"}, {})
    ),
    # pretrained models: no archive / no file / no snapshot: a 400 or 404 for whoever may ask
    ("POST", "/pretrained_models/upload_archive"): Call("user", lambda w, o: ({}, {})),
    ("POST", "/pretrained_models/new"): Call("user", lambda w, o: ({}, {"job_name": "x"})),
    ("POST", "/models/{job_id}/to_pretrained"): Call("user", lambda w, o: ({"job_id": w.job("model", o)}, {})),
    ("POST", "/store/push"): Call("user", lambda w, o: ({}, {"id": "nothing-here"})),
    ("POST", "/models/images/classification/evaluate"): Call("user", _evaluate_form),
    ("POST", "/models/images/classification/evaluate.json"): Call("user", _evaluate_form),
    ("POST", "/models/images/classification/classify_one"): Call("user", _classify_form),
    ("POST", "/models/images/classification/classify_one.json"): Call("user", _classify_form),
    ("POST", "/models/images/classification/classify_many"): Call("user", _classify_form),
    ("POST", "/models/images/classification/classify_many.json"): Call("user", _classify_form),
    ("POST", "/users"): Call("admin", _new_user),
    ("DELETE", "/users/{name}"): Call("admin", _existing_user),
    ("POST", "/account/tokens"): Call("account", lambda w, o: ({}, {"label": "script"})),
    ("DELETE", "/account/tokens/{token_id}"): Call("token", _own_token, _token_gone),
    ("POST", "/account/password"): Call(
        "account", lambda w, o: ({}, {"current_password": "not it", "new_password": "whatever123"})
    ),
}


def _app_routes() -> list[tuple[str, str]]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return mutating_routes(create_app(Settings.from_env(data_dir=tmp), run_scheduler=False))


ROUTES = _app_routes()


def test_every_mutating_route_has_a_call() -> None:
    """A new route that changes something must say here how it is called: then the matrix covers it."""
    missing = [r for r in ROUTES if r not in CALLS]
    assert not missing, f"add these routes to CALLS in {__file__}: {missing}"
    assert ROUTES, "no mutating routes found: the route walk is broken"


# -- the matrix --------------------------------------------------------------------------------------
def make_world(root: Path, mode: str) -> World:
    data = root / "data"
    settings = Settings.from_env(data_dir=data, auth=mode, data_roots=str(root))
    folder = write_class_folder(root / "imgs", {"cat": 3, "dog": 3}, size=(8, 8))
    acc = Accounts(settings.db_path)
    acc.add_user("root", PASSWORD, is_admin=True)
    tokens = {}
    if mode == "accounts":
        acc.add_user("alice", PASSWORD)
        acc.add_user("bob", PASSWORD)
        tokens["alice"] = acc.create_token("alice", "tests")[1]
    acc.close()
    app = create_app(settings, run_scheduler=False)
    return World(app, settings, Store(settings.db_path), folder, mode, tokens)


@pytest.fixture(scope="module", params=["accounts", "loopback"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = make_world(tmp_path_factory.mktemp(f"auth-{request.param}"), request.param)
    yield w
    w.store.close()


@pytest.fixture(scope="module")
def clients(world: World) -> dict[str, TestClient]:
    """One client per caller. With accounts everyone logs in with a password; on loopback alice and
    bob log in with a name alone (DIGITS), root (an account) with its password."""
    pw = PASSWORD if world.mode == "accounts" else ""
    alice = login(world.app, "alice", pw)
    real = alice.cookies["kiln_session"]
    tampered = real[:-3] + ("AAA" if not real.endswith("AAA") else "BBB")
    from kiln.accounts import SessionSigner

    other_secret = SessionSigner(b"x" * 64).dumps("made-up-session")
    return {
        "anonymous": client(world.app),
        "other": login(world.app, "bob", pw),
        "owner": alice,
        "admin": login(world.app, "root", PASSWORD),
        **({"token": client(world.app, token=world.tokens["alice"])} if "alice" in world.tokens else {}),
        "plain cookie": client(world.app, cookies={"username": "alice"}),
        "tampered cookie": client(world.app, cookies={"kiln_session": tampered, "username": "alice"}),
        "other secret": client(world.app, cookies={"kiln_session": other_secret}),
    }


CALLERS = ["anonymous", "other", "owner", "admin", "token", "plain cookie", "tampered cookie", "other secret"]


def expected(kind: str, caller: str, mode: str) -> str:
    """'ok', 401, 403 or 404: what the route answers this caller."""
    if caller in ("anonymous", "plain cookie", "tampered cookie", "other secret"):
        return "401"
    if kind == "token":  # someone else's token is not found (on loopback alice has none)
        return "ok" if caller in ("admin", "token") or (caller == "owner" and mode == "accounts") else "404"
    if kind == "user":
        return "ok"
    if kind == "admin":
        return "ok" if caller == "admin" else "403"
    if kind == "account":  # a username-only login (loopback) has no account to manage
        return "403" if mode == "loopback" and caller in ("other", "owner") else "ok"
    return "403" if caller == "other" else "ok"


def send(c: TestClient, method: str, path: str, values: dict[str, str], form: dict[str, Any], **kw: Any) -> Any:
    url = path.format(**values)
    return c.request(method, url, data=form or None, **kw)


def check_answer(res: Any, want: str, what: str) -> None:
    if want == "ok":
        assert res.status_code < 500 and res.status_code not in (401, 403), (what, res.status_code, res.text[:300])
    else:
        assert res.status_code == int(want), (what, res.status_code, res.text[:300])
        types = {"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound"}
        if res.headers["content-type"].startswith("application/json"):
            assert res.json()["error"]["type"] == types[want], what
        else:  # a browser's form post: the error page
            assert f"Error {want}" in res.text, what


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
def test_who_may_call(world: World, clients: dict[str, TestClient], route: tuple[str, str], caller: str) -> None:
    if caller not in clients:
        pytest.skip("API tokens belong to accounts; on loopback alice has none")
    call = CALLS[route]
    owner = "root" if call.kind == "admin" else "alice"
    values, form = call.prepare(world, owner)
    want = expected(call.kind, caller, world.mode)
    want = call.refused if want == "403" else want
    res = send(clients[caller], *route, values, form)
    check_answer(res, want, f"{route} as {caller} ({world.mode})")
    if call.changed is not None:
        assert call.changed(world, values) == (want == "ok"), f"{route} as {caller}: effect does not match {want}"


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r[0]} {r[1]}")
def test_a_username_field_or_query_is_ignored(world: World, clients: dict[str, TestClient], route) -> None:
    """`username=alice` in the form and the query: nobody stays nobody, bob stays bob."""
    call = CALLS[route]
    owner = "root" if call.kind == "admin" else "alice"
    for caller in ("anonymous", "other"):
        values, form = call.prepare(world, owner)
        form = {**form, "username": owner}
        res = send(clients[caller], *route, values, form, params={"username": owner})
        want = expected(call.kind, caller, world.mode)
        want = call.refused if want == "403" else want
        check_answer(res, want, f"{route} as {caller} with username={owner}")
        if call.changed is not None:
            assert call.changed(world, values) == (want == "ok")


def test_a_job_made_by_bob_with_a_username_field_is_bobs(world: World, clients: dict[str, TestClient]) -> None:
    _, form = _dataset_form(world, "bob")
    res = clients["other"].post("/datasets/images/classification.json", data={**form, "username": "alice"})
    assert res.status_code == 200
    assert world.store.get_job(res.json()["id"]).username == "bob"


def test_jobs_without_an_owner(world: World, clients: dict[str, TestClient]) -> None:
    """`kiln demo` makes a job without an owner: anyone's on loopback, an admin's with accounts."""
    job_id = world.job("dataset", None)
    res = clients["other"].put(f"/jobs/{job_id}", data={"job_notes": "mine now?"})
    assert res.status_code == (200 if world.mode == "loopback" else 403)
    assert clients["admin"].put(f"/jobs/{job_id}", data={"job_notes": "admin"}).status_code == 200


# -- reading, in each mode ---------------------------------------------------------------------------
def test_pages_need_a_login_with_accounts_only(world: World, clients: dict[str, TestClient]) -> None:
    anon = clients["anonymous"]
    if world.mode == "loopback":
        assert anon.get("/index.json").status_code == 200
        assert anon.get("/").status_code == 200
    else:
        res = anon.get("/index.json")
        assert res.status_code == 401 and res.json()["error"]["type"] == "Unauthorized"
        assert anon.get("/").headers["location"] == "/login?next=/"
        assert clients["plain cookie"].get("/index.json").status_code == 401
        assert clients["token"].get("/index.json").status_code == 200
    assert anon.get("/login").status_code == 200
    assert clients["owner"].get("/index.json").status_code == 200


def test_a_wrong_token_is_a_401_even_for_reading(world: World) -> None:
    for token in ("kiln_nope", "garbage", world.tokens.get("alice", "kiln_x") + "x"):
        res = client(world.app, token=token).get("/index.json")
        assert res.status_code == 401 and "token" in res.json()["error"]["message"]


# -- logging in and out ------------------------------------------------------------------------------
@pytest.fixture
def accounts_world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path, "accounts")
    yield w
    w.store.close()


@pytest.fixture
def loopback_world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path, "loopback")
    yield w
    w.store.close()


def test_login_failures_say_why_in_kilns_shape(accounts_world: World) -> None:
    c = client(accounts_world.app)
    json_ = {"Accept": "application/json"}
    cases = [
        ({"username": "alice", "password": "wrong password"}, 401, "Wrong username or password."),
        ({"username": "nobody", "password": PASSWORD}, 401, "Wrong username or password."),
        ({"username": "alice"}, 401, "Enter your password."),
        ({"username": "Bad Name", "password": PASSWORD}, 400, "lowercase letter"),
    ]
    for form, status, message in cases:
        res = c.post("/login", data=form, headers=json_)
        assert res.status_code == status and message in res.json()["error"]["message"], form
        assert res.json()["error"]["type"] == ("Unauthorized" if status == 401 else "BadRequest")
        assert "kiln_session" not in res.cookies
        page = c.post("/login", data=form)  # the HTML form: the page again, with the message
        assert page.status_code == status and 'id="login-error"' in page.text and 'id="password"' in page.text
    ok = c.post("/login", data={"username": "alice", "password": PASSWORD}, headers=json_)
    assert ok.status_code == 200 and ok.json() == {"username": "alice", "is_admin": False}


def test_failed_logins_lock_that_name_for_a_while(accounts_world: World) -> None:
    """Five wrong passwords for alice: the next try is a 429 before any password is checked, even
    with the right one; bob logs in as usual; once the window has passed, alice does too."""
    from kiln.login_throttle import LIMIT, WINDOW

    w, json_ = accounts_world, {"Accept": "application/json"}
    c = client(w.app)
    for _ in range(LIMIT):
        assert c.post("/login", data={"username": "alice", "password": "guess"}, headers=json_).status_code == 401
    locked = c.post("/login", data={"username": "alice", "password": PASSWORD}, headers=json_)
    error = locked.json()["error"]
    assert locked.status_code == 429 and error["type"] == "TooManyRequests" and "kiln_session" not in locked.cookies
    assert error["message"].startswith("Too many failed logins as alice: try again in ")
    page = c.post("/login", data={"username": "alice", "password": PASSWORD})
    assert page.status_code == 429 and 'id="login-error"' in page.text and "Too many failed logins" in page.text
    login(w.app, "bob", PASSWORD)  # another name is not affected
    throttle = w.app.state.login_throttle
    later = throttle.clock() + WINDOW + 1
    throttle.clock = lambda: later
    login(w.app, "alice", PASSWORD)


def test_the_session_cookie_is_signed_httponly_lax(accounts_world: World) -> None:
    res = client(accounts_world.app).post("/login", data={"username": "alice", "password": PASSWORD})
    cookie = res.headers["set-cookie"]
    assert cookie.startswith("kiln_session=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "alice" not in cookie.split(";")[0]  # a random session id, signed: no name to edit
    assert "Secure" not in cookie  # plain http here; behind a TLS proxy it is Secure
    https = TestClient(accounts_world.app, base_url="https://127.0.0.1", follow_redirects=False)
    secure = https.post("/login", data={"username": "alice", "password": PASSWORD}).headers["set-cookie"]
    assert "Secure" in secure


def test_logout_ends_the_session_even_for_a_copied_cookie(accounts_world: World) -> None:
    alice = login(accounts_world.app, "alice", PASSWORD)
    copy = client(accounts_world.app, cookies={"kiln_session": alice.cookies["kiln_session"]})
    assert copy.get("/account", headers={"Accept": "application/json"}).status_code == 200
    res = alice.post("/logout")
    assert res.status_code == 302 and 'kiln_session=""' in res.headers["set-cookie"]
    assert copy.get("/account", headers={"Accept": "application/json"}).status_code == 401
    assert alice.get("/logout").status_code == 302  # nobody to log out: back home


def test_a_new_password_ends_every_session(accounts_world: World) -> None:
    alice = login(accounts_world.app, "alice", PASSWORD)
    json_ = {"Accept": "application/json"}
    wrong = alice.post("/account/password", data={"current_password": "nope", "new_password": "n" * 9}, headers=json_)
    assert wrong.status_code == 400 and wrong.json()["error"]["message"] == "The current password is wrong."
    short = alice.post("/account/password", data={"current_password": PASSWORD, "new_password": "short"}, headers=json_)
    assert short.status_code == 400 and "at least 8" in short.json()["error"]["message"]
    res = alice.post("/account/password", data={"current_password": PASSWORD, "new_password": "n" * 9}, headers=json_)
    assert res.status_code == 200
    assert alice.get("/account", headers=json_).status_code == 401
    login(accounts_world.app, "alice", "n" * 9)


def test_deleting_a_user_ends_their_sessions_and_tokens(accounts_world: World) -> None:
    w = accounts_world
    alice = login(w.app, "alice", PASSWORD)
    root = login(w.app, "root", PASSWORD)
    assert root.delete("/users/alice").status_code == 200
    assert alice.post("/abort_jobs", data={"job_ids[]": ["x"]}).status_code == 401
    assert client(w.app, token=w.tokens["alice"]).get("/index.json").status_code == 401
    last = root.delete("/users/root")
    assert last.status_code == 409 and "last admin" in last.json()["error"]["message"]


def test_admin_pages(accounts_world: World) -> None:
    root = login(accounts_world.app, "root", PASSWORD)
    page = root.get("/users")
    assert page.status_code == 200 and 'id="users-table"' in page.text and "alice" in page.text
    assert 'id="nav-users"' in page.text
    made = root.post("/users", data={"username": "carol", "password": PASSWORD, "is_admin": "on"})
    assert made.status_code == 302
    carol = login(accounts_world.app, "carol", PASSWORD)
    assert [u["name"] for u in carol.get("/users.json").json()["users"]] == ["alice", "bob", "carol", "root"]
    again = root.post(
        "/users", data={"username": "carol", "password": PASSWORD}, headers={"Accept": "application/json"}
    )
    assert again.status_code == 409 and again.json()["error"]["message"] == "User carol already exists."
    alice = login(accounts_world.app, "alice", PASSWORD)
    assert alice.get("/users").status_code == 403 and 'id="nav-users"' not in alice.get("/").text


# -- tokens ------------------------------------------------------------------------------------------
def test_tokens_drive_the_json_api(accounts_world: World) -> None:
    w = accounts_world
    alice = login(w.app, "alice", PASSWORD)
    made = alice.post("/account/tokens", data={"label": "notebook"}, headers={"Accept": "application/json"})
    assert made.status_code == 201
    token = made.json()["token"]
    stored = w.store.db.execute("SELECT hash FROM tokens WHERE id=?", (made.json()["id"],)).fetchone()[0]
    assert token not in stored and len(stored) == 64  # only a sha256 of it
    script = client(w.app, token=token)
    _, form = _dataset_form(w, "alice")
    res = script.post("/datasets/images/classification.json", data=form)
    assert res.status_code == 200 and w.store.get_job(res.json()["id"]).username == "alice"
    assert script.put(f"/jobs/{res.json()['id']}", data={"job_name": "by token"}).status_code == 200
    assert script.get(f"/datasets/{res.json()['id']}.json").json()["name"] == "by token"
    assert "kiln_session" not in res.cookies
    assert alice.delete(f"/account/tokens/{made.json()['id']}").status_code == 200
    assert script.get("/index.json").status_code == 401


# -- loopback: DIGITS' username-only login ---------------------------------------------------------
def test_digits_curl_session_on_loopback(loopback_world: World) -> None:
    """curl localhost:5000/login -c cookie -XPOST -F username=fred; then -b cookie (multipart, as -F sends)."""
    w = loopback_world
    fred = client(w.app)
    res = fred.post("/login", files={"username": (None, "fred")})
    assert res.status_code == 302 and res.headers["location"] == "/"
    _, form = _dataset_form(w, "fred")
    made = fred.post("/datasets/images/classification.json", files={k: (None, v) for k, v in form.items()})
    assert made.status_code == 200 and w.store.get_job(made.json()["id"]).username == "fred"
    assert fred.delete(f"/datasets/{made.json()['id']}").status_code == 200


def test_on_loopback_an_account_name_still_needs_its_password(loopback_world: World) -> None:
    c = client(loopback_world.app)
    res = c.post("/login", data={"username": "root"}, headers={"Accept": "application/json"})
    assert res.status_code == 401 and "has an account" in res.json()["error"]["message"]
    assert 'id="password"' in c.get("/login").text  # accounts exist: the field is offered
    root = login(loopback_world.app, "root", PASSWORD)
    assert root.get("/users.json").status_code == 200


def test_a_username_only_session_stops_when_the_name_gets_an_account(loopback_world: World) -> None:
    dave = login(loopback_world.app, "dave")
    assert dave.post("/abort_jobs", data={"job_ids[]": ["x"]}).status_code == 400  # logged in (nothing aborted)
    Accounts(loopback_world.settings.db_path).add_user("dave", PASSWORD)
    assert dave.post("/abort_jobs", data={"job_ids[]": ["x"]}).status_code == 401


def test_username_only_sessions_do_not_work_with_accounts(tmp_path: Path) -> None:
    """A session made on loopback by name alone is refused once the same data dir runs with accounts."""
    loop = make_world(tmp_path, "loopback")
    cookie = login(loop.app, "alice").cookies["kiln_session"]
    loop.store.close()
    settings = Settings.from_env(data_dir=tmp_path / "data", auth="accounts")
    app = create_app(settings, run_scheduler=False)
    res = client(app, cookies={"kiln_session": cookie}).post("/abort_jobs", data={"job_ids[]": ["x"]})
    assert res.status_code == 401


# -- starting: the decision, the secret ---------------------------------------------------------------
def test_auth_mode_follows_the_address() -> None:
    assert Settings(host="127.0.0.1").auth_mode == "loopback"
    assert Settings(host="::1").auth_mode == "loopback"
    assert Settings(host="localhost").auth_mode == "loopback"
    assert Settings(host="0.0.0.0").auth_mode == "accounts"
    assert Settings(host="10.1.2.3").auth_mode == "accounts"
    assert Settings(host="0.0.0.0", auth="loopback").auth_mode == "loopback"
    assert Settings(host="127.0.0.1", auth="accounts").auth_mode == "accounts"


def test_startup_refuses_the_network_without_accounts(tmp_path: Path) -> None:
    from kiln.accounts import startup_problems

    def problems(**kw: Any) -> list[str]:
        return startup_problems(Settings.from_env(data_dir=tmp_path / "data", data_roots=str(tmp_path), **kw))

    assert problems() == []  # loopback: username-only login, nothing to set up
    (none,) = problems(host="0.0.0.0")
    assert "kiln users add NAME --admin" in none and "0.0.0.0" in none
    (loop,) = problems(host="0.0.0.0", auth="loopback")
    assert "only allowed while kiln listens on" in loop
    assert "kiln users add NAME --admin" in problems(auth="accounts")[0]
    assert "KILN_AUTH must be one of" in problems(auth="ldap")[0]
    Accounts(tmp_path / "data" / "kiln.db").add_user("root", PASSWORD, is_admin=True)
    assert problems(host="0.0.0.0") == [] and problems(auth="accounts") == []


def kiln_cli(*args: str, data_dir: Path, stdin: str | None = None, timeout: float = 60) -> Any:
    env = {**os.environ, "KILN_DATA_DIR": str(data_dir)}
    env.pop("KILN_AUTH", None)
    return subprocess.run(
        [sys.executable, "-m", "kiln", *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout
    )


def test_kiln_serve_off_loopback_without_accounts_exits_with_the_how_to(tmp_path: Path) -> None:
    """Nothing binds: the check comes first, and it says what to do."""
    out = kiln_cli("serve", "--host", "0.0.0.0", "--port", "9", "--data-roots", str(tmp_path), data_dir=tmp_path / "d")
    assert out.returncode == 2, out
    assert "kiln users add NAME --admin" in out.stderr and "kiln is serving" not in out.stdout


def test_kiln_users_commands(tmp_path: Path) -> None:
    data = tmp_path / "d"
    add = kiln_cli("users", "add", "root", "--admin", "--password-stdin", data_dir=data, stdin=PASSWORD + "\n")
    assert add.returncode == 0 and "Added admin root." in add.stdout, add.stderr
    assert kiln_cli("users", "add", "bob", "--password-stdin", data_dir=data, stdin="short\n").returncode == 1
    token = kiln_cli("users", "token", "root", "--label", "ci", data_dir=data)
    assert token.returncode == 0 and token.stdout.strip().startswith("kiln_")
    listed = kiln_cli("users", "list", data_dir=data)
    assert "root" in listed.stdout and "admin" in listed.stdout and "ci" in listed.stdout
    assert kiln_cli("users", "delete", "root", data_dir=data).returncode == 1  # the last admin
    acc = Accounts(data / "kiln.db")
    assert acc.verify_password("root", PASSWORD)["is_admin"] is True
    token_user = acc.user_for_token(token.stdout.strip(), "accounts")
    assert token_user is not None and token_user.name == "root" and token_user.via == "token"
    hashed = acc.db.execute("SELECT password_hash FROM users WHERE name='root'").fetchone()[0]
    assert hashed.startswith("$argon2id$") and PASSWORD not in hashed
    acc.close()
    assert kiln_cli("users", "revoke", "1", data_dir=data).returncode == 0
    assert kiln_cli("users", "revoke", "1", data_dir=data).returncode == 1


def test_the_real_hasher_is_argon2id_with_pwdlibs_costs(tmp_path: Path) -> None:
    saved, accounts._hasher = accounts._hasher, None
    try:
        acc = Accounts(tmp_path / "kiln.db")
        acc.add_user("alice", PASSWORD)
        hashed = acc.db.execute("SELECT password_hash FROM users").fetchone()[0]
        assert hashed.startswith("$argon2id$") and "m=65536" in hashed
        assert acc.verify_password("alice", PASSWORD) and acc.verify_password("alice", "nope") is None
        acc.close()
    finally:
        accounts._hasher = saved


def test_the_secret_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    create_app(Settings.from_env(data_dir=data), run_scheduler=False)
    secret = data / "secret.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    first = secret.read_bytes()
    assert len(first) >= 32
    os.chmod(secret, 0o644)  # loosened by hand: kiln tightens it again, and keeps the secret
    create_app(Settings.from_env(data_dir=data), run_scheduler=False)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_bytes() == first
    assert not list(data.glob(".secret-*"))


def test_sessions_survive_a_restart_and_die_with_a_new_secret(tmp_path: Path) -> None:
    settings = Settings.from_env(data_dir=tmp_path / "data")
    cookie = login(create_app(settings, run_scheduler=False), "alice").cookies["kiln_session"]
    again = client(create_app(settings, run_scheduler=False), cookies={"kiln_session": cookie})
    assert again.post("/abort_jobs", data={"job_ids[]": ["x"]}).status_code == 400  # still alice
    (tmp_path / "data" / "secret.key").unlink()
    fresh = client(create_app(settings, run_scheduler=False), cookies={"kiln_session": cookie})
    assert fresh.post("/abort_jobs", data={"job_ids[]": ["x"]}).status_code == 401
