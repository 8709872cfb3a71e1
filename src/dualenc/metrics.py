"""Recall@k in n and MRR for 1-in-n response selection, accumulated as sums and counts.

Candidate 0 of each row is the true response. Its rank is 1 plus the number of other
candidates whose score is at least as high: ties are broken against the truth, which is
stricter than the reference notebook's metric (there, a tie lets the truth win).
R@1/2 compares the truth with the first distractor only, as the reference computes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REPORTED_KS = (1, 2, 5)


def truth_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of candidate 0 in each row, ties counted against it: (B, K) -> (B,)."""
    scores = np.asarray(scores, dtype=np.float64)
    truth = scores[:, :1]  # (B, 1)
    return 1 + (scores[:, 1:] >= truth).sum(axis=1)


@dataclass
class RankingMetrics:
    """Sums over the rows seen so far; `result()` turns them into recall and MRR."""

    num_candidates: int = 0
    n: int = 0
    hits: dict[int, int] = field(default_factory=dict)  # k -> rows with the truth in the top k
    hits_1_of_2: int = 0
    reciprocal_rank_sum: float = 0.0
    loss_sum: float = 0.0
    loss_count: int = 0

    def add(self, scores: np.ndarray) -> None:
        """Add a batch of score rows (B, K), candidate 0 the truth."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.ndim != 2 or scores.shape[1] < 2:
            raise ValueError(f"scores must be (rows, candidates >= 2), got {scores.shape}")
        if self.num_candidates and scores.shape[1] != self.num_candidates:
            raise ValueError(f"expected {self.num_candidates} candidates, got {scores.shape[1]}")
        self.num_candidates = scores.shape[1]
        ranks = truth_ranks(scores)
        for k in range(1, self.num_candidates + 1):
            self.hits[k] = self.hits.get(k, 0) + int((ranks <= k).sum())
        self.hits_1_of_2 += int((truth_ranks(scores[:, :2]) == 1).sum())
        self.reciprocal_rank_sum += float((1.0 / ranks).sum())
        self.n += scores.shape[0]

    def add_loss(self, loss_sum: float, count: int) -> None:
        """Add a summed loss over `count` items (validation loss is a mean of items)."""
        self.loss_sum += loss_sum
        self.loss_count += count

    def result(self) -> dict[str, float]:
        """R@1/2, R@k/n for k in 1, 2, 5 (those below n), MRR, n, and loss if one was added."""
        if self.n == 0:
            raise ValueError("no rows were scored")
        out: dict[str, float] = {"R@1/2": self.hits_1_of_2 / self.n}
        for k in REPORTED_KS:
            if k < self.num_candidates:
                out[f"R@{k}/{self.num_candidates}"] = self.hits[k] / self.n
        out["MRR"] = self.reciprocal_rank_sum / self.n
        out["n"] = self.n
        if self.loss_count:
            out["loss"] = self.loss_sum / self.loss_count
        return out


def format_metrics(values: dict[str, float], keys: list[str] | None = None) -> str:
    """`R@1/2 0.812 | R@1/10 0.512 | ...`: the fixed one-line form used in logs."""
    keys = keys or [k for k in values if k != "n"]
    parts = []
    for key in keys:
        value = values[key]
        parts.append(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
    return " | ".join(parts)
