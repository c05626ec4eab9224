"""How the network runs on a device: numeric precision, CPU threads, the devices there are.

``precision`` is ``fp32``, ``bf16`` (autocast: convolutions in bfloat16, accumulated in
float32) or ``auto``: bf16 on a CUDA GPU, fp32 on CPUs, where bf16 was not measured to be
faster on the project's 2-core AVX512_BF16 machine (docs/performance.md). Outputs always
come back as float32, so blending and peak finding never see bfloat16.
"""

from __future__ import annotations

import contextlib
import os

import torch

from . import distributed as dist

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16`` for ``precision`` on ``device`` (``auto`` decided as above)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    device_type = torch.device(device).type
    if resolve_precision(precision, device) == "fp32" or device_type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a batch job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity masks
        return os.cpu_count() or 1


def use_available_cores() -> int:
    """Give torch one thread per available core, shared between the ranks on this node.

    torch's default can count the host's cores rather than the job's (containers, Slurm
    allocations), which oversubscribes; under torchrun each local rank gets its share.
    Returns the thread count set.
    """
    ranks_here = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    threads = max(1, available_cores() // ranks_here)
    torch.set_num_threads(threads)
    return threads


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA (this rank's GPU under torchrun), then Apple MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", dist.local_rank() % torch.cuda.device_count())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but no CUDA GPU is available")
    return device


def available_devices() -> list[str]:
    """The devices this machine has: ``auto``, then ``cuda`` and ``mps`` if present, ``cpu``."""
    devices = ["auto"]
    if torch.cuda.is_available():
        devices.append("cuda")
    if _mps_available():
        devices.append("mps")
    return [*devices, "cpu"]


def has_accelerator() -> bool:
    """Whether ``auto`` trains on a GPU (CUDA or Apple MPS) rather than the CPU."""
    return len(available_devices()) > 2
