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

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dualenc.config import ModelConfig
from dualenc.lanes import encode_groups
from dualenc.peephole import PeepholeLSTM, glorot_, pack_ids


def _reverse_padded(inputs: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each sequence within its own length: (N, T, E) -> (N, T, E), or (N, T) ->
    (N, T)."""
    n, t = inputs.shape[:2]
    steps = torch.arange(t, device=inputs.device).expand(n, t)  # (N, T)
    lens = lengths.to(inputs.device).clamp(min=1).unsqueeze(1)  # (N, 1)
    index = torch.where(steps < lens, lens - 1 - steps, steps)  # (N, T)
    if inputs.dim() == 3:
        index = index.unsqueeze(2).expand_as(inputs)
    return inputs.gather(1, index)


def reversed_rows(ids: Tensor, lengths: Tensor) -> Tensor:
    """For each row of the packing of the sequences reversed within their lengths, the row of
    the packing of `ids` (N, T) that holds the same token: (P,) indices."""
    n, t = ids.shape
    positions = torch.arange(n * t).view(n, t)  # each token's flat position
    forward_pos = pack_ids(positions, lengths).data  # (P,)
    reverse_pos = pack_ids(_reverse_padded(positions, lengths), lengths).data  # (P,)
    row_of = torch.empty(n * t, dtype=torch.long)
    row_of[forward_pos] = torch.arange(len(forward_pos))
    return row_of[reverse_pos]


class FusedEncoder(nn.Module):
    """PyTorch's fused LSTM or GRU: the hidden state at each sequence's true length, or the
    max or mean of the states over its true steps (`pooling`).

    The recurrence runs over the padded batch, which lets the fused oneDNN kernel do the work
    (several times faster on a CPU than the packed-sequence path); length-bucketed batches
    keep the padding small. A unidirectional output at step len-1 is unaffected by the padding
    after it; the backward direction is a second network run on each sequence reversed within
    its own length, so it too starts at the sequence's true end.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.pooling = config.pooling
        self.forward_rnn = _make_rnn(config)
        self.backward_rnn = _make_rnn(config) if config.bidirectional else None

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """inputs (N, T, E), lengths (N,) -> (N, D)."""
        lengths = lengths.to(inputs.device).clamp(min=1)  # (N,)
        outputs, _ = self.forward_rnn(inputs)  # (N, T, H)
        parts = [self._pool(outputs, lengths)]
        if self.backward_rnn is not None:
            outputs, _ = self.backward_rnn(_reverse_padded(inputs, lengths))  # (N, T, H)
            parts.append(self._pool(outputs, lengths))
        return torch.cat(parts, dim=1)  # (N, D)

    def _pool(self, outputs: Tensor, lengths: Tensor) -> Tensor:
        """(N, T, H) -> (N, H): the state at step len-1, or max/mean over the true steps."""
        if self.pooling == "last":
            return outputs[torch.arange(outputs.shape[0], device=outputs.device), lengths - 1]
        steps = torch.arange(outputs.shape[1], device=outputs.device)  # (T,)
        valid = (steps[None, :] < lengths[:, None]).unsqueeze(2)  # (N, T, 1)
        if self.pooling == "max":
            return outputs.masked_fill(~valid, float("-inf")).amax(dim=1)
        return (outputs * valid).sum(dim=1) / lengths[:, None].to(outputs.dtype)


def _make_rnn(config: ModelConfig) -> nn.Module:
    """A one-direction fused LSTM or GRU with the reference initialisation."""
    rnn_class = nn.LSTM if config.cell == "lstm" else nn.GRU
    rnn = rnn_class(config.embed_dim, config.hidden_dim, batch_first=True)
    gates = 4 if config.cell == "lstm" else 3
    e, h = config.embed_dim, config.hidden_dim
    for name, param in rnn.named_parameters():
        if name.startswith("weight"):
            glorot_(param, e + h, gates * h)
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

    def encode_ids(self, ids: Tensor, lengths: Tensor, embed: Callable[[Tensor], Tensor]) -> Tensor:
        """Token ids (N, T) -> (N, D), packed before `embed` maps them to vectors ((P,) ->
        (P, E)): the padding is never embedded. The backward direction reads the same
        embedded tokens in reverse."""
        packed = pack_ids(ids, lengths)
        inputs = embed(packed.data.to(ids.device))  # (P, E)
        h_fwd = self.forward_cell.run_packed(inputs, packed)  # (N, H)
        if self.backward_cell is None:
            return h_fwd
        rows = reversed_rows(ids, lengths).to(inputs.device)
        h_bwd = self.backward_cell.run_packed(inputs[rows], packed)  # (N, H)
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
        # sequences per encoder call (see encode); None takes `_group_size`'s measured choice
        self.group_size: int | None = None
        # CPU threads that encode length groups side by side, forward and backward
        # (dualenc.lanes); the trainer sets it, 1 encodes the groups one after another
        self.lanes = 1

    def encode(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Encodings of token sequences: ids (N, T), lengths (N,) -> (N, D).

        The sequences are sorted by length and encoded in groups of `group_size`, each padded
        only to its own longest: one long response no longer makes the whole batch long.
        """
        return self.encode_sets([(ids, lengths)])[0]

    def encode_pairs(
        self, context_ids: Tensor, context_lens: Tensor, response_ids: Tensor, response_lens: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Contexts and responses through the shared encoder: -> (B, D), (B', D).

        Each side is grouped on its own, so a group is padded only to its longest sequence:
        responses are a fifth of the length of contexts.
        """
        c, r = self.encode_sets([(context_ids, context_lens), (response_ids, response_lens)])
        return c, r

    def encode_sets(self, sets: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
        """Encodings of several sets of sequences, (ids (N, T), lengths (N,)) each, whose
        length groups are encoded together (side by side when `lanes` is above 1)."""
        if self.config.cell == "peephole" and self.lanes <= 1 and len(sets) > 1:
            # The packed recurrence drops each finished row: one run over all the sets costs
            # the steps of the longest sequence, not those of each set's longest in turn.
            width = max(ids.shape[1] for ids, _ in sets)
            ids = torch.cat([F.pad(ids, (0, width - ids.shape[1])) for ids, _ in sets])
            lengths = torch.cat([lengths for _, lengths in sets])
            encs = self.encode_sets([(ids, lengths)])[0]
            return list(encs.split([len(lengths) for _, lengths in sets]))
        orders, groups, counts = [], [], []
        for ids, lengths in sets:
            order, parts = self._length_groups(ids, lengths)
            orders.append(order)
            groups.extend(parts)
            counts.append(len(parts))
        params = [p for p in self.parameters() if p.requires_grad]
        draw_seeds = self.training and self.config.dropout > 0
        encs = encode_groups(self._encode_padded, groups, self.lanes, params, draw_seeds)
        out, start = [], 0
        for order, count in zip(orders, counts, strict=True):
            part = encs[start] if count == 1 else torch.cat(encs[start : start + count])
            out.append(part if order is None else part[torch.argsort(order)])
            start += count
        return out

    def _length_groups(self, ids: Tensor, lengths: Tensor) -> tuple[Tensor | None, list]:
        # The sort order (None if unsorted) and the (ids, lengths) of each group.
        n = ids.shape[0]
        size = self._group_size(ids.device)
        if self.config.cell == "peephole" and self.lanes > 1:
            size = -(-n // self.lanes)
        if n <= size:
            return None, [(ids[:, : max(int(lengths.max()), 1)], lengths)]
        order = torch.argsort(lengths, stable=True)  # (N,)
        groups = []
        for start in range(0, n, size):
            rows = order[start : start + size]
            group_lens = lengths[rows]
            groups.append((ids[rows, : max(int(group_lens.max()), 1)], group_lens))
        return order, groups

    def _group_size(self, device: torch.device) -> int:
        """Sequences per call of the fused cells: 48 in fp32 and 64 under bf16 autocast, the
        fastest of 32 to 128 on a 2-core CPU. The peephole cell skips finished sequences
        step by step, so it needs no groups beyond one a lane."""
        if self.group_size is not None:
            return self.group_size
        if self.config.cell == "peephole":
            return 10**9
        return 64 if torch.is_autocast_enabled(device.type) else 48

    def _encode_padded(
        self, ids: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        if isinstance(self.encoder, PeepholeEncoder):  # embeds the real tokens only
            encs = self.encoder.encode_ids(
                ids, lengths, lambda tokens: self._drop(self.embedding(tokens), generator))
            return self._drop(encs, generator)  # (N, D)
        embedded = self._drop(self.embedding(ids), generator)  # (N, T, E)
        return self._drop(self.encoder(embedded, lengths), generator)  # (N, D)

    def _drop(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        # nn.Dropout draws from torch's global random state; a lane has its own generator
        if generator is None or not self.training or self.config.dropout == 0:
            return self.dropout(x)
        keep = 1.0 - self.config.dropout
        mask = torch.empty(x.shape, dtype=x.dtype, device=x.device).bernoulli_(keep,
                                                                             generator=generator)
        return x * mask / keep

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


def inbatch_loss(
    all_logits: Tensor,
    offset: int = 0,
    keys: Tensor | None = None,
    all_keys: Tensor | None = None,
) -> Tensor:
    """Softmax cross-entropy of each context against every response of the batch (Henderson
    et al. 2017, "Efficient Natural Language Response Suggestion for Smart Reply").

    all_logits (b, B): context i's true response is column offset + i (offset is non-zero
    when this process holds one slice of a global batch). With response keys (b,) and
    all_keys (B,), another copy of a context's own response is no negative: short dialogs
    give the same pair many times, and such a copy would be a target it must lose against.
    Returns the mean over contexts.
    """
    rows = torch.arange(all_logits.shape[0], device=all_logits.device)  # (b,)
    targets = rows + offset  # (b,)
    if keys is not None and all_keys is not None:
        copies = keys[:, None] == all_keys[None, :]  # (b, B)
        copies[rows, targets] = False
        all_logits = all_logits.masked_fill(copies, float("-inf"))
    return F.cross_entropy(all_logits, targets)
