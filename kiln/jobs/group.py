"""A model job as a torchrun group: kiln starts it, watches it, stops it as one, and resumes it.

    worker ─► python -m kiln.jobs.group torchrun --nproc-per-node N ... -m kiln.jobs.group rank JOB
                └─ torch.distributed.run's main ─► N ranks, each kiln.training.loop.train under DDP

The rank that owns the job (local rank 0 of node 0, kiln.training.distributed) reports to the store
(metrics, log, snapshots, progress) and writes the group's outcome for the worker; the other ranks
stay quiet. A resumed job's ranks continue from resume.pt like a single process does.

Stopping as one: every process of the group dies with its parent (PR_SET_PDEATHSIG), so a worker
killed with SIGKILL takes torchrun along, and torchrun its ranks (which torchrun puts in sessions of
their own, out of reach of the worker's process group). An abort or a server shutdown (SIGTERM to
the worker) ends the group: SIGTERM to torchrun, which passes it to its ranks, then SIGKILL to
whatever is left of the processes the group had.

Several machines: ``kiln train --nnodes N --node-rank R --rdzv-endpoint HOST:PORT`` on each node
(torchrun's c10d rendezvous, hosted by node 0). Node 0 runs the job; the other nodes join with
``python -m kiln.training`` (:func:`follow`), whose ranks never report or write.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

OUTCOME = "group-outcome.json"  # in the job folder: what the owning rank says of the run
GROUP_LOG = "group.log"  # torchrun's and the ranks' output
STOP_GRACE_S = 2.0  # after SIGTERM, torchrun's time to stop its ranks before SIGKILL
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Launch:
    """Where a group's ranks meet: this machine alone, or N nodes through a c10d rendezvous."""

    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str = ""  # HOST:PORT on node 0; "" = --standalone (a free port here)
    rdzv_id: str = "kiln"

    @property
    def multi_node(self) -> bool:
        return self.nnodes > 1

    def torchrun_args(self, nproc: int) -> list[str]:
        if not self.multi_node:
            return ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0"]
        return [
            f"--nnodes={self.nnodes}",
            f"--node-rank={self.node_rank}",
            f"--nproc-per-node={nproc}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={self.rdzv_endpoint}",
            f"--rdzv-id={self.rdzv_id}",
            f"--rdzv-conf=is_host={1 if self.node_rank == 0 else 0}",  # node 0 hosts the store
            "--max-restarts=0",
        ]

    def env(self) -> dict[str, str]:
        """Tells the ranks which node they are on (c10d numbers nodes its own way; kiln's owner is on node 0)."""
        return {"KILN_NODE_RANK": str(self.node_rank)}


def check_endpoint(text: str) -> str | None:
    """A problem with a --rdzv-endpoint value, or None."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"--rdzv-endpoint {text!r}: use HOST:PORT, e.g. node0.cluster:29400"
    return None


# -- the worker's side ------------------------------------------------------------------------------
def command(launch: Launch, nproc: int, entry: list[str]) -> list[str]:
    """torchrun (through this module, so that it dies with its parent) running `entry` in every rank."""
    return [sys.executable, "-m", "kiln.jobs.group", "torchrun", *launch.torchrun_args(nproc), *entry]


def run_group(cmd: list[str], env: dict[str, str], log_path: Path | None, should_stop: Any, poll_s: float = 0.2) -> int:
    """Start the group and wait for it; stop it as one when ``should_stop()`` turns true or this
    process is interrupted. Returns torchrun's exit code, or -1 when it was stopped."""
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115 (closed below)
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
        family: dict[int, psutil.Process] = {}
        try:
            while proc.poll() is None:
                _remember(proc.pid, family)
                if should_stop():
                    stop(proc, family)
                    return -1
                time.sleep(poll_s)
        except BaseException:  # KeyboardInterrupt in a terminal, an error: no rank outlives us
            stop(proc, family)
            raise
        return int(proc.returncode)
    finally:
        if log:
            log.close()


def _remember(pid: int, family: dict[int, psutil.Process]) -> None:
    """Keep psutil handles of torchrun and its ranks while they run (ranks leave our process group)."""
    try:
        root = family.get(pid) or psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            family.setdefault(proc.pid, proc)
    except psutil.Error:
        pass


def stop(proc: subprocess.Popen, family: dict[int, psutil.Process]) -> None:
    """SIGTERM to torchrun (it stops its ranks), then SIGKILL to every process the group had."""
    _remember(proc.pid, family)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
    for p in family.values():  # psutil checks each is still the same process before signalling
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(list(family.values()), timeout=5)
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def train_job(
    job: Any,
    job_dir: Path,
    settings: Any,
    reporter: Any,
    dataset_dir: Path,
    resume: bool,
    launch: Launch | None = None,
) -> dict[str, Any]:
    """Train a model job: in this process when it is one process on one node, else as a torchrun
    group (on this machine's share of its GPUs, or cpu_processes ranks on the CPU)."""
    from kiln.datasets.reader import PackedDataset
    from kiln.jobs import gpus
    from kiln.jobs.errors import UserFacingError
    from kiln.reporting import Stopped
    from kiln.training.config import TrainConfig
    from kiln.training.loop import train

    launch = launch or Launch()
    config = TrainConfig.from_dict(job.params["config"])
    inventory = gpus.Inventory.detect(settings)
    chosen = [int(g) for g in job.params.get("gpus") or ()]
    world = gpus.world_size(gpus.job_request(job), chosen, inventory)
    device = str(job.params.get("run_device") or config.device)
    saved = saved_world(job_dir) if resume and not launch.multi_node else None
    if saved is not None and saved != world:
        if chosen and inventory.real:
            raise UserFacingError(
                f"This job trained as {saved} processes and continues only as {saved}: resume it when it "
                f"asks for {saved} GPUs (it asks for {world}), or clone it."
            )
        reporter.log(f"Resuming as {saved} processes, as it trained (a multi-node job continues on this node)")
        world = saved
    if world == 1 and not launch.multi_node:
        config.device = device
        return train(config, PackedDataset(dataset_dir), job_dir, reporter, resume=resume)
    group_device = "cuda" if chosen and inventory.real else ("cpu" if inventory.total else config.device)
    where = f"{launch.nnodes} nodes, {world} processes on this one" if launch.multi_node else f"{world} processes"
    reporter.log(f"Training as a torchrun group: {where}" + (f" on GPUs {chosen}" if chosen else ""))
    (job_dir / OUTCOME).unlink(missing_ok=True)
    entry = ["-m", "kiln.jobs.group", "rank", job.id, "--data-dir", str(settings.data_dir), "--device", group_device]
    env = {**gpus.group_env(chosen, inventory), **launch.env(), **_threads(world)}
    code = run_group(command(launch, world, entry), env, job_dir / GROUP_LOG, reporter.should_stop)
    outcome = _read_outcome(job_dir)
    if code == -1 or outcome.get("status") == "Aborted":
        raise Stopped("training aborted")
    if outcome.get("status") == "Done" and code == 0:
        return dict(outcome["summary"])
    if outcome.get("error"):
        raise UserFacingError(str(outcome["error"]))
    raise UserFacingError(
        f"The torchrun group exited with code {code} before finishing: {_tail(job_dir / GROUP_LOG)} "
        f"(the whole output is {GROUP_LOG} in the job folder). Resume or clone the job."
    )


def saved_world(job_dir: Path) -> int | None:
    """How many processes wrote resume.pt (one random state each); its tensors are mapped, not read."""
    import torch

    path = job_dir / "resume.pt"
    if not path.exists():
        return None
    try:
        return len(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["rng"])
    except Exception:  # an unreadable resume.pt is train()'s to report
        return None


def _threads(nproc: int) -> dict[str, str]:
    """This machine's cores shared between the ranks on it (torchrun would give each one thread),
    unless OMP_NUM_THREADS says otherwise."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"OMP_NUM_THREADS": str(max(1, cores // max(1, nproc)))}


def follow(config: dict[str, Any], dataset_dir: Path, launch: Launch, nproc: int, env: dict[str, str]) -> int:
    """Another node's share of a multi-node job (started by ``kiln train --node-rank R``, R > 0):
    its ranks train with the others and never write; returns torchrun's exit code."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kiln-node-") as out:
        entry = ["-m", "kiln.jobs.group", "train", "--dataset", str(dataset_dir), "--out", out]
        entry += ["--config", json.dumps(config)]
        return run_group(command(launch, nproc, entry), {**env, **launch.env(), **_threads(nproc)}, None, lambda: False)


def _read_outcome(job_dir: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((job_dir / OUTCOME).read_text()))
    except (OSError, ValueError):
        return {}


def _tail(path: Path, lines: int = 6) -> str:
    """The last lines of the group's output that say something (tracebacks end with the error)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "no output"
    useful = [ln.strip() for ln in text if ln.strip() and not ln.startswith(("*", "W", "I"))]
    return " | ".join(useful[-lines:])[-800:] or "no output"


# -- inside the group -------------------------------------------------------------------------------
def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent exits (a no-op elsewhere)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before we asked
        os._exit(1)


def rank_main(argv: list[str]) -> int:
    """One rank of a job's group: train, report if this rank owns the job, write the outcome."""
    import argparse

    from kiln.atomic import atomic_write_json
    from kiln.config import Settings
    from kiln.datasets.reader import PackedDataset
    from kiln.jobs.errors import failure_message
    from kiln.jobs.store_reporter import StoreReporter
    from kiln.reporting import RecordingReporter, Stopped
    from kiln.store import Store
    from kiln.training.config import TrainConfig
    from kiln.training.distributed import owns_job
    from kiln.training.loop import TrainingDiverged, train

    parser = argparse.ArgumentParser(prog="python -m kiln.jobs.group rank")
    parser.add_argument("job_id")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    settings = Settings.from_env(data_dir=args.data_dir)
    store = Store(settings.db_path)
    job = store.get_job(args.job_id)
    if job is None:
        print(f"job {args.job_id} is gone", file=sys.stderr)
        return 1
    job_dir = settings.jobs_dir / job.id
    owner = owns_job()
    reporter = StoreReporter(store, job.id) if owner else RecordingReporter()
    config = TrainConfig.from_dict(job.params["config"])
    config.device = args.device
    outcome: dict[str, Any]
    try:
        summary = train(
            config,
            PackedDataset(settings.jobs_dir / (job.dataset_id or "")),
            job_dir,
            reporter,
            resume=(job_dir / "resume.pt").exists(),
        )
        outcome = {"status": "Done", "summary": summary}
    except Stopped:
        outcome = {"status": "Aborted"}
    except TrainingDiverged as exc:
        outcome = {"status": "Error", "error": str(exc)}
    except Exception as exc:
        if owner:
            store.add_log(job.id, traceback.format_exc())
        traceback.print_exc()
        outcome = {"status": "Error", "error": failure_message(exc)}
    if owner:
        atomic_write_json(job_dir / OUTCOME, outcome)
    store.close()
    return 0 if outcome["status"] != "Error" else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    die_with_parent()
    if argv[:1] == ["torchrun"]:
        from torch.distributed.run import main as torchrun

        torchrun(argv[1:])
        return 0
    if argv[:1] == ["rank"]:
        return rank_main(argv[1:])
    if argv[:1] == ["train"]:  # a rank of another node: python -m kiln.training, dying with torchrun
        from kiln.training.__main__ import main as train_main

        return train_main(argv[1:])
    print("usage: python -m kiln.jobs.group (torchrun ARGS | rank JOB_ID --data-dir D | train ARGS)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
