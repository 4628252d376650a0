"""The one place that joins and describes torch.distributed process groups (torchrun's environment).

Cache builders and the trainer both run under ``torchrun`` unchanged: gloo on CPU, nccl on GPU.
"""
from __future__ import annotations

import ctypes
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """This process's rank, the world size and the device it computes on."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def current(cls, device: torch.device | str = "cpu") -> "DistEnv":
        """The process group already joined, or a world of one."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), torch.device(device))
        return cls(0, 1, torch.device(device))

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()


def init_distributed(device: str | None = None) -> DistEnv:
    """Join the group torchrun describes (WORLD_SIZE/RANK/LOCAL_RANK); a plain run is a world of one.

    ``device`` None picks ``cuda:<LOCAL_RANK>`` when a GPU is present, else the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = torch.device(device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"))
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")
    return DistEnv.current(torch_device)


def leave_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def loader_worker_init(_worker_id: int) -> None:
    """A DataLoader worker leaves SIGINT and SIGTERM to its parent, which finishes the step, checkpoints
    and stops (a terminal's Ctrl-C and schedulers such as Slurm signal the whole process group), and it
    dies with its parent (Linux ``PR_SET_PDEATHSIG``), so a parent killed by -9 leaves no worker behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    prctl = getattr(ctypes.CDLL(None), "prctl", None)
    if prctl is not None:
        pr_set_pdeathsig = 1
        prctl(pr_set_pdeathsig, int(signal.SIGKILL))
