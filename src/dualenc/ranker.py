"""Ranking with a trained model: load a run folder once, score candidates in batched passes.

Shapes: B contexts, K candidates per context, N sequences in one encoder call, T time
steps, D encoding size (as in dualenc.model).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from dualenc.checkpoint import load_model, load_text_encoder
from dualenc.config import to_dict
from dualenc.features import TextEncoder
from dualenc.model import DualEncoder
from dualenc.text import EOT, EOU, join_turns

Context = str | Sequence[str]  # marker text, or a list of turns

# Cost model of one fused-encoder call over a padded group (measured on a 2-core x86 CPU):
# the call itself costs about as much as 48 sequence-steps, each time step about 2 more.
_CALL_COST = 48.0
_STEP_COST = 2.0
_MAX_PLANNED = 64  # larger calls use the model's own fixed-size length groups
_CACHED_TEXTS = 65_536  # response texts whose ids are remembered


@dataclass
class RankedCandidate:
    """One candidate with its score; `index` is its position in the input list."""

    text: str
    index: int
    logit: float
    probability: float


def context_text(context: Context) -> str:
    """The marker text of a context: a list of turns is joined with the corpus markers, and
    plain text without any marker is taken as one turn (training contexts always end with
    ` __eou__ __eot__ `)."""
    if not isinstance(context, str):
        return join_turns(context)
    if EOU in context or EOT in context:
        return context
    return join_turns([context])


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """The probability that each response follows its context, as the model was trained."""
    return 1.0 / (1.0 + np.exp(-logits))


def _padded(rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (N, T) and lengths (N,) from lists of ids (empty ones get one pad)."""
    lengths = np.array([max(len(r), 1) for r in rows], dtype=np.int64)  # (N,)
    ids = np.zeros((len(rows), int(lengths.max(initial=1))), dtype=np.int64)  # (N, T)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def length_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Rows split into groups of similar length, each to be padded only to its own longest.

    The split minimises the cost model above (a fixed cost per call plus the padded work),
    by dynamic programming over the rows sorted by falling length; O(N^2) for N rows.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    longest = [max(lengths[i], 1) for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest split of the first j sorted rows
    start = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + _CALL_COST + longest[i] * (_STEP_COST + j - i)
            if cost < best[j]:
                best[j], start[j] = cost, i
    groups = []
    while n > 0:
        groups.append(order[start[n] : n])
        n = start[n]
    return groups[::-1]


class Ranker:
    """A trained DualEncoder with the tokenizer and vocabulary it was trained with.

    Args:
        model: the network, in eval mode.
        encoder: text to ids, as at training time.
        device: where the network runs.
    """

    def __init__(self, model: DualEncoder, encoder: TextEncoder, device: str = "cpu") -> None:
        self.model, self.encoder, self.device = model, encoder, torch.device(device)
        self.run_dir: Path | None = None  # set by `load`
        self.checkpoint: str | None = None
        # A text's ids depend on the tokenizer and vocabulary only, which never change.
        self._response_ids = lru_cache(maxsize=_CACHED_TEXTS)(encoder.encode_response)
        # NOTE: the peephole cell already skips finished sequences at every step, and a
        # GPU call costs little: neither gains from splitting a call by length.
        self._plan_groups = model.config.cell != "peephole" and self.device.type == "cpu"

    @classmethod
    def load(cls, run_dir: str | Path, which: str = "best", device: str = "cpu") -> Ranker:
        """Load a run folder (its best checkpoint by default); no training arguments needed."""
        model, _ = load_model(run_dir, which, device)
        ranker = cls(model, load_text_encoder(run_dir), device)
        ranker.run_dir, ranker.checkpoint = Path(run_dir), which
        return ranker

    @property
    def encoding_dim(self) -> int:
        """D, the size of an encoding."""
        return self.model.config.encoding_dim

    @torch.inference_mode()
    def encode_contexts(self, contexts: Sequence[Context]) -> torch.Tensor:
        """Context encodings c: (B, D)."""
        return self._encode([self._context_ids(c) for c in contexts])

    @torch.inference_mode()
    def encode_responses(self, responses: Sequence[str]) -> torch.Tensor:
        """Response encodings r: (B, D)."""
        return self._encode([self._response_ids(r) for r in responses])

    @torch.inference_mode()
    def score(self, contexts: Sequence[Context], candidates: Sequence[Sequence[str]]) -> np.ndarray:
        """Logits c·M·r + b of each context's candidates: -> (B, K). Higher is better.

        Contexts and candidates go through the encoder together, in one batched pass.
        """
        b, k = len(contexts), len(candidates[0]) if candidates else 0
        if len(candidates) != b or any(len(row) != k for row in candidates):
            raise ValueError(f"expected {b} rows of candidates, each as long as the first ({k})")
        rows = [self._context_ids(c) for c in contexts]
        rows += [self._response_ids(text) for row in candidates for text in row]
        encs = self._encode(rows)  # (B + B*K, D)
        c, r = encs[:b], encs[b:].view(b, k, self.encoding_dim)  # (B, D), (B, K, D)
        return self.model.candidate_logits(c, r).cpu().numpy()

    def rank(self, context: Context, candidates: Sequence[str]) -> list[RankedCandidate]:
        """Candidates sorted best first, with logits and probabilities, in one batched pass."""
        if not candidates:
            return []
        logits = self.score([context], [list(candidates)])[0]  # (K,)
        probs = sigmoid(logits)
        order = np.argsort(-logits, kind="stable")
        return [
            RankedCandidate(candidates[i], int(i), float(logits[i]), float(probs[i])) for i in order
        ]

    def fingerprint(self) -> str:
        """A sha256 of everything that decides a score: weights, model config, vocabulary,
        tokenizer settings and truncation lengths. Response banks record it."""
        digest = hashlib.sha256()
        settings = {
            "model": to_dict(self.model.config),
            "tokenizer": self.encoder.tokenizer.to_dict(),
            "max_lengths": [self.encoder.max_context_len, self.encoder.max_response_len],
        }
        digest.update(json.dumps(settings, sort_keys=True).encode())
        digest.update("\n".join(self.encoder.vocab.tokens).encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            tensor = tensor.detach().cpu().contiguous()
            digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
            digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def _context_ids(self, context: Context) -> list[int]:
        return self.encoder.encode_context(context_text(context))

    def _encode(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Encodings of id rows: -> (N, D), float32, on the CPU's or the model's device."""
        if not self._plan_groups or len(rows) > _MAX_PLANNED:
            ids, lengths = _padded(rows)
            return self.model.encode(ids.to(self.device), lengths.to(self.device)).float()
        encs = torch.empty(len(rows), self.encoding_dim)  # (N, D)
        for group in length_groups([len(r) for r in rows]):
            ids, lengths = _padded([rows[i] for i in group])  # (n, T), (n,)
            encs[group] = self.model.encode(ids, lengths).float()
        return encs
