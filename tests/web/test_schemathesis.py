"""A schemathesis run against kiln's own OpenAPI description (/openapi.json), in process over ASGI.

Every operation the description lists gets a few generated requests (seeded and deterministic,
valid and invalid ones; the form routes' bodies as kiln.web.form_docs declares them), sent to an
app over a data dir that holds a real Done dataset and a real Done model (built once per module,
as the CLI builds them), logged in as alice (loopback: POST /login with a username). Where a
request names a job (`{job_id}`, `?job_id=`, `?dataset=`, `?clone=`, the forms' `job_id`,
`dataset`, `job_ids[]`), most examples name a job that exists and the others keep the
generated value (a job that does not); a request that changes or deletes a job gets a throwaway
job of its own, in a status the change applies to, so the real ones stay for the others. The
forms' paths and uploads (`folder_train`, `image_path`, `image_folder`, `image_file`,
`image_list`) then name the real images too; the data roots are the images' parent folder, so a
generated path never reaches the rest of the machine.

Checks, for every answer:
- not_a_server_error: no 5xx, whatever the input (an exception out of a route fails it too).
- response_schema_conformance: the body matches what the description declares for its status
  (the .json routes declare objects). Statuses the description does not declare are not judged:
  kiln's routes declare only FastAPI's defaults (200, and a 422 that kiln never sends: its
  validation errors are 400s), so status_code_conformance would fail on every 302, 400, 401, 403
  and 404 by design, and content_type_conformance on every HTML page (declared application/json).
- kiln_error_shape: every error answered as JSON is kiln's, `{"error": ...}` or
  `{"errors": {field: [messages]}}`, the latter with `"error"` beside it for a network text's line
  and column (issue 7: never FastAPI's `{"detail": ...}`).
- and no 401: every request is logged in (but POST /login, whose wrong passwords are 401s).

Nothing is excluded: /events streams forever, so its stream is cut after its first event. Not
covered here: the success paths of /users, /account/tokens and /account/password (accounts
only: on loopback they answer 403; tests/web/test_auth.py covers them), and the bodies of
PUT /jobs/{job_id} and POST /group, which the description does not declare (sent empty).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.conftest import Kiln, write_class_folder

# Per operation (about 60). A longer hunt: KILN_SCHEMATHESIS_EXAMPLES=200 KILN_SCHEMATHESIS_SEED=2 pytest ...
EXAMPLES = int(os.environ.get("KILN_SCHEMATHESIS_EXAMPLES", "8"))
CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": int(os.environ.get("KILN_SCHEMATHESIS_SEED", "7")),
        "cache": {"enabled": False},
        "max-redirects": 0,  # a 302 is the answer checked, not the page it points to
        "max-stream-events": 1,  # /events streams forever: its first event (hello), then the stream is cut
        "request-timeout": 30,
        # no NUL characters: the security middleware refuses them before any route (tests/web/test_security.py),
        # so examples with one would test that one rule again and again; no shrinking: a failure is reported
        # as generated (bounded time)
        "generation": {
            "max-examples": EXAMPLES,
            "deterministic": True,
            "database": "none",
            "no-shrink": True,
            "allow-x00": False,
        },
        # fuzzing only: the description has no examples, and the coverage phase's boundary cases
        # for ~60 operations would take minutes on two cores
        "phases": {"examples": {"enabled": False}, "coverage": {"enabled": False}, "stateful": {"enabled": False}},
    }
)


class World:
    """A data dir with a Done dataset and a Done model, and the app over it (no scheduler)."""

    def __init__(self, base: Path) -> None:
        self.root = base / "root"  # the data roots: nothing outside it is read
        self.images = write_class_folder(self.root / "images", {"one": 6, "two": 6}, size=(28, 28))
        self.image = self.images / "one" / "0000.png"
        self.kiln = Kiln(base / "data", data_roots=str(self.root))
        res = self.kiln.client.post(
            "/datasets/images/classification.json",
            data={
                "dataset_name": "digits",
                "folder_train": str(self.images),
                "resize_channels": "1",
                "resize_width": "28",
                "resize_height": "28",
                "folder_pct_val": "25",
            },
        )
        assert res.status_code == 200, res.text
        self.dataset_id = res.json()["id"]
        assert self.kiln.run(self.dataset_id) == "Done"
        res = self.kiln.client.post(
            "/models/images/classification.json",
            data={"dataset": self.dataset_id, "model_name": "m", "standard_networks": "lenet", "train_epochs": "1"},
        )
        assert res.status_code == 200, res.text
        self.model_id = res.json()["id"]
        assert self.kiln.run(self.model_id) == "Done"
        jobs_dir = self.kiln.settings.jobs_dir
        self.files = {  # for /files/{path}: every file of each real job, as <job_id>/<path>
            kind: sorted(p.relative_to(jobs_dir).as_posix() for p in (jobs_dir / job).rglob("*") if p.is_file())
            for kind, job in (("dataset", self.dataset_id), ("model", self.model_id))
        }
        self._n = itertools.count()
        self.cookies = self.session()

    def job(self, kind: str, status: str | None = None) -> str:
        """The real job of that kind, or with a status a throwaway one of alice's in that status."""
        if status is None:
            return self.dataset_id if kind == "dataset" else self.model_id
        params: dict[str, Any] = {"spec": {"resize_width": 8, "resize_height": 8, "resize_channels": 1}}
        if kind == "model":
            params = {"config": {"train_epochs": 1}, "form": {}}
        job_id = self.kiln.store.create_job(kind, f"throwaway {next(self._n)}", params, "alice")
        (self.kiln.settings.jobs_dir / job_id).mkdir(parents=True, exist_ok=True)
        if status != "Initialized":
            self.kiln.store.set_status(job_id, status)
        return job_id

    def session(self) -> dict[str, str]:
        """A fresh session of alice's: a /logout or password change in one example ends only its own."""
        client = self.kiln.as_user("alice")
        cookies = dict(client.cookies)
        client.close()
        return cookies


def supply_jobs(case: Any, world: World, pick: str | None) -> None:
    """Put a real job wherever the request names one, unless `pick` is None (keep the generated value).

    `pick` ("dataset" or "model") is the kind for routes that take either; /datasets/.. and the
    dataset-only fields take a dataset, /models/.. and the classify forms a model. A request that
    changes a job gets a throwaway one, in a status the change applies to."""
    if pick is None:
        return
    path, method = case.operation.path, case.method.upper()
    kind = "dataset" if path.startswith("/datasets") else "model" if path.startswith("/models") else pick
    status = None  # GET, and POST /clone: the real job
    if method in ("PUT", "DELETE") or path.endswith(("/abort", "/resume")):
        status = "Waiting" if path.endswith("/abort") else "Aborted" if path.endswith("/resume") else "Done"
    if "job_id" in (case.path_parameters or {}):
        case.path_parameters["job_id"] = world.job(kind, status)
    if path == "/datasets/{job_id}/images/{split}/{index}.png":
        case.path_parameters["split"] = "train" if pick == "dataset" else "val"
    if path == "/files/{path}":
        case.path_parameters["path"] = world.files[pick][len(case.path_parameters["path"]) % len(world.files[pick])]
    query = case.query if isinstance(case.query, dict) else {}
    if "job_id" in query:
        query["job_id"] = world.job(kind)
    if "dataset" in query:
        query["dataset"] = world.dataset_id
    if "clone" in query:
        query["clone"] = world.job(kind)
    body = case.body if isinstance(case.body, dict) else None
    if body is None:
        return
    if path in ("/jobs", "/abort_jobs"):  # DELETE /jobs, POST /abort_jobs: job_ids[]
        body["job_ids[]"] = [world.job(pick, "Waiting" if path == "/abort_jobs" else "Done") for _ in range(2)]
    if path == "/login":
        body["username"] = "carol"
    if "job_id" in body:  # classify one / many
        body["job_id"] = world.model_id
    if "dataset" in body:  # the model form
        body["dataset"] = world.dataset_id
    for field in ("folder_train", "image_folder"):
        if field in body:
            body[field] = str(world.images)
    if "image_path" in body:
        body["image_path"] = str(world.image)
    if "image_file" in body and pick == "model":  # an upload (it wins over image_path)
        body["image_file"] = world.image.read_bytes()
    if "image_list" in body:  # lines relative to image_folder
        body["image_list"] = b"one/0000.png 0\ntwo/0001.png 1\n"


def kiln_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """An error answered as JSON is `{"error": ...}` or `{"errors": {field: [str, ...]}}`."""
    if response.status_code < 400 or "json" not in response.headers.get("content-type", [""])[0]:
        return None
    body = response.json()
    ok = isinstance(body, dict) and (
        set(body) == {"error"}
        or (
            set(body) in ({"errors"}, {"errors", "error"})  # "error": where in a network text (line, column)
            and isinstance(body.get("error", {}), dict)
            and isinstance(body["errors"], dict)
            and all(isinstance(v, list) and all(isinstance(m, str) for m in v) for v in body["errors"].values())
        )
    )
    assert ok, f"{response.status_code} in another shape than kiln's errors: {str(body)[:300]}"
    return None


@pytest.fixture(scope="module")
def cheap_hashes() -> Iterator[None]:
    """argon2id with small costs (as tests/web/test_auth.py): POST /login examples hash what they are sent."""
    from pwdlib import PasswordHash
    from pwdlib.hashers.argon2 import Argon2Hasher

    from kiln import accounts

    saved = accounts._hasher
    accounts._hasher = PasswordHash((Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1),))
    yield
    accounts._hasher = saved


@pytest.fixture(scope="module")
def world(cheap_hashes: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("schemathesis"))
    yield w
    w.kiln.close()


@pytest.fixture(scope="module")
def kiln_schema(world: World) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", world.kiln.app, config=CONFIG)


@pytest.fixture(autouse=True)
def _pytest9_nodeid(request: pytest.FixtureRequest) -> None:
    """schemathesis' lazy schemas (4.32) rename `request.node._nodeid`, an attribute pytest 9 no longer has."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = schemathesis.pytest.from_fixture("kiln_schema")


@schema.parametrize()
@schema.given(pick=st.sampled_from(["dataset", "model", None]))
def test_openapi(case: Any, pick: str | None, world: World) -> None:
    supply_jobs(case, world, pick)
    # logging in (again), out, a password change and deleting a user end sessions: those get a
    # fresh one, the rest share one (and must still be logged in: no 401 but for a wrong password)
    fresh = case.operation.path in ("/login", "/logout", "/account/password", "/users/{name}")
    response = case.call(cookies=world.session() if fresh else world.cookies)
    if case.operation.path != "/login":
        assert response.status_code != 401, f"not logged in: {response.text[:300]}"
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance, kiln_error_shape])
