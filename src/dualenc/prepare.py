"""`dualenc prepare`: ranking files -> vocabulary, tokenizer settings and memory-mapped ids.

The output folder, which `load_prepared` reads back:

    vocab.txt  tokenizer.json  manifest.json
    train/{context,response}.{ids,offsets,lengths}.npy  train/label.npy (int8, [N])
    valid/ and test/: context.* ([N] rows) and candidates.* ([N*K] rows; candidate j of
                      example i is row i*K+j, j = 0 the true response)

Train is tokenized once: tokens get provisional ids as they are first seen, those ids go to
disk, and once the vocabulary is built from the training counts one numpy lookup table maps
every stored id to its final id (or `<unk>`) while the rows are truncated.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dualenc import __version__
from dualenc.corpus.ranking import (
    CSV_SUFFIXES,
    TAB_SUFFIXES,
    ReadStats,
    ranking_format,
    read_eval_examples,
    read_train_pairs,
)
from dualenc.errors import DataError, DualencError
from dualenc.features import (
    DEFAULT_MAX_CONTEXT_LEN,
    DEFAULT_MAX_RESPONSE_LEN,
    FORMAT_VERSION,
    MANIFEST_FILE,
    TOKENIZER_FILE,
    VOCAB_FILE,
    Ragged,
    RaggedWriter,
    TextEncoder,
    read_manifest,
)
from dualenc.fileio import atomic_dir, write_json
from dualenc.text import TOKENIZER_KINDS, Memo, Tokenizer, Vocabulary

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
_CACHE_CHARS = 32_000_000  # characters of text whose ids are remembered (contexts repeat)
_ROWS_PER_CHUNK = 16_384  # rows remapped at once
_IDS_PER_CHUNK = 8_000_000  # ids counted at once


@dataclass
class PrepareOptions:
    """The settings of `dualenc prepare`, with its defaults."""

    min_frequency: int = 5  # fewest training occurrences a token needs to get its own id
    max_size: int | None = None  # most ids, <pad> and <unk> included; None for no limit
    tokenizer: str = "default"  # "default" or "whitespace"
    lowercase: bool = True  # lower-case text before tokenizing
    max_context_len: int = DEFAULT_MAX_CONTEXT_LEN  # most recent context tokens kept
    max_response_len: int = DEFAULT_MAX_RESPONSE_LEN  # first response tokens kept
    skip_bad: bool = False  # skip and count bad rows instead of stopping at the first
    overwrite: bool = False  # replace an existing output folder
    progress: bool = True  # show a progress bar on stderr

    def validate(self) -> None:
        """Raise one error listing every bad setting."""
        problems = []
        if self.min_frequency < 1:
            problems.append(f"min_frequency must be at least 1, not {self.min_frequency}")
        if self.max_size is not None and self.max_size < 2:
            problems.append(f"max_size must be at least 2 (<pad>, <unk>), not {self.max_size}")
        if self.tokenizer not in TOKENIZER_KINDS:
            problems.append(f"tokenizer must be one of {TOKENIZER_KINDS}, not {self.tokenizer!r}")
        for name in ("max_context_len", "max_response_len"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, not {getattr(self, name)}")
        if problems:
            raise DualencError("invalid prepare settings: " + "; ".join(problems))


@dataclass
class TrainSplit:
    """Training pairs as id arrays: row i of each is pair i."""

    context: Ragged
    response: Ragged
    label: np.ndarray  # int8 [N], 1 for the true response

    def __len__(self) -> int:
        return len(self.label)


@dataclass
class EvalSplit:
    """Evaluation examples: context i with candidates i*K .. i*K+K-1, the truth first."""

    context: Ragged
    candidates: Ragged
    num_candidates: int  # K

    def __len__(self) -> int:
        return len(self.context)


@dataclass
class Prepared:
    """A prepared folder, loaded: vocabulary, tokenizer, manifest and memory-mapped splits."""

    folder: Path
    vocab: Vocabulary
    tokenizer: Tokenizer
    manifest: dict[str, Any]
    train: TrainSplit
    valid: EvalSplit | None
    test: EvalSplit | None

    @property
    def max_context_len(self) -> int:
        return int(self.manifest["options"]["max_context_len"])

    @property
    def max_response_len(self) -> int:
        return int(self.manifest["options"]["max_response_len"])

    def encoder(self) -> TextEncoder:
        """The encoder that turns new text into ids exactly as these arrays were made."""
        return TextEncoder(self.tokenizer, self.vocab, self.max_context_len, self.max_response_len)


@dataclass
class _SplitRead:
    # One split after the first pass: provisional ids in `folder`, one Ragged per name.
    name: str
    source: Path
    folder: Path
    stats: ReadStats
    labels: array | None = None  # train only
    num_candidates: int | None = None  # eval only
    lengths: dict[str, np.ndarray] = field(default_factory=dict)


class _ProvisionalIds:
    # Token -> provisional id in order of first sight. Words and whole texts are memoized
    # (contexts repeat when many pairs come from one dialog); the text memo restarts when full.

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.index: dict[str, int] = {}
        self._word_ids = Memo(self._ids_of_word)
        self._text_ids: dict[str, np.ndarray] = {}
        self._cached_chars = 0

    def _ids_of_word(self, word: str) -> tuple[int, ...]:
        index = self.index
        return tuple(index.setdefault(t, len(index)) for t in self.tokenizer.split_word(word))

    def encode(self, text: str) -> np.ndarray:
        ids = self._text_ids.get(text)
        if ids is None:
            words = self.tokenizer.words(text)
            ids = np.fromiter(chain.from_iterable(map(self._word_ids.__getitem__, words)), np.int32)
            if self._cached_chars + len(text) > _CACHE_CHARS:
                self._text_ids.clear()
                self._cached_chars = 0
            self._text_ids[text] = ids
            self._cached_chars += len(text)
        return ids


def find_sources(sets: str | Path) -> dict[str, Path]:
    """The ranking files of a sets folder: train (required), valid and test (optional)."""
    sets = Path(sets)
    if not sets.is_dir():
        raise DataError(sets, "no such folder of ranking sets")
    sources = {}
    for split in SPLITS:
        found = [sets / f"{split}{ext}" for ext in CSV_SUFFIXES + TAB_SUFFIXES]
        found = [path for path in found if path.is_file()]
        if len(found) > 1:
            names = " and ".join(path.name for path in found)
            raise DataError(sets, f"both {names}: keep one {split} file")
        if found:
            sources[split] = found[0]
    if "train" not in sources:
        raise DataError(sets, "no train.csv, train.txt or train.tsv in this folder")
    return sources


def prepare(
    sets: str | Path, out: str | Path, options: PrepareOptions | None = None
) -> dict[str, Any]:
    """Turn a folder of ranking files into a vocabulary and memory-mapped id arrays.

    The vocabulary comes from the training file only; the whole output is written to a
    temporary folder renamed onto `out` at the end.

    Returns:
        the manifest, as also written to `out/manifest.json`.
    """
    options = options or PrepareOptions()
    options.validate()
    sources = find_sources(sets)
    started = time.perf_counter()
    tokenizer = Tokenizer(options.tokenizer, options.lowercase)
    with atomic_dir(out, overwrite=options.overwrite) as tmp:
        provisional = _ProvisionalIds(tokenizer)
        reads = [
            _read_split(split, path, provisional, tmp / "_work" / split, options)
            for split, path in sources.items()
        ]
        vocab, counts, lookup = _build_vocabulary(provisional, reads[0], options)
        coverage = {"train": _coverage(counts, lookup)}
        for read in reads:
            _remap_split(read, lookup, tmp / read.name, options)
            if read.name != "train":
                coverage[read.name] = _coverage(_count_ids(read, len(lookup)), lookup)
        shutil.rmtree(tmp / "_work")
        vocab.save(tmp / VOCAB_FILE)
        tokenizer.save(tmp / TOKENIZER_FILE)
        manifest = _manifest(reads, vocab, counts, coverage, options, tokenizer)
        write_json(tmp / MANIFEST_FILE, manifest)
    _log_summary(manifest, out, time.perf_counter() - started)
    return manifest


def _read_split(
    split: str, path: Path, provisional: _ProvisionalIds, folder: Path, options: PrepareOptions
) -> _SplitRead:
    read = _SplitRead(split, path, folder, ReadStats())
    bar = dict(desc=f"reading {path.name}", unit=" rows", disable=not options.progress)
    if split == "train":
        read.labels = array("b")
        with (
            RaggedWriter(folder, "context") as contexts,
            RaggedWriter(folder, "response") as responses,
        ):
            for pair in tqdm(read_train_pairs(path, options.skip_bad, read.stats), **bar):
                contexts.append(provisional.encode(pair.context))
                responses.append(provisional.encode(pair.response))
                read.labels.append(pair.label)
        return read
    with RaggedWriter(folder, "context") as contexts, RaggedWriter(folder, "candidates") as cands:
        for example in tqdm(read_eval_examples(path, options.skip_bad, read.stats), **bar):
            if read.num_candidates is None:
                read.num_candidates = len(example.candidates)
            elif len(example.candidates) != read.num_candidates:
                raise DataError(
                    path,
                    f"{len(example.candidates)} candidates where the first example had "
                    f"{read.num_candidates}",
                    line=example.line,
                )
            contexts.append(provisional.encode(example.context))
            for candidate in example.candidates:
                cands.append(provisional.encode(candidate))
    return read


def _names(read: _SplitRead) -> tuple[str, str]:
    return ("context", "response") if read.name == "train" else ("context", "candidates")


def _id_chunks(folder: Path, name: str) -> Iterable[np.ndarray]:
    # Plain reads rather than a memory map, so the pages read do not count as ours.
    with open(folder / f"{name}.ids.npy", "rb") as file:
        np.lib.format.read_magic(file)
        (count,), _, dtype = np.lib.format.read_array_header_1_0(file)
        for start in range(0, count, _IDS_PER_CHUNK):
            yield np.fromfile(file, dtype=dtype, count=min(_IDS_PER_CHUNK, count - start))


def _count_ids(read: _SplitRead, size: int) -> np.ndarray:
    counts = np.zeros(size, dtype=np.int64)
    for name in _names(read):
        for chunk in _id_chunks(read.folder, name):
            counts += np.bincount(chunk, minlength=size)
    return counts


def _build_vocabulary(
    provisional: _ProvisionalIds, train: _SplitRead, options: PrepareOptions
) -> tuple[Vocabulary, np.ndarray, np.ndarray]:
    # Returns the vocabulary, training counts by provisional id, and provisional -> final ids.
    tokens = list(provisional.index)  # in provisional-id order
    counts = _count_ids(train, len(tokens))
    vocab = Vocabulary.build(
        {token: int(n) for token, n in zip(tokens, counts, strict=True) if n},
        min_frequency=options.min_frequency,
        max_size=options.max_size,
    )
    lookup = np.array(vocab.encode(tokens), dtype=np.int32)
    return vocab, counts, lookup


def _coverage(counts: np.ndarray, lookup: np.ndarray) -> float:
    total = int(counts.sum())
    return float(counts[lookup != 1].sum() / total) if total else 0.0


def _remap_split(read: _SplitRead, lookup: np.ndarray, out: Path, options: PrepareOptions) -> None:
    context_name, response_name = _names(read)
    limits = {context_name: options.max_context_len, response_name: options.max_response_len}
    for name, limit in limits.items():
        source = Ragged.load(read.folder, name)
        read.lengths[name] = np.array(source.lengths)
        with RaggedWriter(out, name) as writer:
            _remap(read.folder, name, source, lookup, limit, name == "context", writer)
    if read.labels is not None:
        np.save(out / "label.npy", np.frombuffer(read.labels, dtype=np.int8))


def _remap(
    folder: Path,
    name: str,
    source: Ragged,
    lookup: np.ndarray,
    limit: int,
    keep_last: bool,
    writer: RaggedWriter,
) -> None:
    # Copies `source` row by row, final ids for provisional, each row truncated to `limit`.
    offsets = np.asarray(source.offsets)
    lengths = np.asarray(source.lengths, dtype=np.int64)
    with open(folder / f"{name}.ids.npy", "rb") as file:
        np.lib.format.read_magic(file)
        np.lib.format.read_array_header_1_0(file)
        for a in range(0, len(source), _ROWS_PER_CHUNK):
            b = min(a + _ROWS_PER_CHUNK, len(source))
            span = np.fromfile(file, dtype=np.int32, count=int(offsets[b] - offsets[a]))
            kept = np.minimum(lengths[a:b], limit)  # (R,)
            starts = offsets[a:b] - offsets[a] + (lengths[a:b] - kept if keep_last else 0)
            out_starts = np.cumsum(kept) - kept  # (R,)
            gather = np.repeat(starts - out_starts, kept) + np.arange(int(kept.sum()))
            writer.extend(lookup[span[gather]], kept)


def _manifest(
    reads: list[_SplitRead],
    vocab: Vocabulary,
    counts: np.ndarray,
    coverage: dict[str, float],
    options: PrepareOptions,
    tokenizer: Tokenizer,
) -> dict[str, Any]:
    train = reads[0]
    positives = sum(train.labels)
    limits = {
        "context": options.max_context_len,
        "response": options.max_response_len,
        "candidates": options.max_response_len,
    }
    return {
        "format_version": FORMAT_VERSION,
        "dualenc_version": __version__,
        "options": {
            "min_frequency": options.min_frequency,
            "max_size": options.max_size,
            "max_context_len": options.max_context_len,
            "max_response_len": options.max_response_len,
            "tokenizer": tokenizer.to_dict(),
            "skip_bad_rows": options.skip_bad,
        },
        "sources": {read.name: _describe_source(read.source) for read in reads},
        "counts": {read.name: read.stats.rows for read in reads},
        "skipped": {read.name: read.stats.skipped for read in reads},
        "num_candidates": {r.name: r.num_candidates for r in reads if r.name != "train"},
        "train_labels": {
            "positive": positives,
            "negative": len(train.labels) - positives,
            "positive_fraction": positives / len(train.labels) if train.labels else 0.0,
        },
        "vocab_size": len(vocab),
        "train_tokens": int(counts.sum()),
        "train_types": int(np.count_nonzero(counts)),
        "coverage": coverage,
        "lengths": {
            read.name: {
                name: _length_stats(lengths, limits[name]) for name, lengths in read.lengths.items()
            }
            for read in reads
        },
    }


def _describe_source(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    fmt = ranking_format(path)
    return {
        "file": path.name,
        "format": fmt,
        "bytes": path.stat().st_size,
        "sha256": digest.hexdigest(),
    }


def _length_stats(lengths: np.ndarray, limit: int) -> dict[str, Any]:
    return {
        "before": _summary(lengths),
        "after": _summary(np.minimum(lengths, limit)),
        "truncated": int(np.count_nonzero(lengths > limit)),
    }


def _summary(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"mean": 0.0, "median": 0.0, "p95": 0.0, "max": 0}
    return {
        "mean": round(float(values.mean()), 3),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "max": int(values.max()),
    }


def _log_summary(manifest: dict[str, Any], out: str | Path, seconds: float) -> None:
    counts = ", ".join(f"{split} {n:,}" for split, n in manifest["counts"].items())
    skipped = sum(manifest["skipped"].values())
    log.info(
        "prepared %s | vocab %s | train coverage %.3f | skipped %d | %.1fs -> %s",
        counts,
        f"{manifest['vocab_size']:,}",
        manifest["coverage"]["train"],
        skipped,
        seconds,
        out,
    )


def load_prepared(folder: str | Path) -> Prepared:
    """Open a folder written by `prepare`, its arrays memory-mapped.

    Raises:
        DataError: if the folder is not a complete prepared folder.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    encoder = TextEncoder.from_prepared(folder)
    counts = manifest["counts"]
    train = TrainSplit(
        Ragged.load(folder / "train", "context"),
        Ragged.load(folder / "train", "response"),
        _load_labels(folder / "train" / "label.npy"),
    )
    _check_rows(folder / "train", counts["train"], train.context, train.response, train.label)
    splits: dict[str, EvalSplit | None] = {"valid": None, "test": None}
    for split in splits:
        if split in counts:
            k = int(manifest["num_candidates"][split] or 0)
            splits[split] = EvalSplit(
                Ragged.load(folder / split, "context"), Ragged.load(folder / split, "candidates"), k
            )
            _check_rows(folder / split, counts[split], splits[split].context)
            _check_rows(folder / split, counts[split] * k, splits[split].candidates)
    return Prepared(folder, encoder.vocab, encoder.tokenizer, manifest, train, **splits)


def _load_labels(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise DataError(path, f"cannot read the labels: {err}") from err


def _check_rows(folder: Path, expected: int, *arrays: Any) -> None:
    for rows in arrays:
        if len(rows) != expected:
            raise DataError(folder, f"{len(rows)} rows where the manifest says {expected}")
