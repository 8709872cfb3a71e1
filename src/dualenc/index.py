"""Response banks: responses encoded once, searched for the best replies to a context.

A bank stores v = M·r for each response r, so the logit of a context c is one inner product,
c·v + b = c·M·r + b, and the best responses are a maximum-inner-product search: exact in
PyTorch for small banks, or approximate with a FAISS inverted-file index (IVF, inner product)
for large ones, whose recall against the exact search is measured when it is built.

An index folder, written atomically, holds nothing pickled:

    INDEX/meta.json        sizes, bias b, the run it was built from, the FAISS settings
    INDEX/responses.jsonl  one JSON string a line, row i of the bank
    INDEX/vectors.npy      float32 (N, D), row i is M·r_i
    INDEX/faiss.index      the FAISS index (faiss.write_index), when there is one

Shapes: N responses in the bank, B contexts, D encoding size, S sampled queries, k results.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dualenc import __version__
from dualenc.corpus.ranking import ranking_format, read_eval_examples, read_train_pairs
from dualenc.errors import DataError, DualencError
from dualenc.fileio import atomic_dir, read_json, write_json
from dualenc.ranker import Context, Ranker, sigmoid

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
META_FILE, RESPONSES_FILE = "meta.json", "responses.jsonl"
VECTORS_FILE, FAISS_FILE = "vectors.npy", "faiss.index"
KINDS = ("auto", "exact", "faiss")
SOURCE_FORMATS = ("auto", "lines", "ranking")
EXACT_LIMIT = 100_000  # the "auto" kind builds a FAISS index for banks larger than this
RECALL_K = 10  # recall@k reported for a FAISS index
RECALL_QUERIES = 256  # responses sampled as stand-in queries to measure recall
_EXACT_CHUNK = 64  # contexts scored against the whole bank at once


@dataclass
class BankHit:
    """One response of a bank found for a context; `index` is its row in the bank."""

    text: str
    index: int
    logit: float
    probability: float


# Reading the responses ----------------------------------------------------------------------


def read_responses(path: str | Path, source_format: str = "auto") -> tuple[list[str], int]:
    """The distinct responses of a file, in first-seen order, and how many were read.

    Args:
        path: a text file of responses, one a line, or a ranking file (UDC v2 CSV or Xu).
        source_format: "lines", "ranking", or "auto": ranking for .csv, and for .txt/.tsv
            whose first line has a 0/1 label and at least three tab-separated fields.
    """
    if source_format not in SOURCE_FORMATS:
        raise DualencError(f"format must be one of {', '.join(SOURCE_FORMATS)}")
    if source_format == "auto":
        source_format = "ranking" if _looks_like_ranking(Path(path)) else "lines"
    texts = _ranking_responses(path) if source_format == "ranking" else _lines(path)
    seen: dict[str, None] = {}
    count = 0
    for text in texts:
        count += 1
        seen.setdefault(text, None)
    if not seen:
        raise DataError(path, "no responses found")
    return list(seen), count


def _looks_like_ranking(path: Path) -> bool:
    if path.suffix.lower() == ".csv":
        return True
    if path.suffix.lower() not in (".txt", ".tsv"):
        return False
    first = _first_line(path)
    fields = first.split("\t")
    return len(fields) >= 3 and fields[0].strip() in ("0", "1", "0.0", "1.0")


def _first_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return next((line for line in file if line.strip()), "")
    except OSError as err:
        raise DataError(path, f"cannot read the file: {err.strerror or err}") from err


def _lines(path: str | Path) -> Iterable[str]:
    try:
        with open(path, encoding="utf-8-sig") as file:
            for line in file:
                if line.strip():
                    yield line.strip()
    except OSError as err:
        raise DataError(path, f"cannot read the file: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text: {err}") from err


def _ranking_responses(path: str | Path) -> Iterable[str]:
    # Training pairs give their responses; 1-in-n files give every candidate. A Xu-format
    # file lists one candidate a line in both cases, so its pairs are read either way.
    if ranking_format(path) == "udc" and "Ground Truth Utterance" in _first_line(Path(path)):
        for example in read_eval_examples(path):
            yield from (text.strip() for text in example.candidates)
    else:
        yield from (pair.response.strip() for pair in read_train_pairs(path))


# Encoding and the FAISS index ---------------------------------------------------------------


def encode_bank(
    ranker: Ranker, responses: Sequence[str], batch_size: int = 1024, progress: bool = True
) -> np.ndarray:
    """The bank vectors M·r of `responses`: -> float32 (N, D)."""
    vectors = np.empty((len(responses), ranker.encoding_dim), dtype=np.float32)  # (N, D)
    m = ranker.model.M.detach().float().cpu()  # (D, D)
    starts = range(0, len(responses), batch_size)
    for start in tqdm(starts, desc="encode", unit="batch", disable=not progress):
        r = ranker.encode_responses(responses[start : start + batch_size]).cpu()  # (b, D)
        vectors[start : start + len(r)] = (r @ m.t()).numpy()  # (b, D): row i is M·r_i
    return vectors


def _faiss() -> Any:
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU probing is noise
    try:
        import faiss
    except ImportError as err:
        raise DualencError(
            "a FAISS index needs the faiss-cpu package: pip install 'dualenc[faiss]' "
            "(or build an exact index with --kind exact)"
        ) from err
    return faiss


def build_faiss_index(vectors: np.ndarray, nlist: int = 0, seed: int = 0) -> Any:
    """An IVF-Flat inner-product FAISS index over `vectors` (N, D).

    Args:
        vectors: the bank vectors, float32.
        nlist: inverted lists (k-means cells); 0 for about sqrt(N), at most N / 39.
        seed: picks the k-means training sample.
    """
    faiss = _faiss()
    n, d = vectors.shape
    if nlist <= 0:
        nlist = max(1, min(round(math.sqrt(n)), n // 39))
    if nlist > n:
        raise DualencError(f"nlist {nlist} is more than the {n} responses of the bank")
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    sample = min(n, 64 * nlist)  # k-means needs ~40 points a cell; more buys little
    rows = np.random.default_rng(seed).choice(n, sample, replace=False) if sample < n else None
    index.train(np.ascontiguousarray(vectors if rows is None else vectors[np.sort(rows)]))
    index.add(np.ascontiguousarray(vectors))
    return index


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of queries (B, D) against vectors (N, D) -> (B, k) twice:
    the inner products, best first, and the rows they belong to."""
    bank = torch.from_numpy(vectors)  # (N, D)
    k = min(k, len(vectors))
    scores, rows = [], []
    for start in range(0, len(queries), _EXACT_CHUNK):
        q = torch.from_numpy(np.ascontiguousarray(queries[start : start + _EXACT_CHUNK]))
        top = torch.topk(q @ bank.t(), k, dim=1)  # (b, N) -> (b, k)
        scores.append(top.values.numpy())
        rows.append(top.indices.numpy())
    return np.concatenate(scores), np.concatenate(rows)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """The share of the true top-k rows (S, k) that the approximate search found (S, k)."""
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size if truth.size else 1.0


def choose_nprobe(
    index: Any, vectors: np.ndarray, queries: np.ndarray, target: float, nprobe: int = 0
) -> tuple[int, float]:
    """Set the index's nprobe to `nprobe`, or with 0 to the smallest power of two (or all
    lists) whose recall@10 against the exact search reaches `target` on `queries` (S, D).

    Returns:
        nprobe and the recall@10 it gives on `queries`.
    """
    k = min(RECALL_K, len(vectors))
    _, truth = exact_search(vectors, queries, k)  # (S, k)
    tried = min(nprobe, index.nlist) if nprobe > 0 else 1
    while True:
        index.nprobe = tried
        recall = recall_at_k(index.search(queries, k)[1], truth)
        if nprobe > 0 or recall >= target or tried == index.nlist:
            return tried, recall
        tried = min(2 * tried, index.nlist)


# The bank -----------------------------------------------------------------------------------


class ResponseBank:
    """Encoded responses, searchable for the best replies to a context.

    Args:
        responses: the texts, row i of the bank.
        vectors: float32 (N, D), row i is M·r_i.
        bias: the model's b, added to each inner product to give the logit.
        meta: what meta.json holds (the run, the source, the FAISS settings).
        faiss_index: an approximate index over `vectors`, or None to search exactly.
    """

    def __init__(
        self,
        responses: list[str],
        vectors: np.ndarray,
        bias: float,
        meta: dict[str, Any] | None = None,
        faiss_index: Any = None,
    ) -> None:
        if len(responses) != len(vectors):
            raise ValueError(f"{len(responses)} responses for {len(vectors)} vectors")
        self.responses, self.vectors, self.bias = responses, vectors, bias
        self.meta = meta or {}
        self.faiss_index = faiss_index

    def __len__(self) -> int:
        return len(self.responses)

    @property
    def kind(self) -> str:
        """The search this bank runs: "faiss" (approximate) or "exact"."""
        return "exact" if self.faiss_index is None else "faiss"

    @classmethod
    def build(
        cls,
        ranker: Ranker,
        responses: list[str],
        kind: str = "auto",
        nlist: int = 0,
        nprobe: int = 0,
        target_recall: float = 0.95,
        batch_size: int = 1024,
        progress: bool = True,
    ) -> ResponseBank:
        """Encode `responses` with `ranker`, and index them for search.

        Args:
            kind: "exact", "faiss", or "auto" (FAISS above EXACT_LIMIT responses when
                faiss-cpu is installed).
            nlist: inverted lists of the FAISS index (0: about sqrt(N)).
            nprobe: lists searched per query (0: the fewest reaching `target_recall`).
            target_recall: recall@10 against the exact search that nprobe is tuned for.
        """
        if kind not in KINDS:
            raise DualencError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        vectors = encode_bank(ranker, responses, batch_size, progress)
        meta = _run_meta(ranker) | {"size": len(responses), "dim": ranker.encoding_dim}
        bank = cls(responses, vectors, float(ranker.model.b.detach()), meta)
        if kind == "auto" and len(responses) > EXACT_LIMIT:
            kind = "faiss" if _has_faiss() else "exact"
            if kind == "exact":
                log.warning("faiss-cpu is not installed: %d responses searched exactly", len(bank))
        if kind == "faiss":
            bank.add_faiss(ranker, nlist, nprobe, target_recall)
        return bank

    def add_faiss(self, ranker: Ranker, nlist: int, nprobe: int, target_recall: float) -> None:
        """Build the FAISS index, and measure its recall@10 on sampled responses as queries
        (the context and response towers share one encoder)."""
        index = build_faiss_index(self.vectors, nlist)
        rng = np.random.default_rng(0)
        sample = rng.choice(len(self), min(RECALL_QUERIES, len(self)), replace=False)
        queries = ranker.encode_responses([self.responses[i] for i in sample]).cpu().numpy()
        index.nprobe, recall = choose_nprobe(index, self.vectors, queries, target_recall, nprobe)
        self.faiss_index = index
        self.meta["faiss"] = {
            "type": "IVFFlat",
            "metric": "inner_product",
            "nlist": int(index.nlist),
            "nprobe": int(index.nprobe),
            f"recall@{RECALL_K}": recall,
            "recall_queries": len(queries),
        }
        log.debug("FAISS IVF: %d lists, nprobe %d, recall@%d %.3f against the exact search",
                 index.nlist, index.nprobe, RECALL_K, recall)

    def search(
        self, context_encs: torch.Tensor | np.ndarray, k: int, exact: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top-k of each context encoding c (B, D): logits (B, k) best first, and rows
        (B, k); an approximate search may find fewer than k, marked by row -1."""
        queries = np.ascontiguousarray(np.asarray(context_encs, dtype=np.float32))  # (B, D)
        if queries.ndim != 2 or queries.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"expected context encodings (B, {self.vectors.shape[1]})")
        k = min(k, len(self))
        if exact or self.faiss_index is None:
            scores, rows = exact_search(self.vectors, queries, k)
        else:
            scores, rows = self.faiss_index.search(queries, k)
        return scores + np.float32(self.bias), rows

    def respond(
        self, ranker: Ranker, context: Context, k: int = 1, exact: bool = False
    ) -> list[BankHit]:
        """The k best responses of the bank to one context, best first."""
        logits, rows = self.search(ranker.encode_contexts([context]).cpu(), k, exact)
        probs = sigmoid(logits[0])
        return [
            BankHit(self.responses[row], int(row), float(logit), float(p))
            for row, logit, p in zip(rows[0], logits[0], probs, strict=True)
            if row >= 0
        ]

    def check_run(self, ranker: Ranker) -> None:
        """Raise DualencError unless `ranker` is the model this bank was encoded with."""
        built = self.meta.get("run", {})
        if built.get("fingerprint") != ranker.fingerprint():
            where = built.get("path") or "another run"
            raise DualencError(
                f"the index was built with {where} (checkpoint {built.get('checkpoint')}), "
                "not with this run's model: its vectors would not match; rebuild it with "
                "`dualenc index --run RUN`"
            )

    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """Write the index folder atomically."""
        meta = self.meta | {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "bias": self.bias,
            "size": len(self),
            "dim": int(self.vectors.shape[1]),
            "dualenc_version": __version__,
        }
        with atomic_dir(path, overwrite=overwrite) as tmp:
            np.save(tmp / VECTORS_FILE, self.vectors)
            with open(tmp / RESPONSES_FILE, "w", encoding="utf-8", newline="\n") as file:
                file.writelines(json.dumps(t, ensure_ascii=False) + "\n" for t in self.responses)
            if self.faiss_index is not None:
                _faiss().write_index(self.faiss_index, str(tmp / FAISS_FILE))
            write_json(tmp / META_FILE, meta)

    @classmethod
    def load(cls, path: str | Path, ranker: Ranker | None = None) -> ResponseBank:
        """Read an index folder; with `ranker`, refuse one built with another model."""
        path = Path(path)
        meta = _read_meta(path)
        vectors = np.load(path / VECTORS_FILE, allow_pickle=False)
        with open(path / RESPONSES_FILE, encoding="utf-8") as lines:
            responses = [json.loads(line) for line in lines]
        faiss_index = None
        if meta["kind"] == "faiss":
            faiss_index = _faiss().read_index(str(path / FAISS_FILE))
            faiss_index.nprobe = int(meta["faiss"]["nprobe"])
        bank = cls(responses, vectors, float(meta["bias"]), meta, faiss_index)
        if len(bank) != meta["size"] or vectors.shape[1] != meta["dim"]:
            raise DataError(path, f"holds {len(bank)} responses; {META_FILE} says {meta['size']}")
        if ranker is not None:
            bank.check_run(ranker)
        return bank


def _has_faiss() -> bool:
    return importlib.util.find_spec("faiss") is not None


def _run_meta(ranker: Ranker) -> dict[str, Any]:
    run = {"fingerprint": ranker.fingerprint(), "checkpoint": ranker.checkpoint}
    run["path"] = str(ranker.run_dir) if ranker.run_dir is not None else None
    return {"run": run}


def _read_meta(path: Path) -> dict[str, Any]:
    file = path / META_FILE
    if not file.is_file():
        raise DataError(path, f"not an index folder: {META_FILE} is missing "
                              "(make one with `dualenc index`)")
    meta = read_json(file)
    if meta.get("format_version") != FORMAT_VERSION:
        raise DataError(file, f"format version {meta.get('format_version')!r}; this dualenc "
                              f"reads {FORMAT_VERSION}")
    return meta
