"""Text to ids: truncation, ragged memory-mapped id arrays and the text encoder.

A ragged array of N rows is three `.npy` files in one folder: `<name>.ids.npy` (int32, all
rows end to end), `<name>.offsets.npy` (int64, [N+1], row i is ids[offsets[i]:offsets[i+1]])
and `<name>.lengths.npy` (int32, [N]).
"""

from __future__ import annotations

import io
import os
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from dualenc.errors import DataError
from dualenc.fileio import read_json
from dualenc.text import Memo, Tokenizer, Vocabulary, join_turns

# The files of a prepared folder that turn new text into ids exactly as training saw it.
VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1

DEFAULT_MAX_CONTEXT_LEN = 160  # tokens kept of a context: the most recent ones
DEFAULT_MAX_RESPONSE_LEN = 160  # tokens kept of a response: the first ones

Ids = TypeVar("Ids", list[int], np.ndarray)


def truncate_context(ids: Ids, n: int) -> Ids:
    """The most recent `n` ids of a context: the oldest are dropped."""
    return ids[len(ids) - n :] if len(ids) > n else ids


def truncate_response(ids: Ids, n: int) -> Ids:
    """The first `n` ids of a response."""
    return ids[:n]


class Ragged:
    """Rows of int32 ids of differing lengths, usually memory-mapped from disk.

    Args:
        ids: every row's ids end to end, int32.
        offsets: int64 [N+1]; row i is ids[offsets[i]:offsets[i+1]].
        lengths: int32 [N].
    """

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, lengths: np.ndarray) -> None:
        if len(offsets) != len(lengths) + 1:
            raise ValueError(f"{len(offsets)} offsets for {len(lengths)} rows")
        self.ids = ids
        self.offsets = offsets
        self.lengths = lengths

    @classmethod
    def load(cls, folder: str | Path, name: str) -> Ragged:
        """Memory-map the arrays `<name>.{ids,offsets,lengths}.npy` in `folder`."""
        arrays = []
        for part in ("ids", "offsets", "lengths"):
            path = Path(folder) / f"{name}.{part}.npy"
            try:
                arrays.append(np.load(path, mmap_mode="r"))
            except (OSError, ValueError) as err:
                raise DataError(path, f"cannot read the id array: {err}") from err
        try:
            ragged = cls(*arrays)
        except ValueError as err:
            raise DataError(Path(folder) / name, str(err)) from err
        if int(ragged.offsets[-1]) != len(ragged.ids):
            raise DataError(Path(folder) / name, "offsets do not match the ids (truncated file?)")
        return ragged

    def __len__(self) -> int:
        return len(self.lengths)

    def row(self, i: int) -> np.ndarray:
        """The ids of row `i`."""
        return np.asarray(self.ids[self.offsets[i] : self.offsets[i + 1]])

    def batch(self, rows: np.ndarray, keep_last: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Rows stacked and right-padded with 0.

        Args:
            rows: [B] row numbers.
            keep_last: if positive, only the last `keep_last` ids of each row.

        Returns:
            ids int64 [B, T], T the longest of these rows (at least 1), and lengths int64 [B].
        """
        rows = np.asarray(rows, dtype=np.int64)
        full = np.asarray(self.lengths[rows], dtype=np.int64)  # (B,)
        lengths = np.minimum(full, keep_last) if keep_last > 0 else full  # (B,)
        width = max(1, int(lengths.max(initial=0)))
        positions = np.arange(width)  # (T,)
        filled = positions < lengths[:, None]  # (B, T)
        sources = (self.offsets[rows] + full - lengths)[:, None] + positions  # (B, T)
        ids = np.zeros((len(rows), width), dtype=np.int64)  # (B, T)
        ids[filled] = self.ids[sources[filled]]
        return ids, lengths


def _npy_header(dtype: np.dtype, count: int) -> bytes:
    out = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
    np.lib.format.write_array_header_1_0(out, {**header, "shape": (count,)})
    return out.getvalue()


class RaggedWriter:
    """Appends rows to a ragged array on disk, holding at most a chunk of ids in memory.

    The ids go straight into `<name>.ids.npy` behind a header that `close` fills in; use it
    as a context manager, or call `close`. A writer that fails leaves its files behind
    incomplete, so write inside a temporary folder (see `dualenc.fileio.atomic_dir`).

    Args:
        folder: where the three `.npy` files go (created if missing).
        name: the array's name.
        chunk_size: ids buffered before a write to disk.
    """

    def __init__(self, folder: str | Path, name: str, chunk_size: int = 1 << 20) -> None:
        self.folder = Path(folder)
        self.name = name
        self.folder.mkdir(parents=True, exist_ok=True)
        self._file = open(self.folder / f"{name}.ids.npy", "wb")
        self._header_size = len(_npy_header(np.dtype(np.int32), 0))
        self._file.write(_npy_header(np.dtype(np.int32), 0))
        self._lengths = array("i")
        self._pending: list[np.ndarray] = []
        self._pending_size = 0
        self._chunk_size = chunk_size
        self._total = 0

    def append(self, row: Sequence[int] | np.ndarray) -> None:
        """Add one row."""
        row = np.asarray(row, dtype=np.int32)
        self._lengths.append(len(row))
        self._buffer(row)

    def extend(self, ids: np.ndarray, lengths: np.ndarray) -> None:
        """Add many rows at once: `ids` end to end, with `lengths[i]` ids in row i."""
        lengths = np.asarray(lengths, dtype=np.int32)
        if int(lengths.sum()) != len(ids):
            raise ValueError(f"{len(ids)} ids for rows of {int(lengths.sum())} in all")
        self._lengths.extend(lengths)
        self._buffer(np.asarray(ids, dtype=np.int32))

    def __len__(self) -> int:
        return len(self._lengths)

    def _buffer(self, ids: np.ndarray) -> None:
        self._pending.append(ids)
        self._pending_size += len(ids)
        if self._pending_size >= self._chunk_size:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            chunk = np.concatenate(self._pending)
            self._file.write(chunk.tobytes())
            self._total += len(chunk)
        self._pending, self._pending_size = [], 0

    def close(self) -> Ragged:
        """Finish the files and return the array, memory-mapped."""
        if not self._file.closed:
            self._flush()
            header = _npy_header(np.dtype(np.int32), self._total)
            if len(header) != self._header_size:
                raise RuntimeError("the .npy header changed size")  # 1-D headers never do
            self._file.seek(0)
            self._file.write(header)
            self._file.close()
            lengths = np.frombuffer(self._lengths, dtype=np.int32)
            offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
            np.cumsum(lengths, out=offsets[1:])
            np.save(self.folder / f"{self.name}.lengths.npy", lengths)
            np.save(self.folder / f"{self.name}.offsets.npy", offsets)
        return Ragged.load(self.folder, self.name)

    def __enter__(self) -> RaggedWriter:
        return self

    def __exit__(self, kind: Any, err: Any, trace: Any) -> None:
        if err is None:
            self.close()
        else:
            self._file.close()
            os.unlink(self._file.name)


class ProvisionalIds:
    """Text to ids of tokens in order of first sight, for one pass over a file.

    `prepare` stores these ids, counts them, and maps them to vocabulary ids once the
    vocabulary is known. Words and whole texts are memoized (contexts repeat when many pairs
    come from one dialog); the text memo starts afresh when it holds `cache_chars` of text.
    """

    def __init__(self, tokenizer: Tokenizer, cache_chars: int = 32_000_000) -> None:
        self.tokenizer = tokenizer
        self.index: dict[str, int] = {}  # token -> provisional id
        self._word_ids = Memo(self._ids_of_word)
        self._text_ids: dict[str, np.ndarray] = {}
        self._cached_chars = 0
        self._cache_chars = cache_chars

    def _ids_of_word(self, word: str) -> tuple[int, ...]:
        index = self.index
        return tuple(index.setdefault(t, len(index)) for t in self.tokenizer.split_word(word))

    def encode(self, text: str) -> np.ndarray:
        """The provisional ids of the tokens of `text`, int32."""
        ids = self._text_ids.get(text)
        if ids is None:
            words = self.tokenizer.words(text)
            ids = np.fromiter(chain.from_iterable(map(self._word_ids.__getitem__, words)), np.int32)
            if self._cached_chars + len(text) > self._cache_chars:
                self._text_ids.clear()
                self._cached_chars = 0
            self._text_ids[text] = ids
            self._cached_chars += len(text)
        return ids


def _open_ids(folder: str | Path, name: str) -> tuple[BinaryIO, int]:
    # The ids file opened at its first id, and how many ids it holds.
    file = open(Path(folder) / f"{name}.ids.npy", "rb")
    np.lib.format.read_magic(file)
    (count,), _, _ = np.lib.format.read_array_header_1_0(file)
    return file, count


def iter_id_chunks(folder: str | Path, name: str, chunk_size: int) -> Iterator[np.ndarray]:
    """The ids of a ragged array on disk, all rows end to end, `chunk_size` at a time.

    Plain reads rather than a memory map, so pages once read do not stay in the process.
    """
    file, count = _open_ids(folder, name)
    with file:
        for start in range(0, count, chunk_size):
            yield np.fromfile(file, dtype=np.int32, count=min(chunk_size, count - start))


def copy_truncated(
    folder: str | Path,
    name: str,
    writer: RaggedWriter,
    limit: int,
    keep: str,
    lookup: np.ndarray | None = None,
    rows_per_chunk: int = 16_384,
) -> None:
    """Copy a ragged array into `writer`, each row cut to `limit` ids, vectorised by chunk.

    Args:
        folder, name: the ragged array to copy.
        writer: where the rows go.
        limit: the most ids a row keeps.
        keep: "last" keeps the most recent ids (contexts), "first" the first (responses).
        lookup: if given, every id i becomes lookup[i].
    """
    if keep not in ("first", "last"):
        raise ValueError(f"keep must be 'first' or 'last', not {keep!r}")
    offsets = np.load(Path(folder) / f"{name}.offsets.npy")
    lengths = np.load(Path(folder) / f"{name}.lengths.npy").astype(np.int64)
    file, _ = _open_ids(folder, name)
    with file:
        for a in range(0, len(lengths), rows_per_chunk):
            b = min(a + rows_per_chunk, len(lengths))
            span = np.fromfile(file, dtype=np.int32, count=int(offsets[b] - offsets[a]))
            kept = np.minimum(lengths[a:b], limit)  # (R,)
            starts = offsets[a:b] - offsets[a]  # (R,) where each row begins in `span`
            if keep == "last":
                starts = starts + lengths[a:b] - kept
            out_starts = np.cumsum(kept) - kept  # (R,)
            gather = np.repeat(starts - out_starts, kept) + np.arange(int(kept.sum()))
            ids = span[gather]
            writer.extend(lookup[ids] if lookup is not None else ids, kept)


@dataclass
class TextEncoder:
    """Text to truncated ids, the same way `dualenc prepare` did for training."""

    tokenizer: Tokenizer
    vocab: Vocabulary
    max_context_len: int = DEFAULT_MAX_CONTEXT_LEN
    max_response_len: int = DEFAULT_MAX_RESPONSE_LEN

    def encode_context(self, context: str | Sequence[str]) -> list[int]:
        """The ids of a context: marker text, or a list of turns joined with the markers."""
        text = context if isinstance(context, str) else join_turns(context)
        ids = self.vocab.encode(self.tokenizer.tokenize(text))
        return truncate_context(ids, self.max_context_len)

    def encode_response(self, text: str) -> list[int]:
        """The ids of a response."""
        ids = self.vocab.encode(self.tokenizer.tokenize(text))
        return truncate_response(ids, self.max_response_len)

    @classmethod
    def from_prepared(cls, folder: str | Path) -> TextEncoder:
        """The encoder saved in a prepared folder (`dualenc prepare`)."""
        folder = Path(folder)
        options = read_manifest(folder)["options"]
        return cls(
            tokenizer=Tokenizer.load(_existing(folder / TOKENIZER_FILE)),
            vocab=Vocabulary.load(_existing(folder / VOCAB_FILE)),
            max_context_len=int(options["max_context_len"]),
            max_response_len=int(options["max_response_len"]),
        )


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a prepared folder, checked for its format version."""
    path = _existing(Path(folder) / MANIFEST_FILE)
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as err:
        raise DataError(path, f"cannot read the manifest: {err}") from err
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise DataError(path, f"format version {version!r}; this dualenc reads {FORMAT_VERSION}")
    return manifest


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise DataError(
            path.parent,
            f"not a complete prepared folder: {path.name} is missing "
            "(make one with `dualenc prepare`)",
        )
    return path
