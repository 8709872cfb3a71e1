"""Ranking with a trained model: load a run folder once, score candidates in batched passes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dualenc.checkpoint import load_model, load_text_encoder
from dualenc.features import TextEncoder
from dualenc.model import DualEncoder

Context = str | Sequence[str]  # marker text, or a list of turns


@dataclass
class RankedCandidate:
    """One candidate with its score; `index` is its position in the input list."""

    text: str
    index: int
    logit: float
    probability: float


def _padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (N, T) and lengths (N,) from lists of ids (empty ones get one pad)."""
    lengths = torch.tensor([max(len(r), 1) for r in rows], dtype=torch.long)  # (N,)
    ids = torch.zeros(len(rows), int(lengths.max()) if rows else 1, dtype=torch.long)  # (N, T)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids, lengths


class Ranker:
    """A trained DualEncoder with the tokenizer and vocabulary it was trained with.

    Args:
        model: the network, in eval mode.
        encoder: text to ids, as at training time.
        device: where the network runs.
    """

    def __init__(self, model: DualEncoder, encoder: TextEncoder, device: str = "cpu") -> None:
        self.model, self.encoder, self.device = model, encoder, torch.device(device)

    @classmethod
    def load(cls, run_dir: str | Path, which: str = "best", device: str = "cpu") -> Ranker:
        """Load a run folder (its best checkpoint by default); no training arguments needed."""
        model, _ = load_model(run_dir, which, device)
        return cls(model, load_text_encoder(run_dir), device)

    @torch.inference_mode()
    def encode_contexts(self, contexts: Sequence[Context]) -> torch.Tensor:
        """Context encodings c: (B, D)."""
        ids, lengths = _padded([self.encoder.encode_context(c) for c in contexts])
        return self.model.encode(ids.to(self.device), lengths.to(self.device)).float()

    @torch.inference_mode()
    def encode_responses(self, responses: Sequence[str]) -> torch.Tensor:
        """Response encodings r: (B, D)."""
        ids, lengths = _padded([self.encoder.encode_response(r) for r in responses])
        return self.model.encode(ids.to(self.device), lengths.to(self.device)).float()

    @torch.inference_mode()
    def score(self, contexts: Sequence[Context], candidates: Sequence[Sequence[str]]) -> np.ndarray:
        """Logits c·M·r + b of each context's candidates: -> (B, K). Higher is better."""
        k = len(candidates[0])
        c = self.encode_contexts(contexts)  # (B, D)
        flat = [text for row in candidates for text in row]
        r = self.encode_responses(flat).view(len(contexts), k, -1)  # (B, K, D)
        return self.model.candidate_logits(c, r).cpu().numpy()

    def rank(self, context: Context, candidates: Sequence[str]) -> list[RankedCandidate]:
        """Candidates sorted best first, with logits and probabilities, in one batched pass."""
        logits = self.score([context], [list(candidates)])[0]  # (K,)
        probs = 1.0 / (1.0 + np.exp(-logits))
        order = np.argsort(-logits, kind="stable")
        return [
            RankedCandidate(candidates[i], int(i), float(logits[i]), float(probs[i])) for i in order
        ]
