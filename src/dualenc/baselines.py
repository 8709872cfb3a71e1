"""Baseline rankers behind the same `score(contexts, candidates)` interface as the model.

TF-IDF follows Lowe et al. 2015: the context and each candidate become tf-idf vectors, with
document frequencies counted over the training texts, and candidates rank by cosine
similarity. BM25 (Robertson & Zaragoza 2009) treats the context as the query and each
candidate as a document, with k1 = 1.2, b = 0.75 and the average document length of the
training responses. The corpus markers __eou__ and __eot__ are not words and are ignored.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from dualenc.corpus.ranking import read_train_pairs
from dualenc.text import Tokenizer

MARKERS = frozenset({"__eou__", "__eot__"})
BASELINES = ("random", "tfidf", "bm25")


class Scorer(Protocol):
    """Anything that scores candidates for contexts; higher is better."""

    def score(self, contexts: list[str], candidates: list[list[str]]) -> np.ndarray:
        """(B contexts, B lists of K candidates) -> scores (B, K)."""
        ...


class RandomScorer:
    """Uniform random scores from a seeded generator: the chance level."""

    def __init__(self, seed: int = 1234) -> None:
        self.rng = np.random.default_rng(seed)

    def score(self, contexts: list[str], candidates: list[list[str]]) -> np.ndarray:
        k = len(candidates[0]) if candidates else 0
        return self.rng.random((len(contexts), k))


class DocumentFrequencies:
    """Document frequencies and lengths of the training texts, for TF-IDF and BM25."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.df: Counter[str] = Counter()
        self.num_docs = 0
        self.response_tokens = 0
        self.num_responses = 0

    def words(self, text: str) -> list[str]:
        return [t for t in self.tokenizer.tokenize(text) if t not in MARKERS]

    def fit(self, pairs: Iterable[tuple[str, str]]) -> DocumentFrequencies:
        """Count each distinct context and response text once."""
        seen: set[str] = set()
        for context, response in pairs:
            for text, is_response in ((context, False), (response, True)):
                if text in seen:
                    continue
                seen.add(text)
                words = self.words(text)
                self.df.update(set(words))
                self.num_docs += 1
                if is_response:
                    self.response_tokens += len(words)
                    self.num_responses += 1
        return self

    @property
    def avg_response_len(self) -> float:
        return self.response_tokens / max(self.num_responses, 1)


def fit_document_frequencies(train_path: str | Path, tokenizer: Tokenizer) -> DocumentFrequencies:
    """Document frequencies over a training ranking file."""
    pairs = ((p.context, p.response) for p in read_train_pairs(train_path))
    return DocumentFrequencies(tokenizer).fit(pairs)


class TfidfScorer:
    """Cosine similarity of tf-idf vectors, idf = ln((1 + N) / (1 + df)) + 1."""

    def __init__(self, stats: DocumentFrequencies) -> None:
        self.stats = stats

    def idf(self, word: str) -> float:
        n = self.stats.num_docs
        return math.log((1 + n) / (1 + self.stats.df.get(word, 0))) + 1.0

    def vector(self, text: str) -> dict[str, float]:
        counts = Counter(self.stats.words(text))
        vec = {w: c * self.idf(w) for w, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vec.values()))
        return {w: v / norm for w, v in vec.items()} if norm else {}

    def score(self, contexts: list[str], candidates: list[list[str]]) -> np.ndarray:
        scores = np.zeros((len(contexts), len(candidates[0]) if candidates else 0))
        for i, (context, cands) in enumerate(zip(contexts, candidates, strict=True)):
            query = self.vector(context)
            for j, cand in enumerate(cands):
                doc = self.vector(cand)
                scores[i, j] = sum(v * doc.get(w, 0.0) for w, v in query.items())
        return scores


class Bm25Scorer:
    """Okapi BM25 of each candidate for the context as query."""

    def __init__(self, stats: DocumentFrequencies, k1: float = 1.2, b: float = 0.75) -> None:
        self.stats, self.k1, self.b = stats, k1, b

    def idf(self, word: str) -> float:
        n, df = self.stats.num_docs, self.stats.df.get(word, 0)
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def score(self, contexts: list[str], candidates: list[list[str]]) -> np.ndarray:
        scores = np.zeros((len(contexts), len(candidates[0]) if candidates else 0))
        avg_len = max(self.stats.avg_response_len, 1e-9)
        for i, (context, cands) in enumerate(zip(contexts, candidates, strict=True)):
            query = Counter(self.stats.words(context))
            for j, cand in enumerate(cands):
                doc = Counter(self.stats.words(cand))
                norm = self.k1 * (1.0 - self.b + self.b * sum(doc.values()) / avg_len)
                scores[i, j] = sum(
                    qc * self.idf(w) * doc[w] * (self.k1 + 1.0) / (doc[w] + norm)
                    for w, qc in query.items()
                    if w in doc
                )
        return scores


def make_baseline(
    name: str, train_path: str | Path | None, tokenizer: Tokenizer, seed: int = 1234
) -> Scorer:
    """A baseline by name; TF-IDF and BM25 are fitted on `train_path`."""
    if name == "random":
        return RandomScorer(seed)
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    if train_path is None:
        raise ValueError(f"the {name} baseline is fitted on a training file: pass --train")
    stats = fit_document_frequencies(train_path, tokenizer)
    return TfidfScorer(stats) if name == "tfidf" else Bm25Scorer(stats)
