"""torch.distributed set-up for `torchrun`: one process a device, gloo on CPU, NCCL on CUDA."""

from __future__ import annotations

import logging
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
        """Leave the process group once every process is done with it."""
        if self.enabled and dist.is_initialized():
            dist.barrier()
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
    if rank != 0:  # rank 0 reports progress; the others keep warnings and errors only
        logging.getLogger("dualenc").setLevel(logging.WARNING)
    return DistContext(rank, world_size, local_rank, device)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward, the sum over processes of the whole gathered gradient,
    of which each process keeps the rows of its own part."""

    @staticmethod
    def forward(ctx, local: Tensor, sizes: list[int], rank: int) -> Tensor:
        longest = max(sizes)
        padded = torch.cat([local, local.new_zeros(longest - local.shape[0], *local.shape[1:])])
        parts = [torch.empty_like(padded) for _ in sizes]  # all_gather wants equal shapes
        dist.all_gather(parts, padded.contiguous())
        ctx.start, ctx.size = sum(sizes[:rank]), sizes[rank]
        return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        grad = grad.contiguous()  # (B, D)
        dist.all_reduce(grad)  # every process's loss sends gradient to every part
        return grad[ctx.start : ctx.start + ctx.size], None, None


def gather_with_grad(local: Tensor, ctx: DistContext, sizes: list[int] | None = None) -> Tensor:
    """Concatenate a tensor of every process along dim 0, gradients flowing back to each
    process's own part: (b, D) -> (sum(sizes), D).

    `sizes` are the rows of every process's part, in rank order; they may differ (the
    default is b for all). The backward pass sums, on each process, the gradients that all
    processes' losses send to its part.
    """
    if not ctx.enabled:
        return local
    sizes = sizes or [local.shape[0]] * ctx.world_size
    return _GatherWithGrad.apply(local, sizes, ctx.rank)


def mean_over_processes(value: float, ctx: DistContext) -> float:
    """The mean of a number over all processes (every process must call it)."""
    if not ctx.enabled:
        return value
    total = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(total)
    return float(total.item()) / ctx.world_size


def _rng_suffix(rank: int) -> str:
    return f".rank{rank}" if rank else ""


def gather_rng_states(ctx: DistContext) -> dict[str, Tensor]:
    """The random state of every process, keyed `torch` and `cuda` for rank 0 and
    `torch.rankR`, `cuda.rankR` for rank R (every process must call it)."""
    local = {"torch": torch.get_rng_state()}
    if ctx.device.type == "cuda":
        local["cuda"] = torch.cuda.get_rng_state(ctx.device)
    states = [local]
    if ctx.enabled:
        states = [{} for _ in range(ctx.world_size)]
        dist.all_gather_object(states, local)
    return {f"{k}{_rng_suffix(r)}": v for r, state in enumerate(states) for k, v in state.items()}


def set_rng_states(states: dict[str, Tensor], ctx: DistContext) -> None:
    """Restore this process's part of what gather_rng_states saved; a process with no saved
    state (a resume with more processes) keeps its own."""
    suffix = _rng_suffix(ctx.rank)
    if "torch" + suffix in states:
        torch.set_rng_state(states["torch" + suffix])
    if "cuda" + suffix in states and ctx.device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda" + suffix], ctx.device)


def broadcast_flag(value: bool, ctx: DistContext) -> bool:
    """Rank 0's boolean, on every process (used for early stopping)."""
    if not ctx.enabled:
        return value
    flag = torch.tensor([1.0 if value else 0.0], device=ctx.device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def gather_keys(local: Tensor, ctx: DistContext) -> Tensor:
    """Concatenate every process's int64 keys (b,) in rank order -> (B,); no gradient."""
    if not ctx.enabled:
        return local
    parts: list[list[int]] = [[] for _ in range(ctx.world_size)]
    dist.all_gather_object(parts, local.tolist())
    return torch.tensor([k for part in parts for k in part], dtype=torch.int64, device=local.device)
