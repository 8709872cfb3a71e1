"""The Dual Encoder of Lowe et al. 2015: one recurrent encoder shared by context and response.

The probability that response r follows context c is sigmoid(c·M·r + b), where c and r are
the encoder's last hidden state at each sequence's true length.

Shapes, in one alphabet:
    B  batch of pairs            T  time steps (tokens)
    N  sequences in one encoder call (2B when context and response go together)
    E  embedding size            H  hidden units per direction
    D  encoding size (H, or 2H when bidirectional)
    K  candidates per context
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dualenc.config import ModelConfig


def _glorot_(weight: Tensor, fan_in: int, fan_out: int) -> None:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        weight.uniform_(-bound, bound)


class PeepholeLSTM(nn.Module):
    """A one-layer LSTM with peephole connections (Gers & Schmidhuber 2000), as TF's LSTMCell.

    Gates, with ⊙ the element-wise product and c the cell state:
        i = σ(W_i x + U_i h + p_i ⊙ c_prev + b_i)     f = σ(W_f x + U_f h + p_f ⊙ c_prev + b_f)
        g = tanh(W_g x + U_g h + b_g)                c = f ⊙ c_prev + i ⊙ g
        o = σ(W_o x + U_o h + p_o ⊙ c + b_o)         h = o ⊙ tanh(c)

    The input projection of all time steps is one matrix product; the recurrence then runs
    over time on the still-active sequences only (sorted by length, as packing does).
    """

    def __init__(self, input_dim: int, hidden_dim: int, forget_bias: float = 2.0) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_dim, input_dim))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_dim, hidden_dim))
        self.bias = nn.Parameter(torch.zeros(4 * hidden_dim))
        self.peephole = nn.Parameter(torch.empty(3, hidden_dim))  # p_i, p_f, p_o
        fan_in, fan_out = input_dim + hidden_dim, 4 * hidden_dim
        _glorot_(self.weight_ih, fan_in, fan_out)
        _glorot_(self.weight_hh, fan_in, fan_out)
        _glorot_(self.peephole, hidden_dim, hidden_dim)
        with torch.no_grad():
            self.bias[hidden_dim : 2 * hidden_dim] = forget_bias

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """Last hidden state of each sequence: inputs (N, T, E), lengths (N,) -> (N, H)."""
        lengths = lengths.cpu()
        order = torch.argsort(lengths, descending=True, stable=True)
        sorted_lengths = lengths[order].tolist()
        steps = max(sorted_lengths[0], 1) if sorted_lengths else 0
        x_proj = F.linear(inputs[order, :steps], self.weight_ih, self.bias)  # (N, T, 4H)
        active = _active_counts(sorted_lengths, steps)
        n = inputs.shape[0]
        h = inputs.new_zeros(n, self.hidden_dim)  # (N, H)
        c = inputs.new_zeros(n, self.hidden_dim)  # (N, H)
        finished: list[Tensor] = []
        p_i, p_f, p_o = self.peephole
        for t in range(steps):
            k = active[t]
            if k < h.shape[0]:  # sequences that ended before step t keep their last state
                finished.append(h[k:])
                h, c = h[:k], c[:k]
            gates = x_proj[:k, t] + h @ self.weight_hh.t()  # (k, 4H)
            i, f, g, o = gates.chunk(4, dim=1)  # each (k, H)
            c = torch.sigmoid(f + p_f * c) * c + torch.sigmoid(i + p_i * c) * torch.tanh(g)
            h = torch.sigmoid(o + p_o * c) * torch.tanh(c)
        finished.append(h)
        last_sorted = torch.cat(finished[::-1], dim=0)  # (N, H), in sorted order
        last = torch.empty_like(last_sorted)
        last[order.to(last.device)] = last_sorted
        return last


def _active_counts(sorted_lengths: list[int], steps: int) -> list[int]:
    """For each time step, how many of the (descending) lengths are still running."""
    counts = []
    k = len(sorted_lengths)
    for t in range(steps):
        while k > 1 and sorted_lengths[k - 1] <= t:
            k -= 1
        counts.append(k)
    return counts


def _reverse_padded(inputs: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence within its own length: (N, T, E) -> (N, T, E)."""
    n, t = inputs.shape[:2]
    steps = torch.arange(t, device=inputs.device).expand(n, t)  # (N, T)
    lens = lengths.to(inputs.device).clamp(min=1).unsqueeze(1)  # (N, 1)
    index = torch.where(steps < lens, lens - 1 - steps, steps)  # (N, T)
    return inputs.gather(1, index.unsqueeze(2).expand_as(inputs))


class FusedEncoder(nn.Module):
    """PyTorch's fused LSTM or GRU, returning the hidden state at each sequence's true length.

    The recurrence runs over the padded batch, which lets the fused oneDNN kernel do the work
    (several times faster on a CPU than the packed-sequence path); length-bucketed batches
    keep the padding small. A unidirectional output at step len-1 is unaffected by the padding
    after it; the backward direction is a second network run on each sequence reversed within
    its own length, so it too starts at the sequence's true end.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.forward_rnn = _make_rnn(config)
        self.backward_rnn = _make_rnn(config) if config.bidirectional else None

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """inputs (N, T, E), lengths (N,) -> (N, D)."""
        last = lengths.to(inputs.device).clamp(min=1) - 1  # (N,)
        rows = torch.arange(inputs.shape[0], device=inputs.device)
        outputs, _ = self.forward_rnn(inputs)  # (N, T, H)
        h_fwd = outputs[rows, last]  # (N, H)
        if self.backward_rnn is None:
            return h_fwd
        outputs, _ = self.backward_rnn(_reverse_padded(inputs, lengths))  # (N, T, H)
        return torch.cat([h_fwd, outputs[rows, last]], dim=1)  # (N, 2H)


def _make_rnn(config: ModelConfig) -> nn.Module:
    """A one-direction fused LSTM or GRU with the reference initialisation."""
    rnn_class = nn.LSTM if config.cell == "lstm" else nn.GRU
    rnn = rnn_class(config.embed_dim, config.hidden_dim, batch_first=True)
    gates = 4 if config.cell == "lstm" else 3
    e, h = config.embed_dim, config.hidden_dim
    for name, param in rnn.named_parameters():
        if name.startswith("weight"):
            _glorot_(param, e + h, gates * h)
        else:
            nn.init.zeros_(param)
            if config.cell == "lstm" and name.startswith("bias_ih"):
                with torch.no_grad():
                    param[h : 2 * h] = config.forget_bias
    return rnn


class PeepholeEncoder(nn.Module):
    """PeepholeLSTM in one or both directions."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        e, h, bias = config.embed_dim, config.hidden_dim, config.forget_bias
        self.forward_cell = PeepholeLSTM(e, h, bias)
        self.backward_cell = PeepholeLSTM(e, h, bias) if config.bidirectional else None

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """inputs (N, T, E), lengths (N,) -> (N, D)."""
        h_fwd = self.forward_cell(inputs, lengths)  # (N, H)
        if self.backward_cell is None:
            return h_fwd
        h_bwd = self.backward_cell(_reverse_padded(inputs, lengths), lengths)  # (N, H)
        return torch.cat([h_fwd, h_bwd], dim=1)  # (N, 2H)


class DualEncoder(nn.Module):
    """Scores responses for contexts with sigmoid(c·M·r + b) (Lowe et al. 2015)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_dim)
        nn.init.uniform_(self.embedding.weight, -0.25, 0.25)
        if config.cell == "peephole":
            self.encoder: nn.Module = PeepholeEncoder(config)
        else:
            self.encoder = FusedEncoder(config)
        d = config.encoding_dim
        self.M = nn.Parameter(torch.empty(d, d))
        if config.m_init == "identity":
            nn.init.eye_(self.M)
        else:
            nn.init.trunc_normal_(self.M, mean=0.0, std=1.0, a=-2.0, b=2.0)
        self.b = nn.Parameter(torch.zeros(()))
        self.dropout = nn.Dropout(config.dropout)
        self.group_size = 64  # sequences per encoder call (see encode)

    def encode(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Encodings of token sequences: ids (N, T), lengths (N,) -> (N, D).

        The sequences are sorted by length and encoded in groups of `group_size`, each padded
        only to its own longest: one long response no longer makes the whole batch long.
        """
        n = ids.shape[0]
        if n <= self.group_size:
            return self._encode_padded(ids[:, : max(int(lengths.max()), 1)], lengths)
        order = torch.argsort(lengths, stable=True)  # (N,)
        parts = []
        for start in range(0, n, self.group_size):
            rows = order[start : start + self.group_size]
            group_lens = lengths[rows]
            steps = max(int(group_lens.max()), 1)
            parts.append(self._encode_padded(ids[rows, :steps], group_lens))
        encs = torch.cat(parts)  # (N, D), in sorted order
        return encs[torch.argsort(order)]

    def _encode_padded(self, ids: Tensor, lengths: Tensor) -> Tensor:
        embedded = self.dropout(self.embedding(ids))  # (N, T, E)
        return self.dropout(self.encoder(embedded, lengths))  # (N, D)

    def encode_pairs(
        self, context_ids: Tensor, context_lens: Tensor, response_ids: Tensor, response_lens: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Contexts and responses through the shared encoder: -> (B, D), (B', D).

        Two calls, each padded only to its own longest sequence: responses are a fifth of the
        length of contexts, and one call would pad them to the context length.
        """
        return self.encode(context_ids, context_lens), self.encode(response_ids, response_lens)

    def project_contexts(self, context_encs: Tensor) -> Tensor:
        """c·M for each context: (B, D) -> (B, D)."""
        return context_encs @ self.M

    def pair_logits(self, context_encs: Tensor, response_encs: Tensor) -> Tensor:
        """c·M·r + b for aligned pairs: (B, D), (B, D) -> (B,)."""
        return (self.project_contexts(context_encs) * response_encs).sum(dim=1) + self.b

    def all_logits(self, context_encs: Tensor, response_encs: Tensor) -> Tensor:
        """c·M·r + b for every context against every response: (B, D), (B', D) -> (B, B')."""
        return self.project_contexts(context_encs) @ response_encs.t() + self.b

    def candidate_logits(self, context_encs: Tensor, candidate_encs: Tensor) -> Tensor:
        """c·M·r + b for each context's own K candidates: (B, D), (B, K, D) -> (B, K)."""
        projected = self.project_contexts(context_encs)  # (B, D)
        return torch.einsum("bd,bkd->bk", projected, candidate_encs) + self.b

    def forward(
        self, context_ids: Tensor, context_lens: Tensor, response_ids: Tensor, response_lens: Tensor
    ) -> Tensor:
        """Logits of aligned (context, response) pairs: -> (B,); probabilities are their sigmoid."""
        c, r = self.encode_pairs(context_ids, context_lens, response_ids, response_lens)
        return self.pair_logits(c, r)


def pair_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The reference loss: mean sigmoid cross-entropy over labelled pairs."""
    return F.binary_cross_entropy_with_logits(logits, labels.float())


def inbatch_loss(all_logits: Tensor, offset: int = 0) -> Tensor:
    """Softmax cross-entropy of each context against every response of the batch (Henderson
    et al. 2017, "Efficient Natural Language Response Suggestion for Smart Reply").

    all_logits (b, B): context i's true response is column offset + i (offset is non-zero
    when this process holds one slice of a global batch). Returns the mean over contexts.
    """
    targets = torch.arange(all_logits.shape[0], device=all_logits.device) + offset  # (b,)
    return F.cross_entropy(all_logits, targets)
