"""Encoder lanes: independent length groups encoded by several threads at once on a CPU.

The recurrent kernels of a small LSTM barely gain from a second intra-op thread: each time
step is a small matrix product, and the threads meet at every step. Two groups of sequences
encoded side by side, each by one thread on its own core, keep both cores busy instead.

`encode_groups` runs `encode(ids, lengths, generator)` for every group, spread over the lanes
by their cost, in the forward and the backward pass:

- forward: each lane thread encodes its groups with autograd recording, under the caller's
  autocast settings;
- backward: each lane thread computes the parameter gradients of its own groups with
  `torch.autograd.grad`, and the lanes' gradients are summed in lane order.

The lanes are assigned by cost alone, gradients are summed in a fixed order, and each
group's dropout draws from its own generator, seeded from torch's random state in the
calling thread, so a run with the same lanes repeats to the last digit. Under bf16 each lane
casts the weights for itself: autocast's cache of casts is shared by all threads, and a lane
that picked up the other's cast would sum its groups' weight gradients in bf16 instead of
fp32, depending on which thread came first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch import Tensor

Group = tuple[Tensor, Tensor]  # ids (n, T), lengths (n,)
EncodeFn = Callable[[Tensor, Tensor, "torch.Generator | None"], Tensor]

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(lanes: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if lanes not in _pools:
            _pools[lanes] = ThreadPoolExecutor(
                lanes, thread_name_prefix="dualenc-lane", initializer=_single_threaded
            )
        return _pools[lanes]


def _single_threaded() -> None:
    # A new thread starts with OpenMP's default team size until torch's first parallel loop
    # in it; a lane runs single-threaded from its first kernel on.
    torch.set_num_threads(1)


def default_lanes(cell: str, threads: int) -> int:
    """Lanes for a CPU run with `threads` threads: one a thread for the fused cells.

    The peephole recurrence dispatches a few dozen small operations a step from Python, and
    lanes would queue on the interpreter lock, so it keeps its threads inside each kernel."""
    return 1 if cell == "peephole" else threads


def assign_lanes(costs: Sequence[float], lanes: int) -> list[list[int]]:
    """Group indices for each lane: the costliest group first, each to the least loaded lane
    (ties to the lowest lane). Depends on the costs alone."""
    loads = [0.0] * lanes
    assigned: list[list[int]] = [[] for _ in range(lanes)]
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        lane = min(range(lanes), key=lambda k: (loads[k], k))
        assigned[lane].append(i)
        loads[lane] += costs[i]
    return [sorted(groups) for groups in assigned if groups]


def _cost(group: Group) -> float:
    ids = group[0]
    return float(ids.shape[0] * ids.shape[1])  # padded steps: what the kernel runs


def encode_groups(
    encode: EncodeFn,
    groups: Sequence[Group],
    lanes: int,
    params: Sequence[Tensor],
    draw_seeds: bool,
) -> list[Tensor]:
    """The encodings of every group, one tensor each, in order.

    Args:
        encode: encodes one group; its third argument is the generator for its dropout
            (None when `draw_seeds` is false).
        groups: the (ids, lengths) of each group.
        lanes: threads to spread the groups over; 1 encodes them here, one after another.
        params: the parameters `encode` uses that need gradients.
        draw_seeds: give each group a dropout generator seeded from torch's random state.
    """
    if lanes <= 1 or len(groups) <= 1:
        return [encode(ids, lengths, None) for ids, lengths in groups]
    seeds = _seeds(len(groups)) if draw_seeds else [None] * len(groups)
    assignment = assign_lanes([_cost(g) for g in groups], lanes)
    autocast = _autocast_state()
    if not (torch.is_grad_enabled() and any(p.requires_grad for p in params)):
        return _forward(encode, groups, seeds, assignment, autocast, record=False)
    flat = [t for group in groups for t in group]
    return list(_LaneEncode.apply(encode, len(groups), seeds, assignment, autocast,
                                  *flat, *params))


def _seeds(count: int) -> list[int]:
    return torch.randint(0, 2**62, (count,)).tolist()


def _generator(seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def _autocast_state() -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")


def _forward(
    encode: EncodeFn,
    groups: Sequence[Group],
    seeds: Sequence[int | None],
    assignment: list[list[int]],
    autocast: tuple[bool, torch.dtype],
    record: bool,
) -> list[Tensor]:
    def lane(indices: list[int]) -> list[Tensor]:
        enabled, dtype = autocast
        with torch.set_grad_enabled(record), torch.autocast("cpu", dtype, enabled=enabled,
                                                                   cache_enabled=False):
            return [encode(*groups[i], _generator(seeds[i])) for i in indices]

    out: list[Any] = [None] * len(groups)
    for indices, encs in zip(assignment, _pool(len(assignment)).map(lane, assignment),
                             strict=True):
        for i, enc in zip(indices, encs, strict=True):
            out[i] = enc
    return out


class _LaneEncode(torch.autograd.Function):
    """The groups' encodings as one autograd node whose backward runs lane by lane."""

    @staticmethod
    def forward(ctx, encode, n_groups, seeds, assignment, autocast, *tensors):
        flat, params = tensors[: 2 * n_groups], tensors[2 * n_groups :]
        groups = [(flat[2 * i], flat[2 * i + 1]) for i in range(n_groups)]
        outs = _forward(encode, groups, seeds, assignment, autocast, record=True)
        ctx.outs, ctx.params, ctx.assignment = outs, params, assignment
        return tuple(out.detach() for out in outs)

    @staticmethod
    def backward(ctx, *grads):
        params = [p for p in ctx.params if p.requires_grad]

        def lane(indices: list[int]) -> Sequence[Tensor | None]:
            used = [i for i in indices if grads[i] is not None and ctx.outs[i].requires_grad]
            if not used:
                return [None] * len(params)
            return torch.autograd.grad([ctx.outs[i] for i in used], params,
                                       [grads[i] for i in used], allow_unused=True)

        totals: list[Tensor | None] = [None] * len(params)
        for lane_grads in _pool(len(ctx.assignment)).map(lane, ctx.assignment):
            for k, grad in enumerate(lane_grads):
                if grad is not None:
                    totals[k] = grad if totals[k] is None else totals[k] + grad
        ctx.outs = None  # free the lanes' graphs
        by_param = iter(totals)
        param_grads = [next(by_param) if p.requires_grad else None for p in ctx.params]
        return (None,) * 5 + (None,) * (2 * len(grads)) + tuple(param_grads)
