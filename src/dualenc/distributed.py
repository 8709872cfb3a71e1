"""torch.distributed set-up for `torchrun`: one process a device, gloo on CPU, NCCL on CUDA."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from dualenc.errors import DualencError


@dataclass
class DistContext:
    """Where this process stands: its rank among `world_size` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` takes CUDA when there is one; `cuda` without one is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DualencError("--device cuda was asked for, but torch sees no CUDA device")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_name: str) -> DistContext:
    """Join the process group that torchrun describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(rank, world_size, local_rank, device)


def gather_with_grad(local: Tensor, ctx: DistContext) -> Tensor:
    """Concatenate a tensor of every process along dim 0, gradients flowing back to each
    process's own part: (b, D) -> (world_size * b, D)."""
    if not ctx.enabled:
        return local
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(local), dim=0)


def broadcast_flag(value: bool, ctx: DistContext) -> bool:
    """Rank 0's boolean, on every process (used for early stopping)."""
    if not ctx.enabled:
        return value
    flag = torch.tensor([1.0 if value else 0.0], device=ctx.device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())
