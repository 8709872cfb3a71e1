"""Readers of ranking files: training pairs and 1-in-K evaluation examples.

Two formats, chosen by the file's extension:

- `.csv`, the Ubuntu Dialogue Corpus v2 (Lowe et al. 2015): `Context,Utterance,Label` for
  training and `Context,Ground Truth Utterance,Distractor_0..Distractor_{n-1}` for
  evaluation, text already carrying the ` __eou__` and ` __eot__ ` markers.
- `.txt` or `.tsv`, the tab format of Xu et al. 2016: `label TAB turn ... TAB response`, one
  pair a line; an evaluation example is a group of consecutive lines sharing one context,
  exactly one of them labelled 1. Turns become the marker text of the CSV format.

Every reader streams its file and raises `DataError` at the first bad row, naming file,
line and field, or with `skip_bad=True` skips the row and counts it in a `ReadStats`.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from dualenc.errors import DataError
from dualenc.text import join_turns

CSV_SUFFIXES = (".csv",)
TAB_SUFFIXES = (".txt", ".tsv")

_LABELS = {"1": 1, "0": 0, "1.0": 1, "0.0": 0}
_DISTRACTOR = re.compile(r"Distractor_(\d+)")
_SURROGATE = re.compile("[\udc80-\udcff]")  # where surrogateescape put a byte that is not UTF-8
_MAX_ERRORS_KEPT = 5

# NOTE: UDC contexts run to hundreds of kilobytes; the csv module's default limit is 128 KiB.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True, slots=True)
class TrainPair:
    """One training pair: a context, a response and whether the response is the true one."""

    context: str
    response: str
    label: int  # 1 for the true response, 0 for a distractor
    line: int  # 1-based line in the file where the row starts


@dataclass(frozen=True, slots=True)
class EvalExample:
    """One evaluation example: a context and its candidates, the true response first."""

    context: str
    candidates: list[str]  # [K]; index 0 is the truth
    line: int  # 1-based line in the file where the example starts


@dataclass
class ReadStats:
    """What a reader has done so far: rows yielded and bad rows skipped."""

    rows: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)  # the first few skip reasons

    def skip(self, err: DataError) -> None:
        self.skipped += 1
        if len(self.errors) < _MAX_ERRORS_KEPT:
            self.errors.append(str(err))


def ranking_format(path: str | Path) -> str:
    """The format of a ranking file by its extension: "udc" (UDC v2 CSV) or "xu" (tabs)."""
    suffix = Path(path).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "udc"
    if suffix in TAB_SUFFIXES:
        return "xu"
    raise DataError(path, f"unknown ranking-file extension {suffix!r} (use .csv, .txt or .tsv)")


def read_train_pairs(
    path: str | Path, skip_bad: bool = False, stats: ReadStats | None = None
) -> Iterator[TrainPair]:
    """Stream the training pairs of a UDC v2 CSV or a Xu-format file.

    Args:
        path: the ranking file; `.csv` is read as UDC v2, `.txt`/`.tsv` as Xu et al.
        skip_bad: skip bad rows (counted in `stats`) instead of raising `DataError`.
        stats: filled in with the rows read and skipped, if given.
    """
    stats = stats if stats is not None else ReadStats()
    if ranking_format(path) == "udc":
        rows = _udc_train_rows(path)
    else:
        rows = _xu_rows(path)
    for pair in _guarded(rows, skip_bad, stats):
        stats.rows += 1
        yield pair


def read_eval_examples(
    path: str | Path,
    skip_bad: bool = False,
    stats: ReadStats | None = None,
    group_size: int = 10,
) -> Iterator[EvalExample]:
    """Stream the evaluation examples of a UDC v2 CSV or a Xu-format file.

    Args:
        path: the ranking file; `.csv` is read as UDC v2, `.txt`/`.tsv` as Xu et al.
        skip_bad: skip bad examples (counted in `stats`) instead of raising `DataError`.
        stats: filled in with the examples read and skipped, if given.
        group_size: lines per example in the Xu format (1 true response + distractors).
    """
    stats = stats if stats is not None else ReadStats()
    if ranking_format(path) == "udc":
        examples = _guarded(_udc_eval_rows(path), skip_bad, stats)
    else:
        examples = _xu_groups(
            path, _guarded(_xu_rows(path), skip_bad, stats, keep=True), group_size, skip_bad, stats
        )
    for example in examples:
        stats.rows += 1
        yield example


def _guarded(rows: Iterator, skip_bad: bool, stats: ReadStats, keep: bool = False) -> Iterator:
    # The row parsers yield a DataError in place of a bad row, so that reading can go on.
    for row in rows:
        if isinstance(row, DataError):
            if not skip_bad:
                raise row
            if keep:
                yield row  # the Xu grouping needs to know a line of its group was bad
                continue
            stats.skip(row)
        else:
            yield row


def _open(path: str | Path, newline: str | None) -> IO[str]:
    try:
        # surrogateescape keeps reading past bytes that are not UTF-8; each row checks for them.
        return open(path, encoding="utf-8-sig", errors="surrogateescape", newline=newline)
    except OSError as err:
        raise DataError(path, f"cannot read the file: {err.strerror or err}") from err


def _bad_text(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


# UDC v2 CSV ---------------------------------------------------------------------------------


def _csv_records(
    path: str | Path, columns: Callable[[list[str]], list[str]]
) -> Iterator[tuple[int, list[str] | DataError]]:
    # Yields (first line of the record, its fields in `columns` order) after the header,
    # or a DataError for a ragged record. `columns(header)` names the fields wanted.
    with _open(path, newline="") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None:
            raise DataError(path, "the file is empty; expected a header row", line=1)
        names = [name.strip() for name in header]
        wanted = columns(names)
        for name in wanted:
            if name not in names:
                found = ", ".join(repr(n) for n in names)
                raise DataError(
                    path, f"missing column {name!r} (found {found})", line=1, field=name
                )
        positions = [names.index(name) for name in wanted]
        width, line = len(names), reader.line_num + 1
        for row in reader:
            start, line = line, reader.line_num + 1
            if not row:
                continue  # a blank line
            if len(row) != width:
                missing = names[len(row)] if len(row) < width else None
                message = f"expected {width} fields, found {len(row)}"
                yield start, DataError(path, message, line=start, field=missing)
                continue
            yield start, [row[i] for i in positions]


def _check_fields(path: str | Path, line: int, names: list[str], values: list[str]) -> None:
    for name, value in zip(names, values, strict=True):
        if _bad_text(value):
            raise DataError(path, "bytes that are not UTF-8", line=line, field=name)
        if not value.strip():
            what = "context" if name == "Context" else "response"
            raise DataError(path, f"empty {what}", line=line, field=name)


def _udc_train_rows(path: str | Path) -> Iterator[TrainPair | DataError]:
    names = ["Context", "Utterance", "Label"]
    for line, values in _csv_records(path, lambda header: names):
        if isinstance(values, DataError):
            yield values
            continue
        context, response, label = values
        try:
            _check_fields(path, line, names[:2], [context, response])
            yield TrainPair(context, response, _parse_label(path, line, "Label", label), line)
        except DataError as err:
            yield err


def _udc_eval_rows(path: str | Path) -> Iterator[EvalExample | DataError]:
    names: list[str] = []

    def columns(header: list[str]) -> list[str]:
        names.extend(["Context", "Ground Truth Utterance", *_distractor_columns(path, header)])
        return names

    for line, values in _csv_records(path, columns):
        if isinstance(values, DataError):
            yield values
            continue
        try:
            _check_fields(path, line, names, values)
            yield EvalExample(values[0], values[1:], line)
        except DataError as err:
            yield err


def _distractor_columns(path: str | Path, header: list[str]) -> list[str]:
    # Distractor_0 .. Distractor_{n-1}, n >= 1, with no number left out.
    numbers = {int(m.group(1)) for name in header if (m := _DISTRACTOR.fullmatch(name))}
    count = max(numbers, default=-1) + 1
    for i in range(max(count, 1)):
        if i not in numbers:
            name = f"Distractor_{i}"
            raise DataError(path, f"missing column {name!r}", line=1, field=name)
    return [f"Distractor_{i}" for i in range(count)]


def _parse_label(path: str | Path, line: int, name: str, text: str) -> int:
    label = _LABELS.get(text.strip())
    if label is None:
        raise DataError(
            path,
            f"label must be 0 or 1 (written 1, 0, 1.0 or 0.0), found {text!r}",
            line=line,
            field=name,
        )
    return label


# Xu et al. tab format -----------------------------------------------------------------------


def _xu_rows(path: str | Path) -> Iterator[TrainPair | DataError]:
    with _open(path, newline="") as file:
        for line, text in enumerate(file, start=1):
            text = text.rstrip("\r\n")
            if not text.strip():
                continue
            try:
                yield _xu_row(path, line, text)
            except DataError as err:
                yield err


def _xu_row(path: str | Path, line: int, text: str) -> TrainPair:
    fields = text.split("\t")
    if len(fields) < 3:
        raise DataError(
            path,
            f"expected label, turns and response separated by tabs, found {len(fields)} fields",
            line=line,
        )
    if _bad_text(text):
        names = ["label", *(f"turn {i}" for i in range(1, len(fields) - 1)), "response"]
        name = next(n for n, value in zip(names, fields, strict=True) if _bad_text(value))
        raise DataError(path, "bytes that are not UTF-8", line=line, field=name)
    label = _parse_label(path, line, "label", fields[0])
    context = join_turns(fields[1:-1])
    if not context:
        raise DataError(path, "empty context", line=line, field="context")
    if not fields[-1].strip():
        raise DataError(path, "empty response", line=line, field="response")
    return TrainPair(context, fields[-1].strip(), label, line)


def _xu_groups(
    path: str | Path,
    rows: Iterator[TrainPair | DataError],
    group_size: int,
    skip_bad: bool,
    stats: ReadStats,
) -> Iterator[EvalExample]:
    group: list[TrainPair | DataError] = []
    for row in rows:
        group.append(row)
        if len(group) < group_size:
            continue
        try:
            yield _xu_example(path, group)
        except DataError as err:
            if not skip_bad:
                raise
            stats.skip(err)
        group = []
    if group:
        err = DataError(
            path,
            f"the file ends inside a group of {group_size} lines ({len(group)} read)",
            line=group[0].line,
        )
        if not skip_bad:
            raise err
        stats.skip(err)


def _xu_example(path: str | Path, group: list[TrainPair | DataError]) -> EvalExample:
    for row in group:
        if isinstance(row, DataError):
            raise row
    first = group[0]
    for row in group[1:]:
        if row.context != first.context:
            raise DataError(
                path,
                f"the context changes inside the group of {len(group)} lines that "
                f"starts at line {first.line}",
                line=row.line,
                field="context",
            )
    truths = [row for row in group if row.label == 1]
    if len(truths) != 1:
        raise DataError(
            path,
            f"a group needs exactly one line labelled 1, found {len(truths)}",
            line=first.line,
            field="label",
        )
    others = [row.response for row in group if row.label == 0]
    return EvalExample(first.context, [truths[0].response, *others], first.line)
