"""The web app reads nothing outside the data roots, never blocks on a FIFO or a device, counts
uploads on the bytes received, and leaves no upload behind when a form is refused.

A data dir with a trained model is built once per module; each test serves its own copy, with the
roots and limits it needs.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Kiln, copy_data_dir, write_class_folder

OUTSIDE = "is outside the folders this server may read"
ONE = "/models/images/classification/classify_one.json"
MANY = "/models/images/classification/classify_many.json"
NEW_DATASET = "/datasets/images/classification.json"


def finishes(fn: Callable[[], Any], timeout: float = 60) -> Any:
    """fn() on a thread; fails the test instead of hanging it."""
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(value=fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the request still runs after {timeout} s"
    return out["value"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """root/images (the data root): two classes; outside/: a secret image; data/: a Done model."""
    base = tmp_path_factory.mktemp("roots")
    images = write_class_folder(base / "root" / "images", {"one": 8, "two": 8}, size=(28, 28))
    write_class_folder(base / "outside", {"secret": 1}, size=(28, 28))
    kiln = Kiln(base / "data", data_roots=str(base / "root"))
    try:
        res = kiln.client.post(
            NEW_DATASET,
            data={
                "dataset_name": "digits",
                "folder_train": str(images),
                "resize_channels": "1",
                "resize_width": "28",
                "resize_height": "28",
                "folder_pct_val": "25",
            },
        )
        assert res.status_code == 200, res.text
        dataset_id = res.json()["id"]
        assert kiln.run(dataset_id) == "Done"
        res = kiln.client.post(
            "/models/images/classification.json",
            data={"dataset": dataset_id, "model_name": "m", "standard_networks": "lenet", "train_epochs": "1"},
        )
        assert res.status_code == 200, res.text
        model_id = res.json()["id"]
        assert kiln.run(model_id) == "Done"
    finally:
        kiln.close()
    return {
        "base": base,
        "root": base / "root",
        "images": images,
        "secret": base / "outside" / "secret" / "0000.png",
        "dataset_id": dataset_id,
        "model_id": model_id,
    }


@pytest.fixture
def serve(template: dict[str, Any], tmp_path: Path) -> Iterator[Callable[..., Kiln]]:
    """serve(**settings): this test's own copy of the template's data dir, in process."""
    apps: list[Kiln] = []
    data = copy_data_dir(template["base"] / "data", tmp_path / "data")

    def start(**settings: Any) -> Kiln:
        apps.append(Kiln(data, **settings))
        return apps[-1]

    yield start
    for app in apps:
        app.close()


@pytest.fixture
def kiln(serve: Callable[..., Kiln], template: dict[str, Any]) -> Kiln:
    """The copy served with the data roots set to root/."""
    return serve(data_roots=str(template["root"]))


def _message(res: Any) -> str:
    return res.json()["error"]["message"]


def _same_words(a: str, b: str, *names: str) -> bool:
    for name in names:
        a, b = a.replace(name, "X"), b.replace(name, "X")
    return a == b


# -- classify -------------------------------------------------------------------------------------
def test_classify_one_refuses_paths_outside_the_roots(kiln: Kiln, template: dict[str, Any]) -> None:
    model, secret, images = template["model_id"], template["secret"], template["images"]
    inside = kiln.client.post(ONE, data={"job_id": model, "image_path": str(images / "one" / "0001.png")})
    assert inside.status_code == 200 and len(inside.json()["predictions"]) == 2
    exists = kiln.client.post(ONE, data={"job_id": model, "image_path": str(secret)})
    missing = kiln.client.post(ONE, data={"job_id": model, "image_path": str(secret.parent / "none.png")})
    traversal = kiln.client.post(ONE, data={"job_id": model, "image_path": f"{images}/../../outside/secret/0000.png"})
    for res in (exists, missing, traversal):
        assert res.status_code == 400 and "image_path" in _message(res) and OUTSIDE in _message(res)
    # the answer does not tell whether a file outside exists
    assert _same_words(_message(exists), _message(missing), "0000.png", "none.png")
    os.symlink(secret, images / "one" / "link.png")
    try:
        link = kiln.client.post(ONE, data={"job_id": model, "image_path": str(images / "one" / "link.png")})
    finally:
        (images / "one" / "link.png").unlink()
    assert link.status_code == 400 and OUTSIDE in _message(link)


def test_classify_many_refuses_lines_and_folders_outside(kiln: Kiln, template: dict[str, Any]) -> None:
    model, secret, images = template["model_id"], template["secret"], template["images"]
    lines = [
        f"{images}/one/0000.png 0",
        "two/0001.png 1",  # relative to image_folder
        f"{secret} 0",
        f"{secret.parent}/none.png 0",
        "../../outside/secret/0000.png 0",
        "/etc/passwd 1",
    ]
    res = kiln.client.post(
        MANY,
        data={"job_id": model, "image_folder": str(images)},
        files={"image_list": ("list.txt", "\n".join(lines).encode())},
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert len(body["classifications"]) == 2
    errors = body["errors"]
    assert len(errors) == 4 and all(OUTSIDE in message for message in errors.values()), errors
    assert _same_words(errors[str(secret)], errors[f"{secret.parent}/none.png"], "0000.png", "none.png")
    folder = kiln.client.post(
        MANY,
        data={"job_id": model, "image_folder": str(secret.parent)},
        files={"image_list": ("list.txt", b"0000.png 0\n")},
    )
    assert folder.status_code == 400 and "image_folder" in _message(folder) and OUTSIDE in _message(folder)


def test_dev_zero_and_fifos_are_errors_not_hangs(serve: Callable[..., Kiln], template: dict[str, Any], tmp_path: Path):
    """Unrestricted (loopback, no roots): the user's files stay reachable, but only regular files are read."""
    kiln = serve()
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    good = template["images"] / "one" / "0000.png"
    listing = f"/dev/zero 0\n{fifo} 1\n{good} 0\n{template['secret']} 0\n"
    res = finishes(
        lambda: kiln.client.post(
            MANY, data={"job_id": template["model_id"]}, files={"image_list": ("l.txt", listing.encode())}
        )
    )
    assert res.status_code == 200, res.text
    body = res.json()
    assert set(body["classifications"]) == {str(good), str(template["secret"])}
    assert "character device" in body["errors"]["/dev/zero"] and "FIFO" in body["errors"][str(fifo)]
    one = finishes(lambda: kiln.client.post(ONE, data={"job_id": template["model_id"], "image_path": str(fifo)}))
    assert one.status_code == 400 and "FIFO" in _message(one)
    zero = finishes(lambda: kiln.client.post(ONE, data={"job_id": template["model_id"], "image_path": "/dev/zero"}))
    assert zero.status_code == 400 and "character device" in _message(zero)


def test_files_over_the_image_cap_are_refused(serve: Callable[..., Kiln], template: dict[str, Any], tmp_path: Path):
    kiln = serve(max_image_mb=1)
    big = tmp_path / "big.png"
    big.write_bytes(template["images"].joinpath("one", "0000.png").read_bytes() + b"\0" * (2 << 20))
    res = kiln.client.post(ONE, data={"job_id": template["model_id"], "image_path": str(big)})
    assert res.status_code == 400 and "KILN_MAX_IMAGE_MB" in _message(res)
    upload = kiln.client.post(
        ONE, data={"job_id": template["model_id"]}, files={"image_file": ("b.png", big.read_bytes())}
    )
    assert upload.status_code == 413 and "KILN_MAX_IMAGE_MB" in _message(upload)


# -- datasets -------------------------------------------------------------------------------------
def _textfile_form(name: str = "listed") -> dict[str, str]:
    return {
        "dataset_name": name,
        "method": "textfile",
        "resize_channels": "1",
        "resize_width": "28",
        "resize_height": "28",
        "textfile_use_val": "",
    }


def test_list_lines_outside_the_roots_never_reach_the_explorer(kiln: Kiln, template: dict[str, Any]) -> None:
    images, secret = template["images"], template["secret"]
    lines = [f"{images}/{name}/{i:04d}.png {label}" for label, name in enumerate(("one", "two")) for i in range(3)]
    lines += [f"{secret} 0", f"{secret.parent}/none.png 1", "../../../../../../../../etc/passwd 0"]
    res = kiln.client.post(
        NEW_DATASET,
        data=_textfile_form(),
        files={
            "textfile_train_images": ("train.txt", "\n".join(lines).encode()),
            "textfile_labels_file": ("labels.txt", b"one\ntwo\n"),
        },
    )
    assert res.status_code == 200, res.text
    job_id = res.json()["id"]
    assert kiln.run(job_id) == "Done"
    info = kiln.client.get(f"/datasets/{job_id}.json").json()
    page = kiln.client.get(f"/datasets/images/classification/explore?job_id={job_id}&db=train")
    assert page.status_code == 200 and re.search(r'id="explore-total">6 images ', page.text)
    assert kiln.client.get(f"/datasets/{job_id}/images/train/5.png").status_code == 200
    assert kiln.client.get(f"/datasets/{job_id}/images/train/6.png").status_code == 404
    job_dir = kiln.settings.jobs_dir / job_id
    stored = " ".join(p.read_text(errors="replace") for p in job_dir.rglob("*.txt") if "uploaded" not in p.name)
    assert str(secret) not in stored
    errors_log = job_dir / "errors.log"
    assert not errors_log.exists() or "secret" not in errors_log.read_text()
    refused = [line for line in kiln.store.logs(job_id, 100) if OUTSIDE in line]
    assert len(refused) == 3, kiln.store.logs(job_id, 100)
    assert "line 7" in refused[0] and "line 8" in refused[1] and "line 9" in refused[2]
    assert _same_words(refused[0], refused[1], "line 7", "line 8", "0000.png", "none.png")
    assert info["status"] == "Done"


def test_a_refused_form_leaves_no_upload_behind(kiln: Kiln) -> None:
    before = set(kiln.settings.jobs_dir.iterdir())
    files = {
        "textfile_train_images": ("train.txt", b"/etc/passwd 0\n"),
        "textfile_labels_file": ("labels.txt", b"a\nb\n"),
    }
    nameless = kiln.client.post(NEW_DATASET, data={**_textfile_form(""), "resize_width": "0"}, files=files)
    assert nameless.status_code == 400 and "dataset_name" in nameless.json()["errors"]
    assert set(kiln.settings.jobs_dir.iterdir()) == before
    page = kiln.client.post("/datasets/images/classification", data=_textfile_form(""), files=files)
    assert page.status_code == 400
    assert set(kiln.settings.jobs_dir.iterdir()) == before


def test_resume_checks_the_roots_again(serve: Callable[..., Kiln], template: dict[str, Any], tmp_path: Path) -> None:
    first = serve(data_roots=str(template["root"]))
    res = first.client.post(
        NEW_DATASET,
        data={
            "dataset_name": "again",
            "folder_train": str(template["images"]),
            "resize_width": "28",
            "resize_height": "28",
        },
    )
    assert res.status_code == 200, res.text
    job_id = res.json()["id"]
    assert first.store.set_status(job_id, "Interrupted", note="server stopped")
    first.close()
    (tmp_path / "elsewhere").mkdir()
    later = serve(data_roots=str(tmp_path / "elsewhere"))  # the admin narrowed the roots since
    assert later.client.post(f"/datasets/{job_id}/resume").status_code == 200
    assert later.run(job_id) == "Error"
    job = later.store.get_job(job_id)
    assert "folder_train" in job.error and OUTSIDE in job.error
    assert not (later.settings.jobs_dir / job_id / "manifest.json").exists()


# -- upload limit ---------------------------------------------------------------------------------
def _multipart(size: int) -> tuple[Iterator[bytes], dict[str, str]]:
    boundary = "kilnboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="textfile_train_images"; filename="t.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        chunk = b"/x/y.png 0\n" * 10_000
        sent = 0
        while sent < size:
            yield chunk
            sent += len(chunk)
        yield f"\r\n--{boundary}--\r\n".encode()

    return body(), {"Content-Type": f"multipart/form-data; boundary={boundary}", "Accept": "application/json"}


def test_uploads_are_counted_on_the_bytes_received(serve: Callable[..., Kiln]) -> None:
    kiln = serve(max_upload_mb=1)
    before = set(kiln.settings.jobs_dir.iterdir())
    body, headers = _multipart(3 << 20)  # a generator: sent chunked, with no Content-Length
    res = kiln.client.post(NEW_DATASET, content=body, headers=headers)
    assert res.status_code == 413, res.text
    assert res.json()["error"]["type"] == "TooLarge" and "KILN_MAX_UPLOAD_MB" in _message(res)
    declared = kiln.client.post(NEW_DATASET, content=b"x" * (2 << 20), headers=headers)
    assert declared.status_code == 413 and "KILN_MAX_UPLOAD_MB" in _message(declared)
    small, headers = _multipart(100_000)
    assert kiln.client.post(NEW_DATASET, content=small, headers=headers).status_code == 400  # read, then refused
    assert set(kiln.settings.jobs_dir.iterdir()) == before


def test_worker_processes_get_the_servers_roots(
    template: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Roots given to the server (a flag, not the environment) reach the worker process that
    builds the dataset: a list line outside them is refused there too."""
    from tests.conftest import ThreadServer

    monkeypatch.delenv("KILN_DATA_ROOTS", raising=False)
    server = ThreadServer(tmp_path / "live", data_roots=str(template["root"]))
    try:
        images, secret = template["images"], template["secret"]
        lines = [f"{images}/one/0000.png 0", f"{images}/two/0000.png 1", f"{secret} 0"]
        res = server.client.post(
            NEW_DATASET,
            data=_textfile_form(),
            files={
                "textfile_train_images": ("train.txt", "\n".join(lines).encode()),
                "textfile_labels_file": ("labels.txt", b"one\ntwo\n"),
            },
        )
        assert res.status_code == 200, res.text
        assert server.wait_job(res.json()["id"])["status"] == "Done"
        manifest = json.loads((tmp_path / "live" / "jobs" / res.json()["id"] / "manifest.json").read_text())
        assert manifest["splits"]["train"]["count"] == 2 and manifest["error_count"] == 0
        (refused,) = [w for w in manifest["parse"]["warnings"] if OUTSIDE in w]
        assert "line 3" in refused
    finally:
        server.stop()
