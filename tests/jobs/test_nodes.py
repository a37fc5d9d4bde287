"""Two machines as two local "nodes": `kiln train --nnodes 2 --node-rank R --rdzv-endpoint 127.0.0.1:PORT`
twice (c10d rendezvous, gloo, CPU) trains one model that reaches what one process reaches."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kiln.jobs.group import saved_world
from tests.conftest import Kiln, write_class_folder


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FIELDS = {"standard_networks": "lenet", "random_seed": "7", "lr_policy": "fixed", "learning_rate": "0.01"}


def test_two_nodes_train_like_one_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    app = Kiln(data)
    try:
        folder = write_class_folder(tmp_path / "imgs", {"a": 16, "b": 16, "c": 16}, size=(28, 28))
        dataset_id = app.built_dataset(folder, "bands", pct_val="25")  # 36 train, 12 val
        form = {"dataset": dataset_id, "model_name": "one", "train_epochs": "2", "batch_size": "12", **FIELDS}
        one = app.client.post("/models/images/classification.json", data=form).json()["id"]
        assert app.run(one) == "Done"
        reference = app.store.get_job(one).summary
    finally:
        app.close()

    endpoint = f"127.0.0.1:{_free_port()}"
    common = [sys.executable, "-m", "kiln", "--data-dir", str(data), "train", "--dataset", "bands"]
    common += ["--name", "two nodes", "--epochs", "2", "--batch-size", "6", "--seed", "7", "--lr", "0.01"]
    common += ["--lr-policy", "fixed", "--nnodes", "2", "--rdzv-endpoint", endpoint]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [*common, "--node-rank", str(rank)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
        for rank in (1, 0)  # the order they come up in does not matter
    ]
    try:
        outputs = [node.communicate(timeout=300)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, 9)
    assert [n.returncode for n in nodes] == [0, 0], "\n=====\n".join(o[-3000:] for o in outputs)
    assert "node 1 of 2: 1 processes" in outputs[0]

    app = Kiln(data)
    try:
        jobs = [j for j in app.store.list_jobs("model") if j.name == "two nodes"]
        assert len(jobs) == 1  # node 1 joined node 0's job, it made none of its own
        info = app.client.get(f"/models/{jobs[0].id}.json").json()
        assert info["status"] == "Done" and info["world_size"] == 2 and info["snapshots"] == [1.0, 2.0]
        final = info["summary"]["final"]
        assert final["val_accuracy"] == pytest.approx(reference["final"]["val_accuracy"], abs=100 / 12 + 1e-9)
        for key in ("train_loss", "val_loss"):  # node 0 reported what all ranks computed together
            assert final[key] == pytest.approx(reference["final"][key], rel=1e-3), key
        logs = app.store.logs(jobs[0].id, 500)
        assert any("2 nodes, 1 processes on this one" in line for line in logs), logs
        assert saved_world(app.settings.jobs_dir / jobs[0].id) == 2  # a resume on node 0 runs 2 processes
    finally:
        app.close()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--nnodes", "2"], "--rdzv-endpoint HOST:PORT is required"),
        (["--nnodes", "2", "--rdzv-endpoint", "node0"], "use HOST:PORT"),
        (["--nnodes", "2", "--rdzv-endpoint", "h:1", "--node-rank", "2"], "--node-rank 2: use 0 to 1"),
        (["--nnodes", "2", "--rdzv-endpoint", "h:1", "--queue"], "--queue"),
    ],
)
def test_node_options_are_checked(extra: list[str], message: str) -> None:
    from kiln.cli import build_parser
    from kiln.cli_nodes import launch_of

    args = build_parser().parse_args(["train", "--dataset", "x", "--name", "m", *extra])
    with pytest.raises(SystemExit, match=re.escape(message)):
        launch_of(args)
    assert launch_of(build_parser().parse_args(["train", "--dataset", "x", "--name", "m"])) is None
