"""Compare (issue 11): /models/compare.json and its page over two really trained models, and the home
page's multi-select actions (DELETE /jobs, POST /group, POST /abort_jobs) with their refusals."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Kiln, copy_data_dir, write_class_folder

CLASSES = {"one": 20, "three": 20, "two": 20}
JSON = {"Accept": "application/json"}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A Done dataset with val and test splits and two Done LeNets that differ in learning rate alone."""
    root = tmp_path_factory.mktemp("compare")
    folder = write_class_folder(root / "imgs", CLASSES, size=(28, 28))
    kiln = Kiln(root / "data")
    try:
        dataset = kiln.client.post(
            "/datasets/images/classification.json",
            data={
                "dataset_name": "digits",
                "folder_train": str(folder),
                "resize_channels": "1",
                "resize_width": "28",
                "resize_height": "28",
                "folder_pct_val": "25",
                "folder_pct_test": "25",
            },
        ).json()["id"]
        assert kiln.run(dataset) == "Done"
        models = []
        for name, lr in (("slow", "0.0005"), ("fast", "0.002")):
            fields = {"dataset": dataset, "model_name": name, "standard_networks": "lenet", "train_epochs": "2"}
            fields.update(random_seed="1", solver_type="ADAM", learning_rate=lr)
            model = kiln.client.post("/models/images/classification.json", data=fields).json()["id"]
            assert kiln.run(model) == "Done"
            models.append(model)
    finally:
        kiln.close()
    return {"root": root, "dataset": dataset, "models": models}


@pytest.fixture
def app(template: dict[str, Any], tmp_path: Path) -> Iterator[tuple[Kiln, dict[str, Any]]]:
    kiln = Kiln(copy_data_dir(template["root"] / "data", tmp_path / "data"))
    yield kiln, template
    kiln.close()


def compare(kiln: Kiln, ids: list[str]) -> dict[str, Any]:
    res = kiln.client.get("/models/compare.json", params={"ids": ",".join(ids)})
    assert res.status_code == 200, res.text
    return res.json()


def test_compare_json_has_each_models_curves_metrics_and_evaluation(app) -> None:
    kiln, t = app
    data = compare(kiln, t["models"])
    assert [m["name"] for m in data["models"]] == ["slow", "fast"]
    assert data["config_diff"] == ["learning_rate"]  # the one setting that differs
    for m in data["models"]:
        model = kiln.client.get(f"/models/{m['id']}.json").json()
        assert (m["network"], m["dataset_id"], m["dataset"], m["status"]) == ("lenet", t["dataset"], "digits", "Done")
        assert m["config"] == kiln.store.get_job(m["id"]).params["config"]
        series = kiln.client.get(f"/models/{m['id']}/metrics.json").json()["series"]
        for key in ("loss (train)", "loss (val)", "accuracy (val)"):  # the model page's points, with times
            curve = m["curves"][key]
            assert curve["epoch"] == series[key]["x"] and curve["value"] == series[key]["y"]
            assert len(curve["seconds"]) == len(curve["epoch"]) and curve["seconds"] == sorted(curve["seconds"])
            assert 0 < curve["seconds"][-1] <= m["elapsed"] + 0.1
            assert m["final"][key] == curve["value"][-1]
        val = m["curves"]["accuracy (val)"]
        assert m["best"]["accuracy (val)"] == max(val["value"]) and m["best"]["loss (val)"] == min(
            m["curves"]["loss (val)"]["value"]
        )
        assert m["best"]["epoch"] == val["epoch"][val["value"].index(max(val["value"]))]
        assert m["test_accuracy"] == model["test_accuracy"] and m["test_top5_accuracy"] == model["test_top5_accuracy"]
        ev = m["evaluation"]
        assert ev["source"] == "test split" and ev["labels"] == ["one", "three", "two"]
        assert ev["top1_accuracy"] == m["test_accuracy"]
        assert sum(map(sum, ev["confusion_matrix"])) == ev["scored"] == sum(c["support"] for c in ev["per_class"]) > 0
        diagonal = [row[i] for i, row in enumerate(ev["confusion_matrix"])]
        assert [round(100 * d / c["support"], 2) for d, c in zip(diagonal, ev["per_class"])] == [
            c["accuracy"] for c in ev["per_class"]
        ]
    table = data["per_class_accuracy"]
    assert [r["label"] for r in table] == ["one", "three", "two"]
    for i, row in enumerate(table):
        accs = [m["evaluation"]["per_class"][i]["accuracy"] for m in data["models"]]
        assert row["accuracy"] == accs and row["spread"] == round(max(accs) - min(accs), 2)


def test_without_a_test_split_the_newest_evaluation_is_used(app) -> None:
    kiln, t = app
    slow, fast = t["models"]
    shutil.rmtree(kiln.settings.jobs_dir / slow / "test-evaluation")
    made = kiln.client.post("/models/images/classification/evaluate.json", data={"job_id": slow, "split": "val"})
    assert made.status_code == 200, made.text
    assert kiln.run(made.json()["id"]) == "Done"
    result = kiln.client.get(f"/evaluations/{made.json()['id']}.json").json()
    first, second = compare(kiln, [slow, fast])["models"]
    assert first["evaluation"]["source"] == f"evaluation {result['name']}"
    assert first["evaluation"]["evaluation_id"] == result["id"]
    assert first["evaluation"]["confusion_matrix"] == result["confusion_matrix"]
    assert first["evaluation"]["per_class"] == result["per_class"]
    assert second["evaluation"]["source"] == "test split"


def test_the_page_shows_both_models_and_highlights_what_differs(app) -> None:
    kiln, t = app
    res = kiln.client.get(f"/models/compare?ids={','.join(t['models'])}")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    html = res.text
    assert '<tr class="differs" data-key="learning_rate">' in html
    assert '<tr class="same" data-key="solver_type">' in html and '<tr class="same" data-key="dataset">' in html
    rows = re.findall(r'<tr data-id="([^"]+)">', html)
    assert rows == t["models"]  # one metrics row per model, in the order asked
    assert html.count('<table class="confusion">') == 2 and 'id="per-class-compare"' in html
    chart = json.loads(re.search(r'<script type="application/json" id="compare-data">(.*?)</script>', html, re.S)[1])
    assert [m["id"] for m in chart["models"]] == t["models"]
    assert set(chart["models"][0]["curves"]) >= {"loss (train)", "loss (val)", "accuracy (val)"}
    assert kiln.client.get(f"/models/compare?ids={','.join(t['models'])}", headers=JSON).json()["models"]


def test_bad_ids_are_a_clear_400_or_a_404_naming_the_id(app) -> None:
    kiln, t = app
    slow, fast = t["models"]

    def error(ids: str, status: int) -> str:
        res = kiln.client.get("/models/compare.json", params={"ids": ids})
        assert res.status_code == status, res.text
        return res.json()["error"]["message"]

    assert "at least 2" in error(slow, 400) and error(slow, 400).startswith("ids:")
    assert "got 1" in error(f"{slow},{slow}, ,", 400)  # the same model twice is one model
    assert "at most 10" in error(",".join([slow, fast] + [f"x{i}" for i in range(9)]), 400)
    assert "at most 10" in error("," * 500, 400)
    assert kiln.client.get("/models/compare.json").status_code == 400
    assert error(f"{slow},nope-123", 404) == "ids: model nope-123 not found."
    assert error(f"{slow},{t['dataset']}", 404) == f"ids: model {t['dataset']} not found."  # a dataset is no model
    page = kiln.client.get(f"/models/compare?ids={slow}")  # the page gets kiln's error page
    assert page.status_code == 400 and "at least 2" in page.text
    both = kiln.client.get("/models/compare.json", params=[("ids", slow), ("ids", fast)])  # ids repeated
    assert [m["id"] for m in both.json()["models"]] == [slow, fast]


def test_anyone_who_may_see_the_model_page_may_compare(app) -> None:
    """Reading is open to every logged-in user (as /models/<id>); with accounts, nobody gets a 401."""
    kiln, t = app
    ids = ",".join(t["models"])
    assert kiln.as_user("bob").get(f"/models/compare.json?ids={ids}").status_code == 200  # alice's models
    from fastapi.testclient import TestClient

    from kiln.config import Settings
    from kiln.web.app import create_app

    locked = create_app(Settings.from_env(data_dir=kiln.data_dir, auth="accounts"), run_scheduler=False)
    nobody = TestClient(locked, follow_redirects=False)
    res = nobody.get(f"/models/compare.json?ids={ids}")
    assert res.status_code == 401 and res.json()["error"]["type"] == "Unauthorized"
    assert nobody.get(f"/models/compare?ids={ids}").headers["location"] == "/login?next=/models/compare"


def test_running_time_skips_the_time_between_runs() -> None:
    from kiln.store import Job
    from kiln.web.routes_compare import running_clock

    class History:
        def history(self, job_id: str) -> list[dict[str, Any]]:
            rows = [("Initialized", 0), ("Running", 5), ("Aborted", 15), ("Initialized", 50), ("Running", 100)]
            return [{"status": s, "ts": ts} for s, ts in rows] + [{"status": "Done", "ts": 120}]

    clock = running_clock(History(), Job("m", "model", "m", "Done", created=0.0))  # type: ignore[arg-type]
    assert [clock(ts) for ts in (5, 10, 15, 60, 105, 120, 500)] == [0, 5, 10, 10, 15, 30, 30]


# -- the home page's multi-select actions ------------------------------------------------------------
def jobs_of(kiln: Kiln, owner: str, status: str, n: int = 2) -> list[str]:
    ids = []
    for i in range(n):
        job_id = kiln.store.create_job("dataset", f"{owner} {i}", {}, owner)
        if status != "Initialized":
            kiln.store.set_status(job_id, status)
        ids.append(job_id)
    return ids


def test_delete_many_deletes_only_what_the_user_owns(kiln: Kiln) -> None:
    mine, bobs = jobs_of(kiln, "alice", "Done"), jobs_of(kiln, "bob", "Done")
    bob = kiln.as_user("bob")
    refused = bob.request("DELETE", "/jobs", data={"job_ids[]": mine}, headers=JSON)
    assert refused.status_code == 400 and refused.json()["error"]["message"].startswith("0 deleted, 2 not:")
    assert "Only alice may change this job." in refused.json()["error"]["message"]
    assert all(kiln.store.get_job(i) for i in mine)
    mixed = kiln.client.request("DELETE", "/jobs", data={"job_ids[]": [mine[0], bobs[0]]}, headers=JSON)
    assert mixed.status_code == 400 and mixed.json()["error"]["message"].startswith("1 deleted, 1 not:")
    assert kiln.store.get_job(mine[0]) is None and kiln.store.get_job(bobs[0]) is not None
    assert kiln.client.request("DELETE", "/jobs", data={"job_ids[]": [mine[1]]}).text == "Jobs deleted."
    assert bob.request("DELETE", "/jobs", data={"job_ids[]": bobs}).text == "Jobs deleted."


def test_group_many_is_all_or_nothing(kiln: Kiln) -> None:
    mine, bobs = jobs_of(kiln, "alice", "Done"), jobs_of(kiln, "bob", "Done")
    refused = kiln.client.post("/group", data={"job_ids[]": [*mine, bobs[0]], "group_name": "lab"}, headers=JSON)
    assert refused.status_code == 403 and refused.json()["error"]["message"] == "Only bob may change this job."
    assert {kiln.store.get_job(i).group_name for i in [*mine, bobs[0]]} == {""}
    assert kiln.client.post("/group", data={"job_ids[]": mine, "group_name": " lab "}).text == "Jobs regrouped."
    assert {kiln.store.get_job(i).group_name for i in mine} == {"lab"}
    rows = kiln.client.get("/completed_jobs.json").json()["datasets"]
    assert {r["group"] for r in rows if r["id"] in mine} == {"lab"}


def test_abort_many_says_which_were_not_aborted(kiln: Kiln) -> None:
    mine, bobs = jobs_of(kiln, "alice", "Initialized"), jobs_of(kiln, "bob", "Initialized")
    done = jobs_of(kiln, "alice", "Done", 1)
    res = kiln.client.post("/abort_jobs", data={"job_ids[]": [mine[0], bobs[0], *done]}, headers=JSON)
    message = res.json()["error"]["message"]
    assert res.status_code == 400 and message.startswith("1 of 3 jobs aborted"), message
    assert "Only bob may change this job." in message and "it is not running" in message
    assert kiln.store.get_job(mine[0]).status == "Aborted" and kiln.store.get_job(bobs[0]).status == "Initialized"
    assert kiln.client.post("/abort_jobs", data={"job_ids[]": [mine[1]]}).text == "Jobs aborted."
    assert kiln.store.get_job(mine[1]).status == "Aborted"
