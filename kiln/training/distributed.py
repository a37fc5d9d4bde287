"""Several processes under torchrun, or a world of one.

Under `torchrun --nproc-per-node N -m kiln.training ...` every rank takes its own share of each
epoch's order, DistributedDataParallel averages the gradients, metrics are all-reduced, and only
rank 0 reports or writes files. With one process every helper here is a no-op.
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

    @classmethod
    def start(cls, cuda: bool) -> Dist:
        """Join the process group torchrun describes in the environment (starting it if needed):
        NCCL when the ranks train on CUDA, else gloo."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        owns = not torch_dist.is_initialized()
        if owns:
            torch_dist.init_process_group("nccl" if cuda else "gloo")
        return cls(
            rank=torch_dist.get_rank(),
            world=torch_dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
            owns_group=owns,
        )

    @property
    def main(self) -> bool:
        return self.rank == 0

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
        t = torch.tensor([1.0 if flag else 0.0], device="cuda" if torch_dist.get_backend() == "nccl" else "cpu")
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast_int(self, value: int) -> int:
        """Rank 0's value on every rank (the seed)."""
        if self.world == 1:
            return int(value)
        box = [int(value)]
        torch_dist.broadcast_object_list(box, src=0)
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
