"""What the machine has and how busy it is: GPUs through NVML, processes through psutil.

NVML (the nvidia-ml-py binding) reads the driver's counters without creating a CUDA context, so
the scheduler may list the GPUs and a worker may sample them while its ranks train. Everything
here degrades to "no GPU" when there is no driver, no NVML library or no device.

A job's hardware panel is written by its worker (:class:`Sampler`, every couple of seconds, to
``hardware.json`` in the job folder); the web server only reads that file.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from kiln.atomic import atomic_write_text

HARDWARE_JSON = "hardware.json"
SAMPLE_EVERY_S = 2.0
_nvml_lock = threading.Lock()
_nvml_state: dict[str, Any] = {"ready": None}


@dataclass(frozen=True)
class Gpu:
    """One GPU as the scheduler sees it: its CUDA index (PCI bus order, among the visible ones),
    its NVML index (what CUDA_VISIBLE_DEVICES names), name and memory."""

    index: int
    name: str
    memory_total: int  # bytes
    nvml: int = -1  # -1: a simulated GPU

    def label(self) -> str:
        """DIGITS' '#0 - NVIDIA H200 (139.8 GB)'."""
        return f"#{self.index} - {self.name} ({self.memory_total / 1e9:.1f} GB)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _nvml() -> Any:
    """The pynvml module, initialised once per process; None when NVML cannot be used here."""
    with _nvml_lock:
        if _nvml_state["ready"] is None:
            try:
                import pynvml

                pynvml.nvmlInit()
                _nvml_state["ready"] = pynvml
            except Exception:  # no package, no library, no driver: no GPU
                _nvml_state["ready"] = False
        return _nvml_state["ready"] or None


def _visible(count: int) -> list[int]:
    """NVML indices CUDA_VISIBLE_DEVICES leaves visible (all when unset; numbers only)."""
    text = os.environ.get("CUDA_VISIBLE_DEVICES")
    if text is None:
        return list(range(count))
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) >= count:
            break  # CUDA stops at the first invalid entry
        out.append(int(part))
    return out


def nvml_gpus() -> list[Gpu]:
    """The GPUs NVML sees (and CUDA_VISIBLE_DEVICES leaves), in PCI bus order; [] without NVML."""
    nv = _nvml()
    if nv is None:
        return []
    try:
        gpus = []
        for position, i in enumerate(_visible(nv.nvmlDeviceGetCount())):
            handle = nv.nvmlDeviceGetHandleByIndex(i)
            name = nv.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            gpus.append(Gpu(position, name, int(nv.nvmlDeviceGetMemoryInfo(handle).total), nvml=i))
        return gpus
    except Exception:
        return []


def gpu_stats(indices: list[int] | None = None) -> list[dict[str, Any]]:
    """Utilisation %, memory used/total (bytes) and temperature (°C) of GPUs (NVML indices);
    [] without NVML. A counter a GPU does not offer is left out of its entry."""
    nv = _nvml()
    if nv is None:
        return []
    out = []
    try:
        wanted = indices if indices is not None else list(range(nv.nvmlDeviceGetCount()))
    except Exception:
        return []
    for i in wanted:
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(i)
            name = nv.nvmlDeviceGetName(handle)
            memory = nv.nvmlDeviceGetMemoryInfo(handle)
            entry: dict[str, Any] = {
                "index": i,
                "name": name.decode() if isinstance(name, bytes) else str(name),
                "memory_used": int(memory.used),
                "memory_total": int(memory.total),
            }
        except Exception:
            continue
        for key, read in (
            ("utilization", lambda h: nv.nvmlDeviceGetUtilizationRates(h).gpu),
            ("temperature", lambda h: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
        ):
            try:
                entry[key] = int(read(handle))
            except Exception:
                pass
        out.append(entry)
    return out


def process_stats(root: psutil.Process, cache: dict[int, psutil.Process] | None = None) -> list[dict[str, Any]]:
    """CPU % (since the previous call with the same cache) and RSS of `root` and its descendants.

    ``cache`` keeps the psutil.Process objects between calls: cpu_percent() needs its previous
    reading, and a process first seen reads 0.0 once.
    """
    cache = {} if cache is None else cache
    try:
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    out = []
    for proc in family:
        proc = cache.setdefault(proc.pid, proc)
        try:
            with proc.oneshot():
                out.append(
                    {
                        "pid": proc.pid,
                        "name": _role(proc),
                        "cpu_percent": round(proc.cpu_percent(None), 1),
                        "rss": int(proc.memory_info().rss),
                    }
                )
        except psutil.Error:
            continue
    for pid in [p for p in cache if p not in {q["pid"] for q in out}]:
        del cache[pid]
    return out


def _role(proc: psutil.Process) -> str:
    """'worker', 'torchrun', 'rank 1', or the process name."""
    try:
        cmd = " ".join(proc.cmdline())
        is_rank = "kiln.jobs.group rank" in cmd or "kiln.jobs.group train" in cmd or "-m kiln.training" in cmd
        env_rank = proc.environ().get("RANK") if is_rank else None
    except psutil.Error:
        return "?"
    if env_rank is not None:
        return f"rank {env_rank}"
    if "torch.distributed.run" in cmd or "kiln.jobs.group torchrun" in cmd:
        return "torchrun"
    if "kiln.jobs.worker" in cmd:
        return "worker"
    try:
        return proc.name()
    except psutil.Error:
        return "?"


def snapshot(root: psutil.Process, gpus: dict[int, int] | None, cache: dict[int, psutil.Process]) -> dict[str, Any]:
    """One reading of the hardware panel: the job's GPUs ({NVML index: kiln's index}) and its processes."""
    procs = process_stats(root, cache)
    readings = gpu_stats(list(gpus)) if gpus else []
    for entry in readings:
        entry["index"] = (gpus or {}).get(entry["index"], entry["index"])
    return {
        "ts": time.time(),
        "gpus": readings,
        "processes": procs,
        "cpu_percent": round(sum(p["cpu_percent"] for p in procs), 1),
        "rss": sum(p["rss"] for p in procs),
        "memory_total": int(psutil.virtual_memory().total),
    }


class Sampler:
    """A worker's thread writing its job's hardware panel to ``<job dir>/hardware.json``."""

    def __init__(self, job_dir: Path, gpus: dict[int, int] | None = None, every_s: float = SAMPLE_EVERY_S) -> None:
        self.path = Path(job_dir) / HARDWARE_JSON
        self.gpus = gpus
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kiln-hardware", daemon=True)
        self._root = psutil.Process()
        self._cache: dict[int, psutil.Process] = {}

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample(self) -> dict[str, Any]:
        reading = snapshot(self._root, self.gpus, self._cache)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(reading))
        return reading

    def _run(self) -> None:
        while True:
            try:
                self.sample()
            except Exception:  # the panel is best effort: never disturb the job
                pass
            if self._stop.wait(self.every_s):
                return


def read_panel(job_dir: Path, max_age_s: float = 4 * SAMPLE_EVERY_S) -> dict[str, Any] | None:
    """The newest reading a running job's worker wrote; None when there is none or it is stale."""
    try:
        reading = json.loads((Path(job_dir) / HARDWARE_JSON).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(reading, dict) or time.time() - float(reading.get("ts", 0)) > max_age_s:
        return None
    return reading
