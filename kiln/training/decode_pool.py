"""Worker processes that read or decode batches straight into a ring of shared-memory slots.

A large split (a memory map, or PNG/JPEG entries to decode) is assembled here, a batch per task:
each worker reads its batch's images, crops and mirrors them on uint8 (kiln.training.crop_mirror)
and writes them into a slot of one shared ring; the main process copies a finished slot out once
(into pinned memory for a GPU) and hands the slot back. The ring has a fixed number of slots, so
the prefetch, and the memory, are bounded whatever the split's size.

Lifetime: the workers are forked for one stream and ended with it. The ring is an anonymous shared
mapping (no name in /dev/shm, so nothing can leak even when every process is killed), each worker
asks the kernel to kill it when its parent dies (PR_SET_PDEATHSIG), and sees end-of-file on its
pipe when the parent is gone. Batch i always goes to worker i % N, which keeps the results in order
per pipe and the batches identical whatever N is.
"""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any, TypeVar

import numpy as np

from kiln.training.crop_mirror import CropPlan, Draws, crop_into

WORKERS_SETTING = "KILN_FEED_WORKERS"  # decoding processes per training process; 0 = a thread
MAX_DEFAULT_WORKERS = 8
SLOTS_PER_WORKER = 2  # batches each worker may have ready or in hand: the prefetch bound
_FORK = multiprocessing.get_context("fork")
T = TypeVar("T")
_PARENT_ENDS: set[Connection] = set()  # every live pool's main-side pipe ends: closed in new workers


class FeedWorkerError(RuntimeError):
    """A worker could not read or decode a batch, or died."""


def feed_workers(setting: int | str | None = None) -> int:
    """Worker processes for one training process: the setting, else KILN_FEED_WORKERS, else
    min(CPUs - 1, 8) shared by the processes of a torchrun group on this machine; at least 1.
    0 means decode in a thread of the training process."""
    if setting is None:
        setting = os.environ.get(WORKERS_SETTING, "").strip() or None
    if setting is not None:
        try:
            value = int(setting)
        except ValueError:
            raise ValueError(f"{WORKERS_SETTING} must be a whole number of processes, not {setting!r}") from None
        if value < 0:
            raise ValueError(f"{WORKERS_SETTING} must be 0 or more, not {value}")
        return value
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(cpus - 1, MAX_DEFAULT_WORKERS) // local)


def can_fork() -> bool:
    """Processes can be started here (not on Windows, not inside a daemonic multiprocessing worker)."""
    return hasattr(os, "fork") and not multiprocessing.current_process().daemon


class Task:
    """One batch to assemble: the images at ``index`` (sorted), cropped by ``draws``, into a slot."""

    __slots__ = ("position", "slot", "index", "draws", "shape")

    def __init__(self, position: int, slot: int, index: np.ndarray, draws: Draws | None, shape: tuple) -> None:
        self.position, self.slot, self.index, self.draws, self.shape = position, slot, index, draws, shape


class DecodePool:
    """``workers`` forked processes filling ``slots`` slots of ``slot_bytes`` each from ``images``.

    Use: ``submit`` a task per free slot, ``result(task)`` in submission order gives a uint8 view
    of its slot (valid until the slot is submitted again), ``close`` ends the workers.
    """

    def __init__(self, images: Any, workers: int, slots: int, slot_bytes: int, crop_size: int | None) -> None:
        self.workers, self.slots, self.slot_bytes = workers, slots, max(1, slot_bytes)
        self.ring = mmap.mmap(-1, slots * self.slot_bytes)  # MAP_SHARED | MAP_ANONYMOUS
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        self.closed = False
        try:
            for k in range(workers):  # one pipe each, made just before its worker: no worker holds another's end
                main, child = _FORK.Pipe()
                self.conns.append(main)
                _PARENT_ENDS.add(main)
                args = (child, images, self.ring, self.slot_bytes, crop_size, os.getpid())
                proc = _FORK.Process(target=_serve, args=args, name=f"kiln-feed-{k}", daemon=True)
                try:
                    proc.start()
                finally:
                    child.close()  # the worker holds its own copy
                self.procs.append(proc)
        except BaseException:
            self.close()
            raise

    def submit(self, task: Task) -> None:
        self.conns[task.position % self.workers].send((task.slot, task.shape, task.index, task.draws))

    def result(self, task: Task) -> np.ndarray:
        """Wait for ``task`` (the oldest submitted to its worker); a view of its slot."""
        k = task.position % self.workers
        conn, proc = self.conns[k], self.procs[k]
        ready = wait([conn, proc.sentinel])
        try:
            if conn not in ready:
                raise EOFError
            error = conn.recv()
        except (EOFError, OSError):
            proc.join(1)
            raise FeedWorkerError(
                f"feed worker {k} (pid {proc.pid}) died (exit code {proc.exitcode}) while reading a batch; "
                f"set {WORKERS_SETTING}=0 to read in the training process instead"
            ) from None
        if error is not None:
            raise FeedWorkerError(error)
        return np.ndarray(task.shape, np.uint8, buffer=self.ring, offset=task.slot * self.slot_bytes)

    def close(self) -> None:
        """End the workers (a batch half written is of no use to anyone) and free the ring."""
        if self.closed:
            return
        self.closed = True
        for conn in self.conns:
            _PARENT_ENDS.discard(conn)
            conn.close()
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        try:
            self.ring.close()
        except BufferError:  # a view of a slot is still held somewhere: the mapping goes with it
            pass

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def assemble(
    pool: DecodePool,
    indices: list[np.ndarray],
    crops: CropPlan | None,
    item: tuple[int, ...],
    take: Callable[[np.ndarray, np.ndarray, Draws | None], T],
) -> Iterator[T]:
    """``take(sorted index, slot view, draws)`` of every batch, in order, with every slot kept busy:
    ``take`` copies the batch out of its slot, which goes back to work before the batch is yielded."""
    out_item = crops.out_shape(item) if crops else tuple(item)
    pending: deque[Task] = deque()
    queue = iter(enumerate(indices))

    def submit(slot: int) -> None:
        for position, index in queue:
            index = np.sort(np.asarray(index, dtype=np.int64))
            draws = crops.draws(position, len(index), item[0], item[1]) if crops else None
            task = Task(position, slot, index, draws, (len(index), *out_item))
            pool.submit(task)
            pending.append(task)
            return

    for slot in range(pool.slots):
        submit(slot)
    while pending:
        task = pending.popleft()
        view = pool.result(task)
        batch = take(task.index, view, task.draws)
        del view
        submit(task.slot)
        yield batch


# -- in the worker ---------------------------------------------------------------------------------


def _serve(conn: Connection, images: Any, ring: mmap.mmap, slot_bytes: int, size: int | None, parent: int) -> None:
    """A worker's life: assemble each task into its slot, answer None or the error, until told to stop."""
    _die_with(parent)
    for end in list(_PARENT_ENDS):  # other pools' and this pool's main-side ends: EOF needs them shut
        end.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        slot, shape, index, draws = message
        try:
            out = np.ndarray(shape, np.uint8, buffer=ring, offset=slot * slot_bytes)
            crop_into(out, images, index, size, draws)
            del out
            answer = None
        except Exception as exc:  # a corrupt image: the parent raises it with this text
            answer = f"could not read a batch of the split ({type(exc).__name__}: {exc})"
        try:
            conn.send(answer)
        except (BrokenPipeError, OSError):
            return


def _die_with(parent: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; leave at once if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere: end-of-file on the pipe ends the worker
    if os.getppid() != parent:
        os._exit(0)
