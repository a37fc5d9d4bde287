"""Another site cannot drive kiln (kiln/web/security.py): Host names, cross-site Origin, CSRF tokens,
state changes only by POST/PUT/DELETE, security headers, NUL characters, bounded LR previews, and
every error in kiln's shape.

The in-process client sends `Host: testserver` (allowed by tests/conftest.py's KILN_ALLOWED_HOSTS)
and, like curl, no Origin, Referer or Sec-Fetch-Site: it is not a browser until a test says so.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import pytest

from kiln.config import Settings
from kiln.web.security import CSRF_COOKIE, HostRule, split_host
from tests.conftest import Kiln

SAME_ORIGIN = {"Origin": "http://testserver"}
JSON = {"Accept": "application/json"}


@pytest.fixture
def job_id(kiln: Kiln) -> str:
    job = kiln.store.create_job("dataset", "before", {"spec": {}}, "alice")
    (kiln.settings.jobs_dir / job).mkdir(parents=True)
    (kiln.settings.jobs_dir / job / "labels.txt").write_text("cat\ndog\n")
    return job


def name_of(kiln: Kiln, job_id: str) -> str:
    return kiln.store.get_job(job_id).name


def csrf_token(client: Any) -> str:
    """The token a page gives its scripts (and the cookie it is tied to lands in the client's jar)."""
    page = client.get("/models/images/classification/new")
    assert page.status_code == 200, page.text[:200]
    return re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text).group(1)


def assert_error(res: Any, status: int, type_: str) -> dict[str, Any]:
    assert res.status_code == status, (res.status_code, res.text[:300])
    body = res.json()
    assert set(body) == {"error"} and body["error"]["type"] == type_ and body["error"]["message"], body
    return body["error"]


# -- Host -----------------------------------------------------------------------------------------
def test_a_foreign_host_is_refused(kiln: Kiln) -> None:
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1."""
    for host in ("evil.example", "evil.example:5000", "localhost.evil.example", "testserver.evil.example"):
        res = kiln.client.get("/index.json", headers={"Host": host})
        error = assert_error(res, 400, "BadRequest")
        assert "KILN_ALLOWED_HOSTS" in error["message"] and "jobs_dir" not in res.text
    page = kiln.client.get("/", headers={"Host": "evil.example"})
    assert page.status_code == 400 and "text/html" in page.headers["content-type"]


@pytest.mark.parametrize(
    "host", ["localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:5000", "LOCALHOST", "10.0.0.7"]
)
def test_loopback_names_and_addresses_are_answered(kiln: Kiln, host: str) -> None:
    assert kiln.client.get("/index.json", headers={"Host": host}).status_code == 200


def test_allowed_hosts_and_the_listening_host() -> None:
    rule = HostRule(Settings(allowed_hosts="kiln.example, gpu.lab.example:8443", host="box.lan"))
    for ok in ("kiln.example", "KILN.example:443", "gpu.lab.example", "box.lan:5000", "localhost", "[::1]"):
        assert rule.host_ok(ok), ok
    for bad in ("evil.example", "kiln.example.evil", "lab.example", ""):
        assert not rule.host_ok(bad), bad
    assert HostRule(Settings(allowed_hosts="*")).host_ok("anything.example")
    assert not HostRule(Settings()).host_ok("testserver")
    assert split_host("[::1]:5000") == ("::1", "5000") and split_host("Kiln.Example.:80") == ("kiln.example", "80")


# -- Origin ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://testserver.evil.example"},
        {"Host": "127.0.0.1:5000", "Origin": "http://127.0.0.1:8080"},  # another port is another origin
        {"Host": "127.0.0.1:5000", "Origin": "http://localhost:5000"},  # and another name
        {"Origin": "null"},  # a sandboxed frame, a file: page
        {"Referer": "http://evil.example/page.html"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_cross_site_change_is_refused(kiln: Kiln, job_id: str, headers: dict[str, str]) -> None:
    token = csrf_token(kiln.client)  # even with a valid token
    res = kiln.client.put(f"/jobs/{job_id}", data={"job_name": "renamed"}, headers={**headers, "X-CSRF-Token": token})
    assert "ross-site" in assert_error(res, 403, "Forbidden")["message"]
    assert name_of(kiln, job_id) == "before"


def test_a_same_origin_change_and_a_script_change_pass(kiln: Kiln, job_id: str) -> None:
    token = csrf_token(kiln.client)
    res = kiln.client.put(
        f"/jobs/{job_id}", data={"job_name": "by page"}, headers={**SAME_ORIGIN, "X-CSRF-Token": token}
    )
    assert res.status_code == 200 and name_of(kiln, job_id) == "by page"
    res = kiln.client.put(
        f"/jobs/{job_id}",
        data={"job_name": "by referer"},
        headers={"Referer": f"http://testserver/datasets/{job_id}", "X-CSRF-Token": token},
    )
    assert res.status_code == 200 and name_of(kiln, job_id) == "by referer"
    # curl, a script, kiln.client: no Origin, Referer or Sec-Fetch-Site, so no token either
    res = kiln.client.put(f"/jobs/{job_id}", data={"job_name": "by curl"})
    assert res.status_code == 200 and name_of(kiln, job_id) == "by curl"


def test_the_digits_curl_session_still_works(kiln: Kiln, job_id: str) -> None:
    """`curl -F username=bob /login -c jar`, then `curl -b jar ...` with no browser headers."""
    curl = kiln.as_user(None)
    res = curl.post("/login", files={"username": (None, "alice")})
    assert res.status_code == 302
    assert curl.put(f"/jobs/{job_id}", files={"job_name": (None, "curl")}).status_code == 200
    assert name_of(kiln, job_id) == "curl"
    assert curl.post("/group", files={"job_ids[]": (None, job_id), "group_name": (None, "g")}).status_code == 200


# -- CSRF -----------------------------------------------------------------------------------------
def test_a_browser_change_needs_the_csrf_token(kiln: Kiln, job_id: str) -> None:
    token = csrf_token(kiln.client)
    browser = {**SAME_ORIGIN, "Sec-Fetch-Site": "same-origin"}
    for headers in (browser, {**browser, "X-CSRF-Token": "forged"}, {**browser, "X-CSRF-Token": token[:-2]}):
        res = kiln.client.put(f"/jobs/{job_id}", data={"job_name": "x"}, headers=headers)
        assert "CSRF" in assert_error(res, 403, "Forbidden")["message"]
    res = kiln.client.post(f"/datasets/{job_id}/abort", headers={"Sec-Fetch-Site": "same-origin", **JSON})
    assert res.status_code == 403  # no body to carry a field: the header is the only way
    assert name_of(kiln, job_id) == "before"
    res = kiln.client.put(f"/jobs/{job_id}", data={"job_name": "header"}, headers={**browser, "X-CSRF-Token": token})
    assert res.status_code == 200 and name_of(kiln, job_id) == "header"


def test_the_form_field_carries_the_token(kiln: Kiln, job_id: str) -> None:
    """HTML forms post the hidden csrf_token field, urlencoded or multipart, first in the body."""
    token = csrf_token(kiln.client)
    res = kiln.client.put(f"/jobs/{job_id}", data={"csrf_token": token, "job_name": "urlencoded"}, headers=SAME_ORIGIN)
    assert res.status_code == 200 and name_of(kiln, job_id) == "urlencoded"
    res = kiln.client.put(
        f"/jobs/{job_id}",
        files={"csrf_token": (None, token), "job_name": (None, "multipart"), "f": ("a.bin", os.urandom(200_000))},
        headers=SAME_ORIGIN,
    )
    assert res.status_code == 200 and name_of(kiln, job_id) == "multipart"
    # a form of the token alone (a Download button's): the body ends the field, no '&' after it
    res = kiln.client.put(f"/jobs/{job_id}", data={"csrf_token": token}, headers=SAME_ORIGIN)
    assert res.status_code == 200, res.text  # passed the CSRF check; nothing to change
    assert name_of(kiln, job_id) == "multipart"


def test_the_token_is_looked_for_in_a_bounded_prefix_of_the_body() -> None:
    """The middleware holds back at most CSRF_WINDOW bytes (plus one chunk) while it looks."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from kiln.web.security import CSRF_WINDOW, FormScanner, SecurityMiddleware

    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="job_notes"\r\n\r\n{"n" * 200_000}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\nTOKEN\r\n--{boundary}--\r\n'
    ).encode()
    chunks = [body[i : i + 16_384] for i in range(0, len(body), 16_384)]
    sent = iter([{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)])

    async def receive() -> dict[str, Any]:
        return next(sent)

    def read() -> tuple[FormScanner, list[dict[str, Any]]]:
        scanner = FormScanner(f"multipart/form-data; boundary={boundary}")
        # on a thread of its own: the browser tests' Playwright may hold this thread's event loop
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(asyncio.run, SecurityMiddleware._read_until_token(receive, scanner)).result()
        return scanner, held

    scanner, held = read()
    assert scanner.token is None and CSRF_WINDOW < sum(len(m["body"]) for m in held) <= CSRF_WINDOW + 16_384
    # the token first, as csrf_field() puts it: found in the first chunk
    first = f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\nTOKEN\r\n--{boundary}\r\n'
    sent = iter([{"type": "http.request", "body": first.encode(), "more_body": True}])
    scanner, held = read()
    assert scanner.token == "TOKEN" and len(held) == 1


def test_another_browsers_token_is_refused(kiln: Kiln, job_id: str) -> None:
    """The token is tied to the cookie it was made for: a token read elsewhere is useless."""
    other = kiln.as_user("alice")
    stolen = csrf_token(other)
    csrf_token(kiln.client)  # this client's own cookie
    res = kiln.client.put(f"/jobs/{job_id}", data={"job_name": "x"}, headers={**SAME_ORIGIN, "X-CSRF-Token": stolen})
    assert res.status_code == 403 and name_of(kiln, job_id) == "before"


def test_the_csrf_cookie(kiln: Kiln) -> None:
    anonymous = kiln.as_user(None)
    page = anonymous.get("/login")
    cookie = page.headers["set-cookie"]
    assert (
        cookie.startswith(f"{CSRF_COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    )
    assert anonymous.get("/login").headers.get("set-cookie") is None  # made once, then kept
    assert kiln.client.get("/index.json").headers.get("set-cookie") is None  # only pages that need one
    # login from a browser: the login form's own token (login CSRF is refused too)
    browser = {**SAME_ORIGIN, "Sec-Fetch-Site": "same-origin"}
    assert anonymous.post("/login", data={"username": "alice"}, headers=browser).status_code == 403
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    res = anonymous.post("/login", data={"csrf_token": token, "username": "alice"}, headers=browser)
    assert res.status_code == 302


def test_an_api_token_needs_no_csrf_token(kiln: Kiln, job_id: str) -> None:
    """A bearer token is no ambient credential: what decides is the token (here: a bad one, 401)."""
    res = kiln.as_user(None).put(
        f"/jobs/{job_id}", data={"job_name": "x"}, headers={**SAME_ORIGIN, "Authorization": "Bearer nope", **JSON}
    )
    assert res.status_code == 401


@pytest.mark.parametrize("path", ["/login", "/datasets/images/classification/new", "/models/images/classification/new"])
def test_every_form_starts_with_the_csrf_field(kiln: Kiln, path: str) -> None:
    client = kiln.as_user(None) if path == "/login" else kiln.client
    html = client.get(path).text
    forms = re.findall(r"<form\b[^>]*>\s*(<[^>]*>)", html)
    assert forms, path
    for first in forms:
        assert re.fullmatch(r'<input type="hidden" name="csrf_token" value="[A-Za-z0-9_-]{43}">', first), first


# -- state changes are never a GET ----------------------------------------------------------------
def test_get_group_changes_nothing(kiln: Kiln, job_id: str) -> None:
    res = kiln.client.get("/group", params={"job_ids[]": job_id, "group_name": "g"}, headers=JSON)
    assert "POST" in assert_error(res, 405, "MethodNotAllowed")["message"]
    assert kiln.store.get_job(job_id).group_name == ""
    assert kiln.client.post("/group", data={"job_ids[]": job_id, "group_name": "g"}).text == "Jobs regrouped."
    assert kiln.store.get_job(job_id).group_name == "g"


def test_no_get_route_changes_anything(kiln: Kiln) -> None:
    """No route takes GET and a changing method alike (clone only redirects to a filled-in form)."""
    for route in kiln.app.routes:
        methods = getattr(route, "methods", None) or set()
        if "GET" in methods and methods & {"POST", "PUT", "DELETE", "PATCH"}:
            assert route.path == "/clone/{job_id}", route.path


# -- headers --------------------------------------------------------------------------------------
def test_security_headers_on_every_answer(kiln: Kiln, job_id: str) -> None:
    kiln.app.add_api_route("/boom.json", lambda: 1 / 0)
    from fastapi.testclient import TestClient

    crashing = TestClient(kiln.app, raise_server_exceptions=False)
    answers = {
        "page": kiln.client.get("/models/images/classification/new"),
        "json": kiln.client.get("/index.json"),
        "404": kiln.client.get("/no/such/page"),
        "refused host": kiln.client.get("/index.json", headers={"Host": "evil.example"}),
        "refused origin": kiln.client.post("/group", headers={"Origin": "http://evil.example"}),
        "file": kiln.client.get(f"/files/{job_id}/labels.txt"),
        "static": kiln.client.get("/static/kiln.js"),
        "500": crashing.get("/boom.json"),
    }
    for what, res in answers.items():
        h = res.headers
        assert h["x-content-type-options"] == "nosniff", what
        assert h["x-frame-options"] == "DENY", what
        assert h["referrer-policy"] == "same-origin", what
        assert "frame-ancestors 'none'" in h["content-security-policy"], what
    csp = answers["page"].headers["content-security-policy"]
    assert "default-src 'self'" in csp and "object-src 'none'" in csp and "form-action 'self'" in csp
    assert "sandbox" in answers["file"].headers["content-security-policy"]  # a job's files run nothing
    assert_error(answers["500"], 500, "InternalError")
    assert "Traceback" not in answers["500"].text and "ZeroDivisionError" not in answers["500"].text


# -- error shapes ---------------------------------------------------------------------------------
def test_starlettes_own_errors_answer_in_kilns_shape(kiln: Kiln) -> None:
    assert_error(kiln.client.get("/no/such/route", headers=JSON), 404, "NotFound")
    assert_error(kiln.client.get("/no/such/route.json"), 404, "NotFound")
    assert_error(kiln.client.delete("/index.json"), 405, "MethodNotAllowed")
    res = kiln.client.get("/jobs/x/log.json", params={"limit": "many"})
    assert res.status_code == 400 and list(res.json()) == ["errors"] and "limit" in res.json()["errors"]
    page = kiln.client.get("/no/such/route")
    assert page.status_code == 404 and "text/html" in page.headers["content-type"] and "detail" not in page.text


@pytest.mark.parametrize(
    "path",
    ["/files/a%00b", "/models/a%00b.json", "/jobs/x%00/status", "/datasets/summary?job_id=a%00", "/index.json?x=%00"],
)
def test_a_nul_in_the_path_or_query_is_a_400(kiln: Kiln, path: str) -> None:
    assert "NUL" in assert_error(kiln.client.get(path, headers=JSON), 400, "BadRequest")["message"]


def test_a_nul_in_a_form_field_is_a_400(kiln: Kiln, job_id: str) -> None:
    for form in ({"data": {"job_name": "a\x00b"}}, {"files": {"job_name": (None, "a\x00b")}}):
        res = kiln.client.put(f"/jobs/{job_id}", **form)
        assert "NUL" in assert_error(res, 400, "BadRequest")["message"]
    res = kiln.client.post("/datasets/images/classification.json", data={"folder_train": "/tmp/a\x00b"})
    assert_error(res, 400, "BadRequest")
    res = kiln.as_user(None).post("/login", data={"username": "alice\x00"}, headers=JSON)
    assert_error(res, 400, "BadRequest")
    assert name_of(kiln, job_id) == "before"
    # an uploaded file's bytes are data: NULs there are fine
    res = kiln.client.put(f"/jobs/{job_id}", files={"job_name": (None, "ok"), "f": ("a.bin", b"\x00\x01\x00")})
    assert res.status_code == 200 and name_of(kiln, job_id) == "ok"


# -- numbers and the LR preview ---------------------------------------------------------------------
def test_a_huge_lr_field_is_refused_before_it_is_parsed(kiln: Kiln) -> None:
    huge = ",".join(["0.1"] * 100_000)  # 400 KB: parsed, 1 MB held the server for 14 s and 1.9 GB
    res = kiln.client.post("/models/visualize-lr", data={"learning_rate": huge})
    assert res.status_code == 400 and "At most 1024 characters" in res.json()["errors"]["learning_rate"][0]
    res = kiln.client.post("/models/visualize-lr", data={"learning_rate": huge * 3}, headers=JSON)
    assert_error(res, 400, "BadRequest")  # over 1 MB: Starlette's form parser stops it first
    res = kiln.client.post("/models/visualize-lr", files={"lr_step_gamma": (None, "9" * 2_000_000)})
    assert res.status_code in (400, 413) and "99999" not in res.text
    res = kiln.client.post("/models/visualize-lr", data={"learning_rate": ",".join(["0.1"] * 65)})
    assert res.status_code == 400 and "at most 64" in res.json()["errors"]["learning_rate"][0]


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"lr_policy": "exp", "lr_exp_gamma": "1e300"}, "lr_exp_gamma"),
        ({"lr_policy": "step", "lr_step_gamma": "1e300", "lr_step_size": "1e-300"}, "lr_step_"),
        ({"lr_policy": "exp", "lr_exp_gamma": "10", "learning_rate": "1e300"}, "lr_exp_gamma"),
        ({"learning_rate": "nan"}, "learning_rate"),
        ({"learning_rate": "inf"}, "learning_rate"),
        ({"lr_policy": "inv", "lr_inv_gamma": "inf"}, "lr_inv_gamma"),
        ({"lr_policy": "poly", "lr_poly_power": "nan"}, "lr_poly_power"),
    ],
)
def test_lr_preview_overflow_and_non_finite_values_are_400(kiln: Kiln, form: dict[str, str], field: str) -> None:
    res = kiln.client.post("/models/visualize-lr", data=form)
    assert res.status_code == 400, res.text[:300]
    errors = res.json()["errors"]
    assert any(name.startswith(field) for name in errors), errors


def test_a_good_lr_preview_is_finite(kiln: Kiln) -> None:
    res = kiln.client.post("/models/visualize-lr", data={"lr_policy": "exp", "lr_exp_gamma": "0.95"})
    assert res.status_code == 200 and all(math.isfinite(v) for v in res.json()["data"]["columns"][0][1:])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", "inf"),
        ("learning_rate", "nan"),
        ("train_epochs", "inf"),
        ("momentum", "nan"),
        ("batch_size", "1e999"),
    ],
)
def test_non_finite_model_fields_are_400_naming_the_field(kiln: Kiln, field: str, value: str) -> None:
    form = {"dataset": "none", "model_name": "m", "standard_networks": "lenet", field: value}
    res = kiln.client.post("/models/images/classification.json", data=form)
    assert res.status_code == 400 and field in res.json()["errors"], res.text[:300]


# -- /files -----------------------------------------------------------------------------------------
def test_files_stay_inside_their_job_folder(kiln: Kiln, job_id: str, tmp_path: Path) -> None:
    folder = kiln.settings.jobs_dir / job_id
    other = kiln.store.create_job("dataset", "other", {"spec": {}}, "alice")
    (kiln.settings.jobs_dir / other).mkdir()
    (kiln.settings.jobs_dir / other / "secret.txt").write_text("other job")
    (tmp_path / "outside.txt").write_text("outside")
    (folder / "out.txt").symlink_to(tmp_path / "outside.txt")
    (folder / "sibling.txt").symlink_to(kiln.settings.jobs_dir / other / "secret.txt")
    (folder / "db").symlink_to(kiln.settings.db_path)
    (folder / ".half.tmp").write_text("half written")
    (folder / "fifo").unlink(missing_ok=True)
    os.mkfifo(folder / "fifo")
    orphan = kiln.settings.jobs_dir / "20000101-000000-dead"
    orphan.mkdir()
    (orphan / "labels.txt").write_text("left behind")
    assert kiln.client.get(f"/files/{job_id}/labels.txt").text == "cat\ndog\n"
    for path in (
        "out.txt",
        "sibling.txt",
        "db",
        ".half.tmp",
        "fifo",
        "",
        "missing.txt",
        "%2e%2e/" + other + "/secret.txt",
    ):
        res = kiln.client.get(f"/files/{job_id}/{path}", headers=JSON)
        error = assert_error(res, 404, "NotFound")
        assert str(kiln.settings.data_dir) not in error["message"] and str(tmp_path) not in res.text
    assert_error(kiln.client.get("/files/20000101-000000-dead/labels.txt", headers=JSON), 404, "NotFound")


def test_the_api_docs_page_sends_the_token(kiln: Kiln, job_id: str) -> None:
    """Swagger UI's "Try it out" changes things too: /docs wraps fetch to send the page's token."""
    page = kiln.client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "https://cdn.jsdelivr.net" in page.headers["content-security-policy"]  # Swagger UI's own files
    token = re.search(r'const token = "([^"]+)"', page.text).group(1)
    headers = {**SAME_ORIGIN, "Referer": "http://testserver/docs", "X-CSRF-Token": token}
    res = kiln.client.put(f"/jobs/{job_id}", data={"job_name": "from the docs"}, headers=headers)
    assert res.status_code == 200 and name_of(kiln, job_id) == "from the docs"


def test_odd_host_and_origin_headers_are_refused_not_crashed(kiln: Kiln, job_id: str) -> None:
    for headers in (
        {"Host": "localhost:abc", "Origin": "http://localhost:5000"},
        {"Origin": "http://[::1"},
        {"Origin": "javascript:alert(1)"},
        {"Referer": "not a url"},
    ):
        res = kiln.client.put(f"/jobs/{job_id}", data={"job_name": "x"}, headers=headers)
        assert_error(res, 403, "Forbidden")
    assert name_of(kiln, job_id) == "before"


def test_the_csrf_key_is_private_and_kept(tmp_path: Path) -> None:
    from kiln.web.security import load_key

    key = load_key(tmp_path)
    assert len(key) == 32 and (tmp_path / "csrf.key").stat().st_mode & 0o777 == 0o600
    assert load_key(tmp_path) == key  # a restart keeps open pages' tokens valid
    (tmp_path / "csrf.key").write_bytes(b"short")
    assert len(load_key(tmp_path)) == 32
    assert [p.name for p in tmp_path.iterdir()] == ["csrf.key"]


def test_files_are_served_as_data(kiln: Kiln, job_id: str) -> None:
    """Text as text, images as images, anything else (an HTML page, a snapshot) as a download."""
    folder = kiln.settings.jobs_dir / job_id
    (folder / "errors.log").write_text("a.png: cannot read\n")
    (folder / "page.html").write_text("<script>alert(1)</script>")
    (folder / "snapshot_1.pt").write_bytes(b"\x80\x02binary")
    log = kiln.client.get(f"/files/{job_id}/errors.log")
    assert log.headers["content-type"] == "text/plain; charset=utf-8" and log.text == "a.png: cannot read\n"
    for name in ("page.html", "snapshot_1.pt"):
        res = kiln.client.get(f"/files/{job_id}/{name}")
        assert res.headers["content-type"] == "application/octet-stream", name
        assert res.headers["content-disposition"].startswith("attachment"), name
