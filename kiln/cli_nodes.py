"""`kiln train` on several machines: torchrun's c10d rendezvous, one `kiln train` per node.

    kiln train --dataset D ... --nnodes 2 --node-rank 0 --rdzv-endpoint node0:29400   # node 0: the job
    kiln train --dataset D ... --nnodes 2 --node-rank 1 --rdzv-endpoint node0:29400   # node 1 joins

Node 0 creates the job and runs its share of the group (kiln.jobs.group); its local rank 0
reports and writes the snapshots. Every other node checks the same form, then runs its ranks
(``cpu_processes`` on the CPU, or its GPUs) with ``python -m kiln.training`` into a scratch folder:
they train with the others and never write. Each node needs the dataset under the same name or
id (a shared data folder, or the same dataset built on each node).
"""

from __future__ import annotations

import argparse
from typing import Any

from kiln.config import Settings
from kiln.jobs.group import Launch, check_endpoint
from kiln.store import Job, Store


def add_node_options(train: argparse.ArgumentParser) -> None:
    nodes = train.add_argument_group("several machines (torchrun's c10d rendezvous)")
    nodes.add_argument("--nnodes", type=int, default=1, help="machines training this model together (default 1)")
    nodes.add_argument("--node-rank", type=int, default=0, help="this machine's number, 0..NNODES-1; 0 runs the job")
    nodes.add_argument(
        "--rdzv-endpoint", metavar="HOST:PORT", help="where the nodes meet: node 0's address and a free port"
    )
    nodes.add_argument("--rdzv-id", default="kiln", help="the rendezvous' name, the same on every node")


def launch_of(args: argparse.Namespace) -> Launch | None:
    """The rendezvous the options ask for; None for one machine. SystemExit names a bad option."""
    nnodes = getattr(args, "nnodes", 1) or 1
    if nnodes <= 1:
        return None
    endpoint = getattr(args, "rdzv_endpoint", None) or ""
    problem = check_endpoint(endpoint) if endpoint else "--rdzv-endpoint HOST:PORT is required with --nnodes > 1"
    if problem:
        raise SystemExit(f"error: {problem}")
    if not 0 <= args.node_rank < nnodes:
        raise SystemExit(f"error: --node-rank {args.node_rank}: use 0 to {nnodes - 1} with --nnodes {nnodes}")
    if getattr(args, "queue", False):
        raise SystemExit("error: --queue: a multi-node job runs in this terminal, on every node at once")
    return Launch(nnodes=nnodes, node_rank=args.node_rank, rdzv_endpoint=endpoint, rdzv_id=args.rdzv_id)


def run_node0(settings: Settings, store: Store, job_id: str, launch: Launch, progress: Any, on_metrics: Any) -> str:
    """Node 0 runs the job here with its share of the group; the other nodes join it."""
    from kiln.cli_common import follow
    from kiln.jobs.worker import run_job
    from kiln.store import ACTIVE

    status = run_job(settings, job_id, echo=progress, on_metrics=on_metrics, launch=launch)
    return follow(store, job_id, progress) if status in ACTIVE else status


def join(form: dict[str, Any], dataset: Job | None, store: Store, settings: Settings, launch: Launch) -> int:
    """A node other than 0: check the form as node 0 does, then run this node's ranks."""
    from kiln.cli_common import print_form_errors
    from kiln.forms import FormErrors
    from kiln.jobs import gpus
    from kiln.jobs.group import follow
    from kiln.jobs.model_form import configs_from_form

    try:
        common, configs = configs_from_form(form, store, settings)
    except FormErrors as exc:
        return print_form_errors(exc.errors)
    if len(configs) != 1 or dataset is None:
        raise SystemExit("error: a multi-node job trains one model: give one learning rate and one batch size")
    request: gpus.Request = common["resources"]
    inventory = gpus.Inventory.detect(settings)
    chosen = list(request.gpus) or [g.index for g in inventory.gpus][: request.wanted(inventory)]
    if not inventory.real:
        chosen = []
    config = configs[0]
    config.device = "cuda" if chosen else ("cpu" if inventory.total else config.device)
    nproc = gpus.world_size(request, chosen, inventory)
    print(
        f"node {launch.node_rank} of {launch.nnodes}: {nproc} processes, meeting at {launch.rdzv_endpoint}", flush=True
    )
    dataset_dir = settings.jobs_dir / dataset.id
    code = follow(config.to_dict(), dataset_dir, launch, nproc, gpus.group_env(chosen, inventory))
    print(f"node {launch.node_rank}: {'done' if code == 0 else f'torchrun exited with code {code}'}", flush=True)
    return 0 if code == 0 else 1
