"""GPUs as the scheduler hands them out: the inventory, a job's request, and the choice.

DIGITS' model form asks for GPUs with ``select_gpu``, ``select_gpus``, ``select_gpus_list`` and
``select_gpu_count`` (reference 2.1 and 6.3): exactly those GPUs (the job waits until all of them
are free), or the next N free ones; with no GPU at all, the job runs on the CPU. Kiln adds
``share_gpu`` (a GPU goes to two jobs only when both ask for it) and ``cpu_processes`` (a CPU job
as N torch.distributed processes). The fields are declared here, once; the model form, the API,
``kiln train``, OpenAPI and docs/api.md read them.

The inventory comes from NVML (kiln.hardware; no CUDA context), or is simulated with
KILN_FAKE_GPUS=N: the scheduler then hands out N pretend GPUs while the jobs train on the CPU.
Which GPUs a job got is recorded in its params (``gpus``) when it starts; the GPUs held are those
of the Running jobs, so a job that ends, fails or is interrupted frees its GPUs by its status alone.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from kiln.config import Settings
from kiln.fields import Field, FieldError
from kiln.forms import TRUE
from kiln.hardware import Gpu, nvml_gpus
from kiln.store import Job, Store

MAX_GPUS = 1024
MAX_PROCESSES = 64
SIMULATED_NAME = "Simulated GPU"


def _gpu_list_problem(value: str) -> str | None:
    return (
        None if re.fullmatch(r"\s*(\d+\s*(,\s*\d+\s*)*)?", value) else "Use GPU indices separated by commas, e.g. 0,1."
    )


def _select_gpu_problem(value: str) -> str | None:
    return None if value == "next" or value.isdigit() else "Use next, or a GPU index such as 0."


FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field(
            "select_gpu",
            "GPU",
            str,
            "one GPU: next (the next free one) or its index",
            extra_check=_select_gpu_problem,
        ),
        Field(
            "select_gpus",
            "GPUs",
            str,
            "exactly these GPUs (indices; the job waits until all are free); the form may repeat it",
            extra_check=_gpu_list_problem,
        ),
        Field(
            "select_gpus_list",
            "GPU list",
            str,
            "comma list of GPU indices, as select_gpus",
            extra_check=_gpu_list_problem,
        ),
        Field("select_gpu_count", "GPU count", int, "use this many GPUs, the next free ones", low=1, high=MAX_GPUS),
        Field("share_gpu", "Share GPUs", bool, "may run on a GPU another sharing job uses (never on one held alone)"),
        Field(
            "cpu_processes",
            "CPU processes",
            int,
            "on the CPU, train as this many torch.distributed processes (gloo); batch size is per process",
            low=1,
            high=MAX_PROCESSES,
        ),
    )
}
MULTI_FIELDS = ("select_gpus",)  # a multi-select: a form may send it several times
GPU_JOBS = ("model", "evaluation")  # the job types that may run on a GPU


@dataclass(frozen=True)
class Inventory:
    """Every GPU jobs may use on this machine."""

    gpus: tuple[Gpu, ...] = ()
    simulated: bool = False

    @classmethod
    def detect(cls, settings: Settings) -> Inventory:
        if settings.fake_gpus > 0:
            fake = (Gpu(i, SIMULATED_NAME, 16 << 30) for i in range(settings.fake_gpus))
            return cls(tuple(fake), simulated=True)
        return cls(tuple(nvml_gpus()))

    @property
    def total(self) -> int:
        return len(self.gpus)

    @property
    def real(self) -> bool:
        return bool(self.gpus) and not self.simulated

    def nvml_ids(self, indices: list[int]) -> list[int]:
        by_index = {g.index: g.nvml for g in self.gpus}
        return [by_index[i] for i in indices if i in by_index]

    def to_dict(self) -> dict[str, Any]:
        return {"simulated": self.simulated, "gpus": [g.to_dict() for g in self.gpus]}


@dataclass(frozen=True)
class Request:
    """What a job asks for: exactly `gpus`, or `count` free ones; CPU ranks when it has no GPU."""

    gpus: tuple[int, ...] = ()
    count: int = 1
    share: bool = False
    processes: int = 1
    cpu_only: bool = False  # device cpu: no GPU, even where there are some
    optional: bool = False  # inference: a free GPU if there is one, else the CPU at once

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Request:
        data = dict(data or {})
        data["gpus"] = tuple(int(g) for g in data.get("gpus") or ())
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["gpus"] = list(self.gpus)
        return out

    def wanted(self, inventory: Inventory) -> int:
        """How many GPUs this job takes here (0: it runs on the CPU)."""
        if self.cpu_only or inventory.total == 0:
            return 0
        return len(self.gpus) or self.count

    def problem(self, inventory: Inventory) -> FieldError | None:
        """A request this machine can never meet, named by its field."""
        if self.cpu_only or inventory.total == 0:
            return None
        missing = [g for g in self.gpus if g >= inventory.total]
        if missing:
            return FieldError(
                "select_gpus",
                f"This server has no GPU {missing[0]} (it has {_count(inventory.total)}: 0-{inventory.total - 1}).",
            )
        if not self.gpus and self.count > inventory.total:
            return FieldError("select_gpu_count", f"This server has {_count(inventory.total)}; asked for {self.count}.")
        return None


def _count(n: int) -> str:
    return f"{n} GPU" + ("" if n == 1 else "s")


def _indices(name: str, text: str, errors: dict[str, list[str]]) -> tuple[int, ...]:
    problem = _gpu_list_problem(text)
    if problem:
        errors.setdefault(name, []).append(problem)
        return ()
    parts = [int(p) for p in text.split(",") if p.strip()]
    if len(parts) > MAX_GPUS:
        errors.setdefault(name, []).append(f"At most {MAX_GPUS} GPUs.")
        return ()
    return tuple(sorted(set(parts)))


def _int_field(name: str, form: dict[str, Any], default: int, errors: dict[str, list[str]]) -> int:
    text = str(form.get(name) or "").strip()
    if not text:
        return default
    try:
        number = float(text)
        if not number.is_integer():
            raise ValueError(text)
        value = int(number)
        FIELDS[name].check(value)
        return value
    except ValueError as exc:
        errors.setdefault(name, []).append(
            exc.message if isinstance(exc, FieldError) else f"Not a valid integer: {text!r}."
        )
        return default


def request_from_form(form: dict[str, Any], device: str, inventory: Inventory, errors: dict[str, list[str]]) -> Request:
    """The form's GPU request (DIGITS' precedence: select_gpus, select_gpus_list, select_gpu, then
    select_gpu_count); ``device`` cpu asks for none, cuda:0,1 for those. Problems go to ``errors``,
    under the field that caused them."""
    device = (device or "auto").strip().lower()
    gpus: tuple[int, ...] = ()
    source = "select_gpu_count"
    single = str(form.get("select_gpu") or "next").strip()
    if _select_gpu_problem(single):
        errors.setdefault("select_gpu", []).append(str(_select_gpu_problem(single)))
        single = "next"
    for name, text in (
        ("select_gpus", str(form.get("select_gpus") or "").strip()),
        ("select_gpus_list", str(form.get("select_gpus_list") or "").strip()),
        ("select_gpu", "" if single == "next" else single),
        ("device", device.partition(":")[2] if device.startswith("cuda:") else ""),
    ):
        if text:
            gpus, source = _indices(name, text, errors), name
            break
    count = _int_field("select_gpu_count", form, 1, errors)
    processes = _int_field("cpu_processes", form, 1, errors)
    share = str(form.get("share_gpu") or "").strip().lower() in TRUE
    request = Request(gpus=gpus, count=count, share=share, processes=processes, cpu_only=device == "cpu")
    if device.startswith("cuda") and inventory.total == 0:
        errors.setdefault("device", []).append("This server has no GPU; use device auto or cpu.")
    bad = request.problem(inventory)
    if bad is not None:
        errors.setdefault(source if request.gpus else bad.field, []).append(bad.message)
    return request


# -- who holds what ---------------------------------------------------------------------------------
Holders = dict[int, list[bool]]  # GPU index -> the share flags of the jobs holding it


def holders(store: Store, also: list[Job] | None = None) -> Holders:
    """The GPUs held by Running jobs (and by `also`: jobs just started, not Running yet)."""
    held: Holders = {}
    seen: set[str] = set()
    for job in [*store.jobs_with_status(["Running"]), *(also or [])]:
        if job.id in seen:
            continue
        seen.add(job.id)
        share = bool(job.params.get("resources", {}).get("share"))
        for g in job.params.get("gpus") or ():
            held.setdefault(int(g), []).append(share)
    return held


def _usable(g: int, share: bool, held: Holders) -> bool:
    """Free, or held only by sharing jobs when this job shares too."""
    return not held.get(g) or (share and all(held[g]))


def choose(request: Request, inventory: Inventory, held: Holders) -> list[int] | None:
    """The GPUs this job gets now ([] for the CPU), or None when it must wait for them."""
    wanted = request.wanted(inventory)
    if wanted == 0:
        return []
    if request.gpus:
        ok = all(_usable(g, request.share, held) for g in request.gpus)
        return list(request.gpus) if ok else ([] if request.optional else None)
    usable = [g.index for g in inventory.gpus if _usable(g.index, request.share, held)]
    usable.sort(key=lambda g: len(held.get(g, [])))  # free ones first, then the least shared
    if len(usable) < wanted:
        return [] if request.optional else None
    return sorted(usable[:wanted])


def availability(store: Store, inventory: Inventory) -> dict[str, int]:
    """DIGITS' 'x/y GPUs available' (its gpus_available event): total and not held by any job."""
    held = holders(store)
    return {
        "total_gpu_count": inventory.total,
        "remaining_gpu_count": sum(1 for g in inventory.gpus if not held.get(g.index)),
    }


def job_request(job: Job) -> Request:
    """What a job asks for; model jobs from their form, evaluations take a free GPU or none."""
    if job.type == "evaluation":
        return Request(count=1, optional=True)
    if job.type not in GPU_JOBS:
        return Request(cpu_only=True)
    config_device = str(job.params.get("config", {}).get("device") or "auto")
    stored = job.params.get("resources")
    if stored is None:  # a job from before GPUs were scheduled: its device says it all
        errors: dict[str, list[str]] = {}
        return request_from_form({}, config_device, Inventory(), errors)
    return Request.from_dict(stored)


# -- what a started job runs on ---------------------------------------------------------------------
def world_size(request: Request, gpus: list[int], inventory: Inventory) -> int:
    """Processes in the job's group: one per real GPU, else cpu_processes."""
    return len(gpus) if gpus and inventory.real else max(1, request.processes)


def run_device(gpus: list[int], inventory: Inventory, configured: str) -> str:
    """The torch device of a single-process run: cuda:<index> for a real GPU, cpu where this
    machine's GPUs are simulated or not given to the job, else what the form said (auto)."""
    if gpus and inventory.real:
        return f"cuda:{gpus[0]}"
    if inventory.total:
        return "cpu"
    return configured


def group_env(gpus: list[int], inventory: Inventory) -> dict[str, str]:
    """Environment of a job's torchrun group: its GPUs only (in PCI order), or none at all."""
    if gpus and inventory.real:
        ids = inventory.nvml_ids(gpus)
        return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(map(str, ids))}
    return {"CUDA_VISIBLE_DEVICES": ""} if inventory.total else {}


def record(store: Store, job: Job, chosen: list[int], inventory: Inventory) -> Job:
    """Write down, before the job starts, which GPUs it got, the device a single process uses and
    how many processes its group has; returns the job as updated."""
    request = job_request(job)
    configured = str(job.params.get("config", {}).get("device") or "auto") if job.type == "model" else "cpu"
    device = run_device(chosen, inventory, configured)
    params = {
        **job.params,
        "gpus": chosen,
        "run_device": device,
        "world_size": world_size(request, chosen, inventory) if job.type == "model" else 1,
        "simulated_gpus": inventory.simulated,
    }
    store.update_fields(job.id, params=params)
    return store.get_job(job.id) or job


def worker_env() -> dict[str, str]:
    """CUDA numbers GPUs in PCI bus order, as NVML does, so that cuda:<i> is GPU #i of the inventory."""
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def form_values(form: Any) -> dict[str, Any]:
    """A submitted form as a dict; a multi-select (select_gpus) sent several times becomes a comma list."""
    out = dict(form.items())
    for name in MULTI_FIELDS:
        values = [str(v) for v in form.getlist(name)] if hasattr(form, "getlist") else []
        if len(values) > 1:
            out[name] = ",".join(values)
    return out


# -- inference --------------------------------------------------------------------------------------
def inference_device(store: Store, inventory: Inventory) -> str:
    """Where a classification runs now: the first real GPU no job holds (DIGITS), else the CPU at
    once; it never waits for a GPU. Simulated GPUs classify on the CPU."""
    if not inventory.real:
        return "cpu"
    held = holders(store)
    free = [g.index for g in inventory.gpus if not held.get(g.index)]
    return f"cuda:{free[0]}" if free else "cpu"


def job_device(job: Job) -> str:
    """Where a job's own inference runs (an evaluation, a model's test split): the GPU it was given, else the CPU."""
    device = str(job.params.get("run_device") or "cpu")
    return device if device.startswith("cuda") else "cpu"
