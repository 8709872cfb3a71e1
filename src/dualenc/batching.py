"""Length-bucketed batches over prepared arrays, reproducible from (seed, epoch).

Each epoch shuffles the training rows, cuts the shuffled order into windows of
`bucket_batches` batches, sorts each window by context length, cuts it into batches and
shuffles the batch order. Padding then stays small while every epoch still sees the rows
in a fresh random order. The whole order is a function of (seed, epoch), so a resumed run
regenerates it and skips the batches already done; under torchrun every process builds the
same global batches and takes its own slice of each.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from dualenc.features import Ragged


@dataclass
class PairBatch:
    """Token ids of aligned (context, response) pairs and their labels."""

    context_ids: torch.Tensor  # (B, Tc)
    context_lens: torch.Tensor  # (B,)
    response_ids: torch.Tensor  # (B, Tr)
    response_lens: torch.Tensor  # (B,)
    labels: torch.Tensor  # (B,)
    response_keys: torch.Tensor  # (B,) a checksum of each response's ids: equal texts, equal keys

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(*(t.to(device, non_blocking=True) for t in vars(self).values()))

    def drop_words(self, share: float, unk_id: int, pad_id: int = 0) -> PairBatch:
        """A copy with each real token replaced by `unk_id` with probability `share` (word
        dropout), drawn from torch's random state on the batch's device. Response keys stay
        those of the true texts."""

        def drop(ids: torch.Tensor) -> torch.Tensor:
            hit = (torch.rand(ids.shape, device=ids.device) < share) & (ids != pad_id)
            return ids.masked_fill(hit, unk_id)

        return PairBatch(drop(self.context_ids), self.context_lens, drop(self.response_ids),
                         self.response_lens, self.labels, self.response_keys)

    def hash_words(self, buckets: torch.Tensor, eligible: torch.Tensor, share: float) -> PairBatch:
        """A copy in which a random `share` of the eligible word types is replaced, at every
        place in the batch, by the type's hash bucket: practice for the words that ranking
        meets without an id of their own. A context and a response that share such a word
        share its bucket. `buckets[i]` is the bucket id of id i and `eligible[i]` whether
        id i may be replaced; the draw uses torch's random state on the batch's device."""
        hit = (torch.rand(eligible.shape, device=eligible.device) < share) & eligible

        def hashed(ids: torch.Tensor) -> torch.Tensor:
            return torch.where(hit[ids], buckets[ids], ids)

        return PairBatch(hashed(self.context_ids), self.context_lens,
                         hashed(self.response_ids), self.response_lens, self.labels,
                         self.response_keys)

    @property
    def size(self) -> int:
        return self.labels.shape[0]

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens in the batch."""
        return int(self.context_lens.sum()) + int(self.response_lens.sum())


def epoch_batches(
    lengths: np.ndarray,
    rows: np.ndarray,
    batch_size: int,
    bucket_batches: int,
    seed: int,
    epoch: int,
) -> list[np.ndarray]:
    """The global batches of one epoch: lists of row numbers, grouped by length."""
    rng = np.random.default_rng([seed, epoch])
    order = rows[rng.permutation(len(rows))]
    window = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def shard_bounds(size: int, world_size: int) -> list[int]:
    """Where each process's slice of a global batch of `size` rows starts: world_size + 1
    offsets, rank r holding rows bounds[r] to bounds[r + 1]."""
    return np.linspace(0, size, world_size + 1).round().astype(int).tolist()


def shard(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This process's contiguous slice of a global batch."""
    bounds = shard_bounds(len(batch), world_size)
    return batch[bounds[rank] : bounds[rank + 1]]


def pair_batch(
    context: Ragged, response: Ragged, labels: np.ndarray, rows: np.ndarray, context_window: int = 0
) -> PairBatch:
    """Gather the pairs at `rows` into padded tensors (contexts cut to their last
    `context_window` tokens when it is positive)."""
    c_ids, c_lens = context.batch(rows, context_window)
    r_ids, r_lens = response.batch(rows)
    keys = [zlib.crc32(r_ids[i, : r_lens[i]].tobytes()) for i in range(len(rows))]
    return PairBatch(
        torch.from_numpy(c_ids),
        torch.from_numpy(c_lens),
        torch.from_numpy(r_ids),
        torch.from_numpy(r_lens),
        torch.from_numpy(labels[rows].astype(np.float32)),
        torch.tensor(keys, dtype=torch.int64),
    )


@dataclass
class CandidateBatch:
    """Contexts with their K candidates each, candidate 0 the truth."""

    context_ids: torch.Tensor  # (B, Tc)
    context_lens: torch.Tensor  # (B,)
    candidate_ids: torch.Tensor  # (B*K, Tr)
    candidate_lens: torch.Tensor  # (B*K,)
    num_candidates: int


def eval_batches(
    context: Ragged, candidates: Ragged, num_candidates: int, batch_size: int,
    context_window: int = 0,
) -> Iterator[CandidateBatch]:
    """Batches of an evaluation split, grouped by context length (the order of rows does
    not change any metric, which sums over rows)."""
    order = np.argsort(context.lengths, kind="stable")
    k = num_candidates
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        cand_rows = (rows[:, None] * k + np.arange(k)[None, :]).reshape(-1)  # (B*K,)
        c_ids, c_lens = context.batch(rows, context_window)
        r_ids, r_lens = candidates.batch(cand_rows)
        yield CandidateBatch(
            torch.from_numpy(c_ids),
            torch.from_numpy(c_lens),
            torch.from_numpy(r_ids),
            torch.from_numpy(r_lens),
            k,
        )
