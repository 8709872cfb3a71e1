"""An LSTM with peephole connections, as TensorFlow's LSTMCell(use_peepholes=True).

PyTorch's fused LSTM has no peepholes, so the recurrence is written here with its
backward pass by hand: autograd through a Python loop records a dozen small nodes a step,
while this records one node for the whole sequence and keeps only the gates and states.

Sequences run packed, as in a PackedSequence: sorted longest first, step t holds the
rows of the batch_sizes[t] sequences still running, so no work is spent on padding and
no finished state is carried along. Each step's states are kept as they come (a list),
not copied into one padded array.

Shapes: N sequences, P packed rows (the sum of the lengths), H hidden units, G = 4H gate
pre-activations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence


def _step_forward(pre: Tensor, c_prev: Tensor, peephole: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One step after the matrix product: pre (k, 4H), c_prev (k, H) -> the activated gates
    i, f, g, o side by side (k, 4H), the cell state c (k, H) and the output h (k, H)."""
    h_dim = c_prev.shape[1]
    i = torch.sigmoid(pre[:, :h_dim] + peephole[0] * c_prev)
    f = torch.sigmoid(pre[:, h_dim : 2 * h_dim] + peephole[1] * c_prev)
    g = torch.tanh(pre[:, 2 * h_dim : 3 * h_dim])
    c = f * c_prev + i * g
    o = torch.sigmoid(pre[:, 3 * h_dim :] + peephole[2] * c)
    return torch.cat([i, f, g, o], dim=1), c, o * torch.tanh(c)


def _step_backward(
    gates: Tensor, c_prev: Tensor, c: Tensor, dh: Tensor, dc: Tensor, peephole: Tensor
) -> tuple[Tensor, Tensor]:
    """Gradients of one step: from dh and dc (k, H) arriving at its outputs, those of its
    pre-activations (k, 4H) and of the cell state it started from (k, H)."""
    h_dim = c.shape[1]
    i, f, g, o = gates.split(h_dim, dim=1)
    tanh_c = torch.tanh(c)
    d_o = dh * tanh_c * o * (1 - o)
    dc = dc + dh * o * (1 - tanh_c * tanh_c) + d_o * peephole[2]
    d_i = dc * g * i * (1 - i)
    d_f = dc * c_prev * f * (1 - f)
    d_g = dc * i * (1 - g * g)
    dc_prev = dc * f + d_i * peephole[0] + d_f * peephole[1]
    return torch.cat([d_i, d_f, d_g, d_o], dim=1), dc_prev


class _PeepholeRecurrence(torch.autograd.Function):
    """Last hidden states (N, H) of the recurrence over packed input projections (P, 4H)."""

    @staticmethod
    def forward(ctx, x_proj: Tensor, weight_hh: Tensor, peephole: Tensor, batch_sizes: list[int]):
        n, h_dim = batch_sizes[0], weight_hh.shape[1]
        h = x_proj.new_zeros(n, h_dim)
        c = x_proj.new_zeros(n, h_dim)
        last = x_proj.new_empty(n, h_dim)
        w_t = weight_hh.t()
        gates, cells, hiddens = [], [c], [h]  # cells[t], hiddens[t]: the state before step t
        offset = 0
        for t, k in enumerate(batch_sizes):
            pre = torch.addmm(x_proj[offset : offset + k], h[:k], w_t)  # (k, 4H)
            g, c, h = _step_forward(pre, c[:k], peephole)
            gates.append(g)
            cells.append(c)
            hiddens.append(h)
            k_next = batch_sizes[t + 1] if t + 1 < len(batch_sizes) else 0
            if k_next < k:  # rows whose last step this is
                last[k_next:k] = h[k_next:k]
            offset += k
        ctx.save_for_backward(weight_hh, peephole)
        ctx.states = gates, cells, hiddens
        ctx.batch_sizes = batch_sizes
        return last

    @staticmethod
    def backward(ctx, grad_last: Tensor):
        weight_hh, peephole = ctx.saved_tensors
        gates, cells, hiddens = ctx.states
        batch_sizes: list[int] = ctx.batch_sizes
        n, h_dim = batch_sizes[0], weight_hh.shape[1]
        dtype = gates[0].dtype
        grad_last = grad_last.to(dtype)
        dh = grad_last.new_zeros(n, h_dim)
        dc = grad_last.new_zeros(n, h_dim)
        grads = [None] * len(batch_sizes)  # (k, 4H) a step: gradients of the pre-activations
        for t in reversed(range(len(batch_sizes))):
            k = batch_sizes[t]
            k_next = batch_sizes[t + 1] if t + 1 < len(batch_sizes) else 0
            if k_next < k:  # rows whose last step is t receive the output gradient
                dh[k_next:k] += grad_last[k_next:k]
            d_pre, dc_prev = _step_backward(
                gates[t], cells[t][:k], cells[t + 1], dh[:k], dc[:k], peephole)
            grads[t] = d_pre
            dc[:k] = dc_prev
            dh[:k] = d_pre @ weight_hh  # (k, H)
        grad_x = torch.cat(grads)  # (P, 4H)
        h_prev = torch.cat([h[:k] for h, k in zip(hiddens, batch_sizes, strict=False)])  # (P, H)
        c_prev = torch.cat([c[:k] for c, k in zip(cells, batch_sizes, strict=False)])  # (P, H)
        grad_w = grad_x.t() @ h_prev  # (4H, H)
        grad_p = torch.stack([
            (grad_x[:, :h_dim] * c_prev).sum(0),
            (grad_x[:, h_dim : 2 * h_dim] * c_prev).sum(0),
            (grad_x[:, 3 * h_dim :] * torch.cat(cells[1:])).sum(0),
        ])
        return grad_x, grad_w, grad_p, None


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
        lengths = lengths.cpu().clamp(min=1, max=inputs.shape[1])
        packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        x_proj = F.linear(packed.data, self.weight_ih, self.bias)  # (P, 4H)
        weight_hh, peephole = self.weight_hh, self.peephole
        if x_proj.dtype != weight_hh.dtype:  # under autocast the recurrence stays in one dtype
            weight_hh, peephole = weight_hh.to(x_proj.dtype), peephole.to(x_proj.dtype)
        batch_sizes = packed.batch_sizes.tolist()
        last_sorted = _PeepholeRecurrence.apply(x_proj, weight_hh, peephole, batch_sizes)
        return last_sorted[packed.unsorted_indices.to(last_sorted.device)]  # (N, H)
