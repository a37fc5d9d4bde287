"""Several processes under torchrun, or a world of one.

Under `torchrun --nproc-per-node N -m kiln.training ...` every rank takes its own share of each
epoch's order, DistributedDataParallel averages the gradients, metrics are all-reduced, and only
the main rank reports or writes files. With one process every helper here is a no-op.

The main rank is global rank 0, except in a multi-node kiln job (KILN_NODE_RANK set by
kiln.jobs.group): c10d numbers the nodes in its own order, while the job and its folder live on
node 0, so the main rank is local rank 0 of node 0, wherever c10d put it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn


@dataclass
class Dist:
    """This process's place under torchrun (RANK / WORLD_SIZE / LOCAL_RANK), or a world of one."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    owns_group: bool = False
    main_rank: int = 0  # the rank that reports and writes (see the module's note)

    @classmethod
    def start(cls, cuda: bool) -> Dist:
        """Join the process group torchrun describes in the environment (starting it if needed):
        NCCL when the ranks train on CUDA, else gloo."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if cuda:  # before any collective: NCCL's objects and tensors go to this rank's own GPU
            torch.cuda.set_device(local_rank)
        owns = not torch_dist.is_initialized()
        if owns:
            torch_dist.init_process_group("nccl" if cuda else "gloo")
        dist = cls(
            rank=torch_dist.get_rank(),
            world=torch_dist.get_world_size(),
            local_rank=local_rank,
            local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
            owns_group=owns,
        )
        # the lowest rank that owns the job: 0 unless KILN_NODE_RANK moves it to node 0
        mine = torch.tensor([dist.rank if owns_job() else dist.world], device=dist._device())
        torch_dist.all_reduce(mine, op=torch_dist.ReduceOp.MIN)
        dist.main_rank = int(mine.item()) if int(mine.item()) < dist.world else 0
        return dist

    @property
    def main(self) -> bool:
        return self.rank == self.main_rank

    def _device(self) -> str:
        return "cuda" if torch_dist.get_backend() == "nccl" else "cpu"

    def shard(self, order: np.ndarray) -> np.ndarray:
        """This rank's share of an epoch's order, padded with its first entries so that every
        rank gets the same number of iterations."""
        if self.world == 1:
            return order
        padded = np.concatenate([order, order[: (-len(order)) % self.world]])
        return padded[self.rank :: self.world]

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if self.world == 1:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over all ranks (metrics)."""
        if self.world > 1:
            values = values.clone()
            torch_dist.all_reduce(values)
        return values

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (an abort seen by rank 0)."""
        if self.world == 1:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self._device())
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_int(self, value: int) -> int:
        """The main rank's value on every rank (the seed)."""
        if self.world == 1:
            return int(value)
        box = [int(value)]
        torch_dist.broadcast_object_list(box, src=self.main_rank)
        return int(box[0])

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank (RNG states for resume.pt)."""
        if self.world == 1:
            return [obj]
        out: list[Any] = [None] * self.world
        torch_dist.all_gather_object(out, obj)
        return out

    def finish(self) -> None:
        if self.world > 1:
            torch_dist.barrier()
            if self.owns_group:
                torch_dist.destroy_process_group()


def owns_job() -> bool:
    """True in the process that reports a kiln job's run: local rank 0 of node 0 (KILN_NODE_RANK,
    absent outside a kiln job) or of every node of a hand-run torchrun, where rank 0 wins."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("KILN_NODE_RANK", "0") == "0"
