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
from dataclasses import dataclass, field
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
    ProvisionalIds,
    Ragged,
    RaggedWriter,
    TextEncoder,
    copy_truncated,
    iter_id_chunks,
    read_manifest,
)
from dualenc.fileio import atomic_dir, write_json
from dualenc.text import TOKENIZER_KINDS, Tokenizer, Vocabulary

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
_IDS_PER_CHUNK = 8_000_000  # ids counted at once
# Enough buckets that the unknown tokens of one context and its candidates rarely collide.
DEFAULT_HASH_BUCKETS = 4096


@dataclass
class PrepareOptions:
    """The settings of `dualenc prepare`, with its defaults."""

    min_frequency: int = 5  # fewest training occurrences a token needs to get its own id
    max_size: int | None = None  # most ids, <pad> and <unk> included; None for no limit
    hash_buckets: int = DEFAULT_HASH_BUCKETS  # ids shared out by hash to unknown tokens
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
        if self.hash_buckets < 0:
            problems.append(f"hash_buckets must be at least 0, not {self.hash_buckets}")
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
        provisional = ProvisionalIds(tokenizer)
        reads = [
            _read_split(split, path, provisional, tmp / "_work" / split, options)
            for split, path in sources.items()
        ]
        for read in reads:
            _report_skips(read)
        vocab, counts, lookup = _build_vocabulary(provisional, reads[0], options)
        known = (lookup != vocab.unk_id) & (lookup < vocab.first_bucket)
        coverage = {"train": _coverage(counts, known)}
        for read in reads:
            _remap_split(read, lookup, tmp / read.name, options)
            if read.name != "train":
                coverage[read.name] = _coverage(_count_ids(read, len(lookup)), known)
        shutil.rmtree(tmp / "_work")
        vocab.save(tmp / VOCAB_FILE)
        tokenizer.save(tmp / TOKENIZER_FILE)
        manifest = _manifest(reads, vocab, counts, coverage, options, tokenizer)
        write_json(tmp / MANIFEST_FILE, manifest)
    _log_summary(manifest, out, time.perf_counter() - started)
    return manifest


def _read_split(
    split: str, path: Path, provisional: ProvisionalIds, folder: Path, options: PrepareOptions
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
            read.num_candidates = len(example.candidates)  # one K a file: header or group
            contexts.append(provisional.encode(example.context))
            for candidate in example.candidates:
                cands.append(provisional.encode(candidate))
    return read


def _report_skips(read: _SplitRead) -> None:
    if read.stats.skipped:
        log.warning("%s: skipped %d bad rows", read.source, read.stats.skipped)
        for message in read.stats.errors:
            log.warning("  %s", message)
    if read.name == "train" and read.stats.rows == 0:
        raise DataError(read.source, f"no training pairs ({read.stats.skipped} bad rows skipped)")


def _names(read: _SplitRead) -> tuple[str, str]:
    return ("context", "response") if read.name == "train" else ("context", "candidates")


def _count_ids(read: _SplitRead, size: int) -> np.ndarray:
    counts = np.zeros(size, dtype=np.int64)
    for name in _names(read):
        for chunk in iter_id_chunks(read.folder, name, _IDS_PER_CHUNK):
            counts += np.bincount(chunk, minlength=size)
    return counts


def _build_vocabulary(
    provisional: ProvisionalIds, train: _SplitRead, options: PrepareOptions
) -> tuple[Vocabulary, np.ndarray, np.ndarray]:
    # Returns the vocabulary, training counts by provisional id, and provisional -> final ids.
    tokens = list(provisional.index)  # in provisional-id order
    counts = _count_ids(train, len(tokens))
    vocab = Vocabulary.build(
        {token: int(n) for token, n in zip(tokens, counts, strict=True) if n},
        min_frequency=options.min_frequency,
        max_size=options.max_size,
        hash_buckets=options.hash_buckets,
    )
    lookup = np.array(vocab.encode(tokens), dtype=np.int32)
    return vocab, counts, lookup


def _coverage(counts: np.ndarray, known: np.ndarray) -> float:
    # The share of tokens with an id of their own (known[provisional id]).
    total = int(counts.sum())
    return float(counts[known].sum() / total) if total else 0.0


def _remap_split(read: _SplitRead, lookup: np.ndarray, out: Path, options: PrepareOptions) -> None:
    context_name, response_name = _names(read)
    limits = {context_name: options.max_context_len, response_name: options.max_response_len}
    for name, limit in limits.items():
        read.lengths[name] = np.load(read.folder / f"{name}.lengths.npy")
        keep = "last" if name == "context" else "first"
        with RaggedWriter(out, name) as writer:
            copy_truncated(read.folder, name, writer, limit, keep, lookup)
    if read.labels is not None:
        np.save(out / "label.npy", np.frombuffer(read.labels, dtype=np.int8))


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
            "hash_buckets": options.hash_buckets,
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
    with open(path, "rb") as file:
        sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    size = path.stat().st_size
    return {"file": path.name, "format": ranking_format(path), "bytes": size, "sha256": sha256}


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
        "median": round(float(np.median(values)), 3),
        "p95": round(float(np.percentile(values, 95)), 3),
        "max": int(values.max()),
    }


def _log_summary(manifest: dict[str, Any], out: str | Path, seconds: float) -> None:
    counts = ", ".join(f"{split} {n:,}" for split, n in manifest["counts"].items())
    log.info(
        f"prepared {counts} | vocab {manifest['vocab_size']:,} | train coverage "
        f"{manifest['coverage']['train']:.3f} | skipped {sum(manifest['skipped'].values())} | "
        f"{seconds:.1f}s -> {out}"
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
