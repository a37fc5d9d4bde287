"""The model store (issue 10, DIGITS 5.4): a folder and an http address in DIGITS' layout are listed,
a model is imported as a pretrained model and answers as its archive did; bad stores say why."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kiln.archives import extract_archive
from kiln.inference.predictor import Predictor
from tests.conftest import Kiln
from tests.fixtures.archives.make_fixtures import images

FIXTURES = Path(__file__).parents[1] / "fixtures" / "archives"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def make_store(root: Path) -> Path:
    """master.json + a kiln archive and a DIGITS-layout archive, each unpacked in its folder."""
    extract_archive(FIXTURES / "v1.tar.gz", root / "small")
    extract_archive(FIXTURES / "digits-layout.zip", root / "digits")
    (root / "digits" / "aux.json").write_text(json.dumps({"description": "by hand"}))
    (root / "master.json").write_text(json.dumps({"msg": "Welcome", "children": ["small", "digits", "missing"]}))
    return root


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The same store over real HTTP on a free local port."""
    folder = make_store(tmp_path / "web-store")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def store_app(tmp_path: Path, setting: str) -> Kiln:
    return Kiln(tmp_path / "data", model_store_url=setting)


@pytest.mark.parametrize("kind", ["folder", "http"])
def test_list_and_import(kind: str, tmp_path: Path, served: str) -> None:
    base = str(make_store(tmp_path / "store")) if kind == "folder" else served
    kiln = store_app(tmp_path, base)
    try:
        listing = kiln.client.get("/store/models").json()
        assert list(listing) == [base] and listing[base]["welcome_msg"] == "Welcome"
        models = {m["dir_name"]: m for m in listing[base]["model_list"]}
        assert sorted(models) == ["digits", "small"] and models["digits"]["aux"] == {"description": "by hand"}
        page = kiln.client.get("/store/list")
        assert page.status_code == 200 and "small (DIGITS layout)" in page.text
        for dir_name, fixture in (("small", "v1.tar.gz"), ("digits", "digits-layout.zip")):
            res = kiln.client.post("/store/push", params={"id": models[dir_name]["id"]})
            assert res.status_code == 200, res.text
            job_dir = kiln.settings.jobs_dir / res.text
            probs = Predictor.from_job_dir(job_dir).probabilities(np.stack(images())[..., None])
            assert np.allclose(probs, EXPECTED[fixture], atol=1e-5)
        rows = kiln.client.get("/completed_jobs.json").json()["pretrained_models"]
        assert sorted(r["name"] for r in rows) == ["small", "small (DIGITS layout)"]
    finally:
        kiln.close()


def test_unknown_ids_broken_entries_and_get(tmp_path: Path) -> None:
    root = make_store(tmp_path / "store")
    (root / "digits" / "snapshot.safetensors").unlink()
    kiln = store_app(tmp_path, f"{root},{tmp_path / 'nowhere'}")
    try:
        listing = kiln.client.get("/store/models").json()
        assert "not a folder" in listing[str(tmp_path / "nowhere")]["error"]
        digits = next(m for m in listing[str(root)]["model_list"] if m["dir_name"] == "digits")
        res = kiln.client.post("/store/push", params={"id": digits["id"]})
        assert res.status_code == 400 and "does not have" in res.text
        assert kiln.client.post("/store/push", params={"id": "0123456789abcdef"}).status_code == 404
        assert kiln.client.get("/store/push", params={"id": digits["id"]}).status_code == 405
        assert kiln.client.get("/completed_jobs.json").json()["pretrained_models"] == []
    finally:
        kiln.close()


def test_a_store_cannot_name_files_outside_its_folder(tmp_path: Path) -> None:
    root = make_store(tmp_path / "store")
    shutil.copyfile(root / "digits" / "labels.txt", tmp_path / "secret.txt")
    info = json.loads((root / "digits" / "info.json").read_text())
    (root / "digits" / "info.json").write_text(json.dumps(dict(info, **{"labels file": "../../secret.txt"})))
    kiln = store_app(tmp_path, str(root))
    try:
        digits = next(
            m for m in kiln.client.get("/store/models").json()[str(root)]["model_list"] if m["dir_name"] == "digits"
        )
        res = kiln.client.post("/store/push", params={"id": digits["id"]})
        assert res.status_code == 400 and "not a file name" in res.text
    finally:
        kiln.close()


def test_no_store_set_says_how(tmp_path: Path) -> None:
    kiln = store_app(tmp_path, "")
    try:
        assert kiln.client.get("/store/models").json() == {}
        assert "KILN_MODEL_STORE_URL" in kiln.client.get("/store/list").text
        assert kiln.client.get("/pretrained_models/new").status_code == 200
    finally:
        kiln.close()
