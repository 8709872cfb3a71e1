"""An LSTM with peephole connections, as TensorFlow's LSTMCell(use_peepholes=True).

PyTorch's fused LSTM has no peepholes, so the recurrence is written here with its
backward pass by hand: autograd through a Python loop records a dozen small nodes a step,
while this records one node for the whole sequence and stores only the gates and states.

Shapes: N sequences, T steps, E inputs, H hidden units, G = 4H gate pre-activations.
Sequences are sorted by length, longest first, so that at step t the first active[t]
rows are the ones still running and the others keep their last state (as packing does).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _PeepholeRecurrence(torch.autograd.Function):
    """h_last (N, H) of the recurrence over precomputed input projections x_proj (N, T, 4H)."""

    @staticmethod
    def forward(ctx, x_proj: Tensor, weight_hh: Tensor, peephole: Tensor, active: list[int]):
        n, steps, g4 = x_proj.shape
        h_dim = g4 // 4
        gates = x_proj.new_zeros(n, steps, g4)  # i, f, g, o after their activations
        cells = x_proj.new_zeros(n, steps + 1, h_dim)  # c before step t at [:, t]
        hiddens = x_proj.new_zeros(n, steps + 1, h_dim)  # h before step t at [:, t]
        p_i, p_f, p_o = peephole
        w_t = weight_hh.t()
        for t in range(steps):
            k = active[t]
            c_prev, h_prev = cells[:k, t], hiddens[:k, t]  # (k, H)
            pre = torch.addmm(x_proj[:k, t], h_prev, w_t)  # (k, 4H)
            i = torch.sigmoid(torch.addcmul(pre[:, :h_dim], p_i, c_prev))
            f = torch.sigmoid(torch.addcmul(pre[:, h_dim : 2 * h_dim], p_f, c_prev))
            g = torch.tanh(pre[:, 2 * h_dim : 3 * h_dim])
            c = torch.addcmul(f * c_prev, i, g)  # (k, H)
            o = torch.sigmoid(torch.addcmul(pre[:, 3 * h_dim :], p_o, c))
            cells[:k, t + 1] = c
            hiddens[:k, t + 1] = o * torch.tanh(c)
            gates[:k, t] = torch.cat([i, f, g, o], dim=1)
            if k < n:  # finished rows carry their state forward
                cells[k:, t + 1] = cells[k:, t]
                hiddens[k:, t + 1] = hiddens[k:, t]
        ctx.save_for_backward(weight_hh, peephole, gates, cells, hiddens)
        ctx.active = active
        return hiddens[:, steps].clone()

    @staticmethod
    def backward(ctx, grad_last: Tensor):
        weight_hh, peephole, gates, cells, hiddens = ctx.saved_tensors
        active: list[int] = ctx.active
        n, steps, g4 = gates.shape
        h_dim = g4 // 4
        p_i, p_f, p_o = peephole
        grad_x = torch.zeros_like(gates)  # (N, T, 4H): gradients of the pre-activations
        dh = torch.zeros(n, h_dim, dtype=gates.dtype, device=gates.device)
        dc = torch.zeros_like(dh)
        for t in reversed(range(steps)):
            k, k_next = active[t], active[t + 1] if t + 1 < steps else 0
            if k_next < k:  # rows whose last step is t receive the output gradient
                dh[k_next:k] += grad_last[k_next:k]
            i, f, g, o = gates[:k, t].split(h_dim, dim=1)
            c_prev, c = cells[:k, t], cells[:k, t + 1]
            tanh_c = torch.tanh(c)
            dh_k = dh[:k]
            d_o = dh_k * tanh_c * o * (1 - o)
            dc_k = dc[:k] + dh_k * o * (1 - tanh_c * tanh_c) + d_o * p_o
            d_i = dc_k * g * i * (1 - i)
            d_f = dc_k * c_prev * f * (1 - f)
            d_g = dc_k * i * (1 - g * g)
            grad_x[:k, t] = torch.cat([d_i, d_f, d_g, d_o], dim=1)
            dc[:k] = dc_k * f + d_i * p_i + d_f * p_f
            dh[:k] = grad_x[:k, t] @ weight_hh  # (k, H)
        flat = grad_x.reshape(-1, g4)  # (N*T, 4H); zero on inactive steps
        grad_w = flat.t() @ hiddens[:, :steps].reshape(-1, h_dim)  # (4H, H)
        grad_p = torch.stack(
            [
                (grad_x[..., :h_dim] * cells[:, :steps]).sum((0, 1)),
                (grad_x[..., h_dim : 2 * h_dim] * cells[:, :steps]).sum((0, 1)),
                (grad_x[..., 3 * h_dim :] * cells[:, 1:]).sum((0, 1)),
            ]
        )
        return grad_x, grad_w, grad_p, None


def active_counts(sorted_lengths: list[int], steps: int) -> list[int]:
    """For each time step, how many of the (descending) lengths are still running."""
    counts = []
    k = len(sorted_lengths)
    for t in range(steps):
        while k > 1 and sorted_lengths[k - 1] <= t:
            k -= 1
        counts.append(k)
    return counts


def glorot_(weight: Tensor, fan_in: int, fan_out: int) -> None:
    """Uniform in ±sqrt(6 / (fan_in + fan_out)), TensorFlow's default for its LSTM kernels."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class PeepholeLSTM(nn.Module):
    """A one-layer LSTM with peephole connections (Gers & Schmidhuber 2000).

    Gates, with ⊙ the element-wise product and c the cell state:
        i = σ(W_i x + U_i h + p_i ⊙ c_prev + b_i)     f = σ(W_f x + U_f h + p_f ⊙ c_prev + b_f)
        g = tanh(W_g x + U_g h + b_g)                c = f ⊙ c_prev + i ⊙ g
        o = σ(W_o x + U_o h + p_o ⊙ c + b_o)         h = o ⊙ tanh(c)

    The input projection of all time steps is one matrix product; the recurrence then runs
    over time on the still-active sequences only.
    """

    def __init__(self, input_dim: int, hidden_dim: int, forget_bias: float = 2.0) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_dim, input_dim))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_dim, hidden_dim))
        self.bias = nn.Parameter(torch.zeros(4 * hidden_dim))
        self.peephole = nn.Parameter(torch.empty(3, hidden_dim))  # p_i, p_f, p_o
        fan_in, fan_out = input_dim + hidden_dim, 4 * hidden_dim
        glorot_(self.weight_ih, fan_in, fan_out)
        glorot_(self.weight_hh, fan_in, fan_out)
        glorot_(self.peephole, hidden_dim, hidden_dim)
        with torch.no_grad():
            self.bias[hidden_dim : 2 * hidden_dim] = forget_bias

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """Last hidden state of each sequence: inputs (N, T, E), lengths (N,) -> (N, H)."""
        lengths = lengths.cpu().clamp(min=1)
        order = torch.argsort(lengths, descending=True, stable=True)
        sorted_lengths = lengths[order].tolist()
        steps = sorted_lengths[0]
        x_proj = F.linear(inputs[order.to(inputs.device), :steps], self.weight_ih, self.bias)
        weight_hh, peephole = self.weight_hh, self.peephole
        if x_proj.dtype != weight_hh.dtype:  # under autocast the recurrence stays in one dtype
            weight_hh, peephole = weight_hh.to(x_proj.dtype), peephole.to(x_proj.dtype)
        active = active_counts(sorted_lengths, steps)
        last_sorted = _PeepholeRecurrence.apply(x_proj, weight_hh, peephole, active)  # (N, H)
        last = torch.empty_like(last_sorted)
        last[order.to(last.device)] = last_sorted
        return last
