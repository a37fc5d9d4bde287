"""The hardware panel: NVML for GPUs (none on this machine: it must degrade to none), psutil for the
job's processes, sampled by the worker into hardware.json, which is all the web server reads."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from kiln import hardware
from kiln.config import Settings
from kiln.jobs.gpus import Inventory
from tests.conftest import Kiln


class FakeNvml:
    """pynvml's calls kiln makes, for two GPUs; the second has no utilisation counter."""

    NVML_TEMPERATURE_GPU = 0

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h: int) -> bytes:
        return f"Fake GPU {h}".encode()

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(total=80 << 30, used=(h + 1) << 30)

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        if h == 1:
            raise RuntimeError("not supported")
        return SimpleNamespace(gpu=87)

    def nvmlDeviceGetTemperature(self, h: int, kind: int) -> int:
        return 60 + h


def test_no_gpu_here_means_none_everywhere() -> None:
    assert hardware.nvml_gpus() == [] and hardware.gpu_stats() == [] and hardware.gpu_stats([0]) == []
    assert Inventory.detect(Settings()).total == 0


def test_nvml_readings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(hardware._nvml_state, "ready", FakeNvml())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert [(g.index, g.nvml, g.name) for g in hardware.nvml_gpus()] == [(0, 0, "Fake GPU 0"), (1, 1, "Fake GPU 1")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # what CUDA will call cuda:0
    assert [(g.index, g.nvml) for g in hardware.nvml_gpus()] == [(0, 1)]
    first, second = hardware.gpu_stats([0, 1])
    assert first == {
        "index": 0,
        "name": "Fake GPU 0",
        "memory_used": 1 << 30,
        "memory_total": 80 << 30,
        "utilization": 87,
        "temperature": 60,
    }
    assert "utilization" not in second and second["temperature"] == 61  # a missing counter is left out
    reading = hardware.snapshot(psutil.Process(), {1: 0}, {})  # NVML's GPU 1 is the job's #0
    assert [(g["index"], g["name"]) for g in reading["gpus"]] == [(0, "Fake GPU 1")]


def test_the_sampler_reads_the_job_processes(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; sum(range(10**8)); time.sleep(30)"])
    try:
        with hardware.Sampler(tmp_path, every_s=0.1):
            deadline = time.monotonic() + 20
            while True:  # cpu_percent needs two readings of a process
                panel = hardware.read_panel(tmp_path)
                pids = {p["pid"]: p for p in (panel or {}).get("processes", [])}
                if child.pid in pids and pids[child.pid]["cpu_percent"] > 0:
                    break
                assert time.monotonic() < deadline, panel
                time.sleep(0.1)
        assert panel["gpus"] == [] and panel["rss"] >= pids[child.pid]["rss"] > 0
        assert psutil.Process().pid in pids and panel["memory_total"] == psutil.virtual_memory().total
        stale = {**panel, "ts": time.time() - 60}
        (tmp_path / hardware.HARDWARE_JSON).write_text(json.dumps(stale))
        assert hardware.read_panel(tmp_path) is None  # a worker that stopped writing shows nothing
    finally:
        child.kill()
        child.wait()


def test_the_server_only_reads_the_worker_file(tmp_path: Path) -> None:
    app = Kiln(tmp_path / "data")
    try:
        job_id = app.store.create_job("model", "m", {"config": {}}, "alice")
        assert app.client.get(f"/models/{job_id}/hardware.json").json() == {
            "pid": None,
            "running": False,
            "gpus": [],
            "processes": [],
        }
        app.store.set_status(job_id, "Running", pid=4242)
        assert app.client.get(f"/models/{job_id}/hardware.json").json()["processes"] == []  # no reading yet
        reading = {
            "ts": time.time(),
            "gpus": [{"index": 0, "name": "G", "memory_used": 1, "memory_total": 2}],
            "processes": [{"pid": 4242, "name": "worker", "cpu_percent": 99.0, "rss": 1 << 30}],
            "cpu_percent": 99.0,
            "rss": 1 << 30,
            "memory_total": 4 << 30,
        }
        folder = app.settings.jobs_dir / job_id
        folder.mkdir(parents=True)
        (folder / hardware.HARDWARE_JSON).write_text(json.dumps(reading))
        got = app.client.get(f"/models/{job_id}/hardware.json").json()
        assert (
            got["gpus"] == reading["gpus"]
            and got["processes"] == reading["processes"]
            and got["memory_percent"] == 25.0
        )
    finally:
        app.close()
