"""Where a run computes: the device, its CPU threads, the autocast precision, the grad scaler and
the memory format.

`Hardware.setup(config)` makes every choice once, at the start of a run; the loop then asks it for
an autocast context and a grad scaler instead of looking at devices and dtypes itself.

On a GPU the defaults are mixed precision (precision auto: bf16 where the GPU has it, else fp16
with loss scaling) and channels_last (tensor cores); precision fp32 and channels_last off switch
them off. On the CPU a run is fp32 whatever precision says, channels_last unless switched off
(oneDNN's convolutions are faster in it).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from kiln.training.config import TrainConfig
from kiln.training.distributed import Dist


@dataclass(frozen=True)
class Hardware:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: plain fp32
    threads: int  # torch's CPU threads in this process
    dist: Dist
    memory_format: torch.memory_format = torch.channels_last  # of the network and its input

    @classmethod
    def setup(cls, config: TrainConfig) -> Hardware:
        """Join torchrun's processes (if any), pick the device and precision, set the threads."""
        # device cpu on a machine with a GPU: the ranks talk over gloo, not NCCL
        dist = Dist.start(cuda=torch.cuda.is_available() and (config.device or "auto").strip().lower() != "cpu")
        device = pick_device(config.device, dist)
        if device.type == "cuda":  # this process's GPU is the current one: no context on another job's GPU
            torch.cuda.set_device(device)
        threads = set_threads(device, dist)
        layout = torch.channels_last if config.channels_last else torch.contiguous_format
        return cls(device, pick_precision(config.precision, device), threads, dist, layout)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """A network input in the run's memory format (no copy when it already is)."""
        if self.memory_format == torch.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        # a 1-channel channels_last batch is "contiguous" too, and convolutions would follow its
        # strides into channels_last: give it plain NCHW strides
        plain: list[int] = []
        step = 1
        for size in reversed(x.shape):
            plain.insert(0, step)
            step *= size
        return x if x.stride() == tuple(plain) else x.clone(memory_format=torch.contiguous_format)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def loss_scaling(self) -> bool:
        """fp16 needs its losses scaled (its range is narrow); bf16 and fp32 do not."""
        return self.amp_dtype == torch.float16

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling is needed by fp16 only; disabled, the scaler passes everything through."""
        return torch.amp.GradScaler(self.device.type, enabled=self.loss_scaling)

    def describe(self) -> str:
        """'cpu (2 threads), fp32', 'cuda:0 x 4 processes, bfloat16' (for the job log)."""
        where = f"{self.device}" + (f" ({self.threads} threads)" if self.device.type == "cpu" else "")
        if self.dist.world > 1:
            where += f" x {self.dist.world} processes"
        precision = "fp32" if self.amp_dtype is None else str(self.amp_dtype).replace("torch.", "")
        if self.loss_scaling:
            precision += " with loss scaling"
        layout = "channels_last" if self.memory_format == torch.channels_last else "NCHW"
        return f"{where}, {precision}, {layout}"


def pick_device(name: str, dist: Dist) -> torch.device:
    """auto | cpu | cuda | cuda:N | cuda:0,1 (one process uses the first; torchrun one per rank)."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not name.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {name!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but no CUDA GPU is available; use device auto or cpu")
    if dist.world > 1:
        return torch.device("cuda", dist.local_rank)
    ids = name.partition(":")[2].split(",")[0]
    return torch.device("cuda", int(ids) if ids.strip() else 0)


def set_threads(device: torch.device, dist: Dist) -> int:
    """On CPU, share the cores between the processes on this machine (unless OMP_NUM_THREADS says);
    on CUDA, let cuDNN pick its fastest kernels and matmuls use TF32."""
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(max(1, cores // dist.local_world))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return torch.get_num_threads()


def pick_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32. Mixed precision is for CUDA only."""
    precision = (precision or "auto").lower()
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16
