"""The processes of one ``torchrun`` job: which one this is, the process group, and who writes.

``torchrun --nproc-per-node N -m ssmamba ...`` starts N copies of a command and tells each its ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` in the environment. :func:`process_group` joins them (gloo on the CPU, nccl on
CUDA GPUs, each process on GPU ``LOCAL_RANK``); outside torchrun, or with one process, it does nothing and every
helper here is a no-op, so single-process code paths are unchanged. Rank 0 writes the files of a run; the other
ranks compute and wait. If any process fails, torchrun stops the others, so no rank waits forever on a dead peer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

__all__ = ["Processes", "processes", "launch_rank", "launched_share", "local_device", "process_group", "barrier",
           "all_gather", "shard", "gather_shards", "gather_list", "mean_over_processes"]

T = TypeVar("T")


@dataclass(frozen=True)
class Processes:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, shows progress and writes checkpoints and reports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def processes() -> Processes:
    """The job this process belongs to once :func:`process_group` joined it; ``Processes()`` (rank 0 of 1) else."""
    if dist.is_available() and dist.is_initialized():
        return Processes(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Processes()


def launch_rank() -> int:
    """The rank torchrun gave this process (0 when not launched by torchrun), readable before any group exists."""
    return int(os.environ.get("RANK", 0))


def launched_share(items: Sequence[T]) -> list[T]:
    """This process's share of ``items`` under torchrun: every ``WORLD_SIZE``-th item from ``RANK``, decided by the
    environment alone (no process group, no messages); every item outside torchrun."""
    return list(items[launch_rank()::int(os.environ.get("WORLD_SIZE", 1))])


def local_device(device: torch.device | str) -> torch.device:
    """``device``, or this process's own GPU (``cuda:LOCAL_RANK``) for a CUDA device under torchrun."""
    device = torch.device(device)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", 1)) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Join the torchrun job of this process for the duration and yield its device: ``cuda:LOCAL_RANK`` for a CUDA
    ``device``, else ``device``. Without torchrun (or with ``WORLD_SIZE=1``), or inside a group that is already
    set up, nothing is joined (and nothing is left at the end)."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    device = local_device(device)
    if device.type == "cuda" and world_size > 1:
        torch.cuda.set_device(device)
    if world_size == 1 or dist.is_initialized():
        yield device
        return
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")  # rendezvous from torchrun's environment
    logger.info("process %d of %d joined (%s, %s)", dist.get_rank(), world_size, dist.get_backend(), device)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process got here (no-op in a single process)."""
    if processes().distributed:
        dist.barrier()


def all_gather(value) -> list:
    """Every process's ``value`` (any picklable object), in rank order: ``[value]`` in a single process."""
    job = processes()
    if not job.distributed:
        return [value]
    gathered = [None] * job.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over the processes (the tensor itself in a single process)."""
    if processes().distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= processes().world_size
    return value


def shard(length: int) -> range:
    """This process's share of ``length`` items for evaluation: every ``world_size``-th, from its rank."""
    job = processes()
    return range(job.rank, length, job.world_size)


def gather_shards(parts: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Reassemble in the original order an array computed over the items of :func:`shard`, on every process."""
    gathered = all_gather(np.asarray(parts))
    if len(gathered) == 1:
        return gathered[0]
    total = sum(len(part) for part in gathered)
    return _interleave(np.empty((total, *gathered[0].shape[1:]), dtype=gathered[0].dtype), gathered)


def gather_list(parts: Sequence[T]) -> list[T]:
    """:func:`gather_shards` for items of any (picklable) kind and shape, e.g. arrays of different lengths."""
    gathered = all_gather(list(parts))
    return _interleave([None] * sum(len(part) for part in gathered), gathered)


def _interleave(whole, gathered: list):
    """Put rank ``r``'s part at the positions :func:`shard` gave it: ``r, r + world_size, ...``."""
    for rank, part in enumerate(gathered):
        whole[rank::len(gathered)] = part
    return whole
