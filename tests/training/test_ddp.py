"""The same loop under torchrun: two CPU processes (gloo), one set of snapshots, shared metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kiln.training import checkpoint


def test_torchrun_two_processes(tiny, tmp_path):
    out = tmp_path / "model"
    cfg = {
        "network": "lenet",
        "train_epochs": 2,
        "batch_size": 6,
        "random_seed": 5,
        "lr_policy": "fixed",
        "device": "cpu",
    }  # also on a machine with one GPU
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
            "-m",
            "kiln.training",
            "--dataset",
            str(tiny.dir),
            "--out",
            str(out),
            "--config",
            json.dumps(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    summary = json.loads(lines[-1])  # printed once, by rank 0
    assert sum(line.startswith("{") for line in lines) == 1
    # 36 images over 2 ranks: 18 each, batch 6 per rank -> 3 iterations per epoch
    assert summary["world_size"] == 2 and summary["iterations_per_epoch"] == 3 and summary["iterations"] == 6
    assert "x 2 processes" in proc.stdout and "[val] epoch 2" in proc.stdout
    assert summary["final"]["val_accuracy"] > 50
    assert checkpoint.list_snapshots(out) == [1.0, 2.0]
    assert sorted(p.name for p in out.iterdir()) == [
        "resume.json",
        "resume.pt",
        "snapshot_1.json",
        "snapshot_1.safetensors",
        "snapshot_2.json",
        "snapshot_2.safetensors",
    ]
    state = checkpoint.load_resume(out)
    assert len(state["rng"]) == 2  # each rank's random streams
    model, meta = checkpoint.load_snapshot(out)
    assert meta["epoch"] == 2.0 and not any(k.startswith("module.") for k in model.state_dict())
