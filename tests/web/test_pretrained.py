"""Pretrained models over the API (issue 10): download, upload as pretrained, fine-tune on another
dataset, download again; DIGITS' upload form; Make pretrained model; refusals that name the field."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from tests.conftest import Kiln, copy_data_dir, write_class_folder

JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two Done 28x28 grey datasets (3 classes, 2 other classes) and a LeNet trained 1 epoch on the first."""
    root = tmp_path_factory.mktemp("pretrained")
    kiln = Kiln(root / "data")
    try:
        first = kiln.built_dataset(write_class_folder(root / "a", {"one": 12, "three": 12, "two": 12}), "abc")
        second = kiln.built_dataset(write_class_folder(root / "b", {"four": 12, "five": 12}), "other")
        form = {"dataset": first, "model_name": "base", "standard_networks": "lenet", "train_epochs": "1"}
        model = kiln.client.post("/models/images/classification.json", data=dict(form, random_seed="1")).json()["id"]
        assert kiln.run(model) == "Done"
    finally:
        kiln.close()
    return {"root": root, "first": first, "second": second, "model": model}


@pytest.fixture
def app(template: dict[str, Any], tmp_path: Path) -> Iterator[tuple[Kiln, dict[str, Any]]]:
    kiln = Kiln(copy_data_dir(template["root"] / "data", tmp_path / "data"))
    yield kiln, template
    kiln.close()


def download(kiln: Kiln, path: str) -> bytes:
    res = kiln.client.get(path)
    assert res.status_code == 200, res.text
    return res.content


def upload_archive(kiln: Kiln, data: bytes, filename: str = "model.tar.gz", **fields: str) -> Any:
    return kiln.client.post("/pretrained_models/upload_archive", files={"archive": (filename, data)}, data=fields)


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_round_trip_download_upload_finetune_download(app: tuple[Kiln, dict[str, Any]], tmp_path: Path) -> None:
    kiln, t = app
    archive = download(kiln, f"/models/{t['model']}/download.tar.gz")
    res = upload_archive(kiln, archive, job_name="lenet base")
    assert res.status_code == 200 and res.json()["status"] == "success", res.text
    pre_id = res.json()["id"]
    rows = kiln.client.get("/completed_jobs.json").json()["pretrained_models"]
    assert [(r["id"], r["name"], r["type"], r["has_labels"]) for r in rows] == [
        (pre_id, "lenet base", "pretrained_model", True)
    ]
    info = kiln.client.get(f"/pretrained_models/{pre_id}.json").json()
    assert info["num_classes"] == 3 and info["image dimensions"] == [28, 28, 1] and info["network"] == "lenet"
    # the same weights as the model's snapshot, byte for byte in value
    again = members(download(kiln, f"/pretrained_models/{pre_id}/download"))
    (tmp_path / "a.safetensors").write_bytes(members(archive)["weights.safetensors"])
    (tmp_path / "b.safetensors").write_bytes(again["weights.safetensors"])
    a, b = load_file(tmp_path / "a.safetensors"), load_file(tmp_path / "b.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    # fine-tune on a dataset with another class count: the last layer starts fresh
    form = {"dataset": t["second"], "model_name": "tuned", "method": "pretrained", "pretrained_networks": pre_id}
    res = kiln.client.post("/models/images/classification.json", data=dict(form, train_epochs="1", random_seed="1"))
    assert res.status_code == 200, res.text
    tuned = res.json()["id"]
    assert kiln.run(tuned) == "Done"
    config = kiln.client.get(f"/models/{tuned}.json").json()
    assert pre_id in json.dumps(config)
    log = "\n".join(kiln.store.logs(tuned, 500))
    assert "ip2.weight" in log and "start" in log.lower()
    tuned_archive = members(download(kiln, f"/models/{tuned}/download.tar.gz"))
    assert json.loads(tuned_archive["info.json"])["labels"] == ["five", "four"]


def test_make_pretrained_model_from_a_snapshot(app: tuple[Kiln, dict[str, Any]]) -> None:
    kiln, t = app
    res = kiln.client.post(f"/models/{t['model']}/to_pretrained", data={"snapshot_epoch": "1"})
    assert res.status_code == 302 and res.headers["location"] == "/?tab=3"
    res = kiln.client.get(f"/models/{t['model']}/to_pretrained", params={"epoch": "1"}, headers=JSON)
    pre_id = res.json()["id"]
    assert kiln.client.get(f"/pretrained_models/{pre_id}.json").json()["name"] == "base (epoch 1)"
    assert kiln.client.get(f"/models/{t['model']}/to_pretrained", params={"epoch": "7"}).status_code == 404
    page = kiln.client.get(f"/pretrained_models/{pre_id}")
    assert page.status_code == 200 and "base (epoch 1)" in page.text and "New model from it" in page.text
    new = kiln.client.get("/models/images/classification/new", params={"pretrained_networks": pre_id})
    assert f'value="{pre_id}" id="pre-{pre_id}" checked' in new.text
    # Customize gives its text, starting from its weights
    custom = kiln.client.post("/models/customize.json", params={"network": pre_id}).json()
    assert "InnerProduct" in custom["network"] and custom["snapshot"].startswith(f"{pre_id}:")


def test_rename_and_delete(app: tuple[Kiln, dict[str, Any]]) -> None:
    kiln, t = app
    pre_id = kiln.client.post(f"/models/{t['model']}/to_pretrained", headers=JSON).json()["id"]
    assert kiln.client.put(f"/jobs/{pre_id}", data={"job_name": "renamed"}).status_code == 200
    clone = kiln.client.post(f"/clone/{pre_id}")  # a pretrained model clones into a new model started from it
    assert clone.status_code == 302 and clone.headers["location"].endswith(f"?pretrained_networks={pre_id}")
    assert kiln.client.get(f"/pretrained_models/{pre_id}.json").json()["name"] == "renamed"
    assert kiln.as_user("bob").delete(f"/pretrained_models/{pre_id}").status_code == 403
    assert kiln.client.delete(f"/pretrained_models/{pre_id}").text == "Job deleted."
    assert kiln.client.get(f"/pretrained_models/{pre_id}.json").status_code == 404
    assert not (kiln.settings.jobs_dir / pre_id).exists()


def test_upload_weights_network_and_labels(app: tuple[Kiln, dict[str, Any]]) -> None:
    """DIGITS' form: the files of an archive uploaded one by one."""
    kiln, t = app
    files = members(download(kiln, f"/models/{t['model']}/download.tar.gz"))
    upload = {
        "weights_file": ("w.safetensors", files["weights.safetensors"]),
        "model_def_file": ("lenet.prototxt", files["network.prototxt"]),
        "labels_file": ("labels.txt", files["labels.txt"]),
    }
    fields = {"job_name": "by hand", "image_type": "1", "width": "28", "height": "28"}
    res = kiln.client.post("/pretrained_models/new", files=upload, data=fields)
    assert res.status_code == 302 and res.headers["location"] == "/?tab=3", res.text
    # no labels: classes counted from the weights
    res = kiln.client.post(
        "/pretrained_models/new", files={**upload, "labels_file": ("", b"")}, data=fields, headers=JSON
    )
    info = kiln.client.get(f"/pretrained_models/{res.json()['id']}.json").json()
    assert info["num_classes"] == 3 and info["has_labels"] is False


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"job_name": ""}, "job_name", "required"),
        ({"framework": "caffe"}, "framework", "safetensors"),
        ({"image_type": "2"}, "image_type", "grayscale"),
        ({"width": "wide"}, "width", "whole number"),
        ({"weights_file": ("w.caffemodel", b"x")}, "weights_file", "safetensors only"),
        ({"labels_file": ("l.txt", b"a\nb\nc\nd\ne\n")}, "weights_file", "do not match the network"),
        ({"model_def_file": ("n.prototxt", b"layer {")}, "model_def_file", "does not build"),
        ({"model_def_file": None}, "model_def_file", "required"),
    ],
)
def test_upload_form_refusals_name_the_field(app: tuple[Kiln, dict[str, Any]], change, field, words) -> None:
    kiln, t = app
    files = members(download(kiln, f"/models/{t['model']}/download.tar.gz"))
    upload: dict[str, Any] = {
        "weights_file": ("w.safetensors", files["weights.safetensors"]),
        "model_def_file": ("lenet.prototxt", files["network.prototxt"]),
        "labels_file": ("labels.txt", files["labels.txt"]),
    }
    fields = {"job_name": "x", "image_type": "1", "width": "28", "height": "28"}
    for key, value in change.items():
        (upload if key.endswith("_file") else fields)[key] = value
    res = kiln.client.post(
        "/pretrained_models/new", files={k: v for k, v in upload.items() if v}, data=fields, headers=JSON
    )
    assert res.status_code == 400, res.text
    assert words in res.json()["errors"][field][0]
    assert kiln.client.get("/completed_jobs.json").json()["pretrained_models"] == []


def hostile_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("info.json", "{}")
        zf.writestr("../../escape.txt", "x")
    return out.getvalue()


def symlink_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        link = tarfile.TarInfo("weights.safetensors")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (hostile_zip(), "outside"),
        (symlink_tar(), "link"),
        (b"not an archive at all", "archive"),
        (b"", "upload an archive"),
    ],
)
def test_hostile_or_broken_archives_are_a_clear_400(app: tuple[Kiln, dict[str, Any]], data: bytes, words: str) -> None:
    kiln, _ = app
    res = upload_archive(kiln, data) if data else kiln.client.post("/pretrained_models/upload_archive", data={})
    assert res.status_code == 400, res.text
    assert words in res.json()["errors"]["archive"][0] and "status" not in res.json()
    assert not (kiln.settings.jobs_dir.parent / "escape.txt").exists()
    assert not any(
        p.name.startswith(("kiln-upload-", "kiln-pretrained-", ".")) for p in kiln.settings.jobs_dir.iterdir()
    )


def test_archive_whose_weights_do_not_fit(app: tuple[Kiln, dict[str, Any]]) -> None:
    kiln, t = app
    files = members(download(kiln, f"/models/{t['model']}/download.tar.gz"))
    info = json.loads(files["info.json"])
    info["snapshot"]["network_text"] = info["snapshot"]["network_text"].replace("num_output: 500", "num_output: 64")
    files["info.json"] = json.dumps(info).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tf:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tf.addfile(member, io.BytesIO(data))
    res = upload_archive(kiln, out.getvalue())
    assert (
        res.status_code == 400 and "ip1.weight is 500x800 in the weights, 64x800" in res.json()["errors"]["archive"][0]
    )


def test_a_pretrained_id_starts_a_previous_or_custom_network_too(app: tuple[Kiln, dict[str, Any]]) -> None:
    """`kiln train --from <pretrained id>` sends method=previous; the Custom tab's start field takes one too."""
    kiln, t = app
    pre_id = kiln.client.post(f"/models/{t['model']}/to_pretrained", headers=JSON).json()["id"]
    form = {"dataset": t["second"], "model_name": "from pre", "train_epochs": "1"}
    res = kiln.client.post(
        "/models/images/classification.json", data=dict(form, method="previous", previous_networks=pre_id)
    )
    assert res.status_code == 200, res.text
    config = kiln.store.get_job(res.json()["id"]).params["config"]
    assert pre_id in config["pretrained_from"] and config["pretrained_weights"].endswith(".safetensors")
    text = kiln.client.post("/models/customize.json", params={"network": pre_id}).json()["network"]
    res = kiln.client.post(
        "/models/images/classification.json",
        data=dict(form, method="custom", custom_network=text, custom_network_snapshot=pre_id),
    )
    assert res.status_code == 200, res.text
