"""PyTorch distributed (torchrun) glue: process groups, rank-aware I/O, sharding.

Single-process runs see ``world_size() == 1`` and every helper here is a no-op, so
the training and prediction code has one path for one process and for many.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


class RankOutOfMemoryError(Exception):
    """One rank ran out of memory where the others cannot follow it (the backward pass).

    Not a ``MemoryError``: shrinking and retrying on one rank alone would leave the ranks'
    collectives out of step, so the run ends instead.
    """


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device_type: str) -> None:
    """Join the process group torchrun describes: NCCL on GPUs, gloo on CPUs."""
    if launched_by_torchrun() and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0 alone writes checkpoints, merged outputs and logs."""
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any rank (a stop request, a NaN)."""
    return any_ranks([flag], device)[0]


def any_ranks(flags: Sequence[bool], device: torch.device) -> list[bool]:
    """``any_rank`` for several flags at once: one small all-reduce for all of them."""
    if not is_distributed():
        return [bool(flag) for flag in flags]
    values = torch.tensor([1.0 if flag else 0.0 for flag in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(value > 0) for value in values.tolist()]


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics drift apart per rank)."""
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items`` (round robin, so sizes differ by at most one)."""
    return list(items[rank()::world_size()])
