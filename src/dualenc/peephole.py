"""An LSTM with peephole connections, as TensorFlow's LSTMCell(use_peepholes=True).

PyTorch's fused LSTM has no peepholes, so the recurrence is written here with its
backward pass by hand: autograd through a Python loop records a dozen small nodes a step,
while this records one node for the whole sequence and keeps only the gates and states.

Sequences run packed, as in a PackedSequence: sorted longest first, step t holds the
rows of the batch_sizes[t] sequences still running, so no work is spent on padding and
no finished state is carried along. Each step writes its rows of the packed (P, ·)
gates and states in place, with no padded copy and no list to join at the end.

Shapes: N sequences, P packed rows (the sum of the lengths), P' the same rounded up to a
multiple of PACKED_ROWS, H hidden units, G = 4H gate pre-activations.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

STEP_ROWS = 16  # a step's matrix products run over a multiple of this many rows
PACKED_ROWS = 1024  # and the whole packing's over a multiple of this many


class _PeepholeRecurrence(torch.autograd.Function):
    """Last hidden states (N, H) of the recurrence over packed inputs (P, E), the input
    projection included.

    Every packed row's gates, cell state, tanh of the cell state and output are written into
    four (P, ·) tensors as the steps run. The backward pass first turns them, for all rows at
    once and mostly in place, into the factors that depend only on the forward's values; each
    step back is then four element-wise operations and one matrix product. Row r of step t
    belongs to sequence r - offset[t]; its state before the step is row r - offset[t] of step
    t - 1 (zero at t = 0). Under autocast everything runs in the autocast dtype.

    oneDNN builds a kernel for every new shape of a matrix product, which costs milliseconds
    and stays in its cache. The products here are therefore taken over a number of rows
    rounded up (a step's to a multiple of STEP_ROWS, the whole packing's to one of
    PACKED_ROWS), so a run meets a few dozen shapes instead of one per distinct row count;
    the extra rows are zero or are dropped.
    """

    @staticmethod
    def forward(ctx, inputs: Tensor, weight_ih: Tensor, bias: Tensor, weight_hh: Tensor,
                peephole: Tensor, batch_sizes: list[int]):
        device = inputs.device.type
        if torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)
            inputs, weight_ih, bias, weight_hh, peephole = (
                x.to(dtype) for x in (inputs, weight_ih, bias, weight_hh, peephole))
        with torch.autocast(device, enabled=False):
            return _PeepholeRecurrence._run(ctx, inputs, weight_ih, bias, weight_hh, peephole,
                                            batch_sizes)

    @staticmethod
    def _run(ctx, inputs, weight_ih, bias, weight_hh, peephole, batch_sizes):
        rows, h_dim = inputs.shape[0], weight_hh.shape[1]
        padded = _round_up(rows, PACKED_ROWS)
        inputs = torch.cat([inputs, inputs.new_zeros(padded - rows, inputs.shape[1])])
        gates = torch.addmm(bias, inputs, weight_ih.t())  # (P', 4H), activated step by step
        cells, tanhs, hiddens = (gates.new_empty(padded, h_dim) for _ in range(3))  # (P', H)
        product = gates.new_empty(batch_sizes[0] + STEP_ROWS, 4 * h_dim)
        last = gates.new_empty(batch_sizes[0], h_dim)
        w_t, p_if, p_o = weight_hh.t(), peephole[:2], peephole[2]
        offsets = _offsets(batch_sizes)
        for t, k in enumerate(batch_sizes):
            now = slice(offsets[t], offsets[t] + k)
            step = gates[now].view(k, 4, h_dim)
            i, f, g, o = step.unbind(1)
            c = cells[now]
            if t:  # the state before step 0 is zero: no product, no peephole term
                before = slice(offsets[t - 1], offsets[t - 1] + k)
                m = min(_round_up(k, STEP_ROWS), padded - offsets[t - 1])
                h = hiddens[offsets[t - 1] : offsets[t - 1] + m]  # rows past k: dropped
                gates[now].add_(torch.mm(h, w_t, out=product[:m])[:k])
                step[:, :2].addcmul_(cells[before].unsqueeze(1), p_if)
            step[:, :2].sigmoid_()  # i and f at once
            g.tanh_()
            if t:
                torch.mul(f, cells[before], out=c).addcmul_(i, g)
            else:
                torch.mul(i, g, out=c)
            o.addcmul_(c, p_o).sigmoid_()
            torch.mul(o, torch.tanh(c, out=tanhs[now]), out=hiddens[now])
            k_next = batch_sizes[t + 1] if t + 1 < len(batch_sizes) else 0
            if k_next < k:  # rows whose last step this is
                last[k_next:k] = hiddens[offsets[t] + k_next : offsets[t] + k]
        ctx.save_for_backward(inputs, weight_ih, weight_hh, peephole, gates, cells, tanhs,
                              hiddens)
        ctx.batch_sizes, ctx.offsets, ctx.rows, ctx.spent = batch_sizes, offsets, rows, False
        return last

    @staticmethod
    def backward(ctx, grad_last: Tensor):
        with torch.autocast(grad_last.device.type, enabled=False):  # all in the saved dtype
            return _PeepholeRecurrence._back(ctx, grad_last)

    @staticmethod
    def _back(ctx, grad_last: Tensor):
        if ctx.spent:
            raise RuntimeError("the peephole recurrence turns its saved gates into its backward "
                               "factors in place: its backward runs once (no retain_graph)")
        ctx.spent = True
        inputs, weight_ih, weight_hh, peephole, gates, cells, tanhs, hiddens = ctx.saved_tensors
        batch_sizes, offsets, rows = ctx.batch_sizes, ctx.offsets, ctx.rows
        padded, h_dim = cells.shape
        c_prev = _previous(cells, batch_sizes, offsets, padded)
        i, f, g, o = gates.view(padded, 4, h_dim).unbind(1)
        p_i, p_f, p_o = peephole
        # Per row: d_i, d_f, d_g = dc * (the first three slots of gates, rewritten below),
        # d_o = dh * (the fourth slot); dc gains dh * h_to_c; the cell state before the
        # step receives dc * keep.
        h_to_c = torch.addcmul(o, o * tanhs, tanhs, value=-1.0)  # o (1 - tanh^2 c)
        o.addcmul_(o, o, value=-1.0).mul_(tanhs)  # o (1 - o) tanh c
        coef_i = torch.addcmul(i, i, i, value=-1.0).mul_(g)  # g i (1 - i)
        g.mul_(g).neg_().add_(1.0).mul_(i)  # i (1 - g^2)
        i.copy_(coef_i)
        keep = torch.addcmul(f, coef_i, p_i)  # f + p_i g i (1 - i) ...
        del coef_i
        f.addcmul_(f, f, value=-1.0).mul_(c_prev)  # c_prev f (1 - f)
        keep.addcmul_(f, p_f)  # ... + p_f c_prev f (1 - f)
        coef, from_h = gates.view(padded, 4, h_dim)[:, :3], o
        grad_last = grad_last.to(gates.dtype)
        grad_x = torch.empty_like(gates)  # (P', 4H)
        grad_x[rows:] = 0
        flat, grad_x = grad_x, grad_x.view(padded, 4, h_dim)
        dh = dc = grad_last[:0]  # the gradients arriving at the rows still running after t
        for t in reversed(range(len(batch_sizes))):
            k = batch_sizes[t]
            if dh.shape[0] < k:  # rows whose last step is t receive the output gradient
                dh = torch.cat([dh, grad_last[dh.shape[0] : k]])
                dc = torch.cat([dc, dc.new_zeros(k - dc.shape[0], h_dim)])
            now = slice(offsets[t], offsets[t] + k)
            d = grad_x[now]  # (k, 4, H)
            d_o = torch.mul(dh, from_h[now], out=d[:, 3])
            dc = torch.addcmul(dc, dh, h_to_c[now]).addcmul_(d_o, p_o)
            torch.mul(dc.unsqueeze(1), coef[now], out=d[:, :3])
            if t:  # rows past k belong to step t + 1, done already: dropped
                m = min(_round_up(k, STEP_ROWS), padded - offsets[t])
                dh = (flat[offsets[t] : offsets[t] + m] @ weight_hh)[:k]  # (k, H)
                dc = dc * keep[now]
        del h_to_c, keep
        grad_x = flat[:rows]  # (P, 4H)
        grad_p = torch.stack([
            (grad_x[:, :h_dim] * c_prev[:rows]).sum(0),
            (grad_x[:, h_dim : 2 * h_dim] * c_prev[:rows]).sum(0),
            (grad_x[:, 3 * h_dim :] * cells[:rows]).sum(0),
        ])
        del c_prev
        grad_hh = flat.t() @ _previous(hiddens, batch_sizes, offsets, padded)  # (4H, H)
        grad_inputs = (flat @ weight_ih)[:rows]  # (P, E)
        grad_ih = flat.t() @ inputs  # (4H, E); the padding rows are zero in both
        return grad_inputs, grad_ih, grad_x.sum(0), grad_hh, grad_p, None


def _offsets(batch_sizes: list[int]) -> list[int]:
    """The first packed row of each step."""
    offsets, total = [], 0
    for k in batch_sizes:
        offsets.append(total)
        total += k
    return offsets


def _previous(states: Tensor, batch_sizes: list[int], offsets: list[int], padded: int) -> Tensor:
    """Each packed row's state from the step before, zero at step 0 and in the padding rows:
    (P', H) -> (P', H)."""
    parts = [states.new_zeros(batch_sizes[0], states.shape[1])]
    parts += [states[offsets[t - 1] : offsets[t - 1] + k] for t, k in enumerate(batch_sizes)
              if t]
    parts.append(states.new_zeros(padded - sum(batch_sizes), states.shape[1]))
    return torch.cat(parts)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


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
        return self.run_packed(packed.data, packed)

    def run_packed(self, inputs: Tensor, packed: PackedSequence) -> Tensor:
        """Last hidden states (N, H) for packed inputs (P, E) laid out as `packed` is."""
        batch_sizes = packed.batch_sizes.tolist()
        last_sorted = _PeepholeRecurrence.apply(inputs, self.weight_ih, self.bias,
                                                self.weight_hh, self.peephole, batch_sizes)
        return last_sorted[packed.unsorted_indices.to(last_sorted.device)]  # (N, H)


def pack_ids(ids: Tensor, lengths: Tensor) -> PackedSequence:
    """Token ids (N, T) packed, longest sequence first: its data holds the real tokens (P,)."""
    lengths = lengths.cpu().clamp(min=1, max=ids.shape[1])
    return pack_padded_sequence(ids, lengths, batch_first=True, enforce_sorted=False)
