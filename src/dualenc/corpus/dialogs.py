"""Dialog readers: the UDC 1.0 raw layout, JSON Lines logs and the embedded chit-chat corpus.

Every reader yields `Dialog`s whose turns are lists of one speaker's consecutive utterances.
`read_dialog_source` picks the reader from what it is given and returns the three splits.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualenc.errors import DataError, DualencError

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
# The list files of the UDC 1.0 raw layout, one a split, as the UDC creator names them.
LIST_FILES = {"train": "trainfiles.csv", "valid": "valfiles.csv", "test": "testfiles.csv"}
TSV_FIELDS = ("timestamp", "sender", "recipient", "text")
EMBEDDED = "embedded"


@dataclass(slots=True)
class Dialog:
    """One conversation: `turns[i]` holds the texts of one speaker's consecutive utterances."""

    id: str
    turns: list[list[str]]


def group_turns(messages: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Group (sender, text) pairs into turns: consecutive messages of one sender form a turn."""
    turns: list[list[str]] = []
    last_sender = None
    for sender, text in messages:
        if sender != last_sender:
            turns.append([])
            last_sender = sender
        turns[-1].append(text)
    return turns


def read_dialog_source(source: str | Path, seed: int = 1234) -> dict[str, list[Dialog]]:
    """Read dialogs and return them by split ("train", "valid", "test"), each in source order.

    Args:
        source: a UDC 1.0 folder (``dialogs/`` beside ``trainfiles.csv``, ``valfiles.csv``,
            ``testfiles.csv``), a ``.jsonl`` file, or the string ``"embedded"`` for the
            chit-chat corpus that ships with the ``chitchat-dataset`` package.
        seed: seeds the shuffle that splits dialogs which come without a split.
    """
    if isinstance(source, str) and source == EMBEDDED:
        return read_embedded(seed)
    path = Path(source)
    if path.is_dir():
        return read_udc_folder(path)
    if path.is_file() and path.suffix == ".jsonl":
        return read_jsonl(path, seed)
    if not path.exists():
        raise DataError(path, f"no such file or folder (nor the word {EMBEDDED!r})")
    raise DualencError(
        f"{path}: dialogs must be a UDC folder, a .jsonl file or the word {EMBEDDED!r}"
    )


def split_by_shuffle(count: int, seed: int) -> list[str]:
    """Assign `count` items to splits 80/10/10 by a seeded shuffle; returns a split per item."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    n_train = count * 8 // 10
    n_valid = (count - n_train) // 2
    splits = [""] * count
    for rank, index in enumerate(order):
        if rank < n_train:
            splits[index] = "train"
        elif rank < n_train + n_valid:
            splits[index] = "valid"
        else:
            splits[index] = "test"
    return splits


# ----------------------------------------------------------------------------------------
# The UDC 1.0 raw layout


def read_udc_folder(root: Path) -> dict[str, list[Dialog]]:
    """Read the dialogs that the three list files of a UDC 1.0 folder name, by split."""
    splits = {}
    for split, list_name in LIST_FILES.items():
        entries = read_list_file(root / list_name)
        splits[split] = [read_udc_entry(root, *entry) for entry in entries]
        logger.debug("%s: %d dialogs", list_name, len(splits[split]))
    return splits


def read_list_file(path: Path) -> list[tuple[Path, int, str, str]]:
    """Read `<id>.tsv,<folder>` lines as (list file, line number, file name, folder)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            path,
            "no such list file (a UDC folder needs trainfiles.csv, "
            "valfiles.csv and testfiles.csv beside dialogs/)",
        ) from None
    except OSError as err:
        raise DataError(path, f"cannot read the list file: {err.strerror}") from None
    text = decode_strict(path, data, fields=("file", "folder"), separator=",")
    entries = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 2:
            raise DataError(
                path,
                f"expected '<id>.tsv,<folder>', found {len(parts)} comma-separated fields",
                line=number,
                field="file",
            )
        for field, value in zip(("file", "folder"), parts, strict=True):
            if not value or value in (".", "..") or "/" in value or "\\" in value:
                raise DataError(
                    path, f"{value!r} is not a plain file or folder name", line=number, field=field
                )
        entries.append((path, number, parts[0], parts[1]))
    return entries


def read_udc_entry(root: Path, list_path: Path, number: int, name: str, folder: str) -> Dialog:
    """Read the dialog file one list line names; a missing file is blamed on that line."""
    path = root / "dialogs" / folder / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(
            list_path, f"no such dialog file {path}", line=number, field="file"
        ) from None
    except OSError as err:
        raise DataError(
            list_path, f"cannot read dialog file {path}: {err.strerror}", line=number, field="file"
        ) from None
    return Dialog(id=f"{folder}/{name}", turns=group_turns(parse_tsv(path, data)))


def parse_tsv(path: Path, data: bytes) -> Iterator[tuple[str, str]]:
    """Yield (sender, text) from `timestamp TAB sender TAB recipient TAB text` lines."""
    text = decode_strict(path, data, fields=TSV_FIELDS, separator="\t")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for number, line in enumerate(lines, 1):
        parts = line.removesuffix("\r").split("\t", 3)
        if len(parts) < 4:
            raise DataError(
                path,
                f"expected 4 tab-separated fields ({', '.join(TSV_FIELDS)}), found {len(parts)}",
                line=number,
                field=TSV_FIELDS[len(parts)],
            )
        if not parts[1]:
            raise DataError(path, "the sender is empty", line=number, field="sender")
        yield parts[1], parts[3]


def decode_strict(path: Path, data: bytes, fields: tuple[str, ...], separator: str) -> str:
    """Decode UTF-8 strictly; a bad byte is reported with its line and the field it falls in."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        column = data.count(separator.encode(), line_start, err.start)
        field = fields[min(column, len(fields) - 1)]
        raise DataError(
            path,
            f"byte 0x{data[err.start]:02x} is not valid UTF-8",
            line=data.count(b"\n", 0, err.start) + 1,
            field=field,
        ) from None


# ----------------------------------------------------------------------------------------
# JSON Lines: one dialog a line


def read_jsonl(path: Path, seed: int) -> dict[str, list[Dialog]]:
    """Read a JSON Lines file of dialogs; those without "split" are split by a seeded shuffle."""
    records = []
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            if raw.strip():
                records.append(parse_jsonl_line(path, number, raw))

    unsplit = [index for index, (split, _) in enumerate(records) if split is None]
    for index, split in zip(unsplit, split_by_shuffle(len(unsplit), seed), strict=True):
        records[index] = (split, records[index][1])
    splits: dict[str, list[Dialog]] = {split: [] for split in SPLITS}
    for split, dialog in records:
        splits[split].append(dialog)
    return splits


def parse_jsonl_line(path: Path, number: int, raw: bytes) -> tuple[str | None, Dialog]:
    """Parse one JSONL line into (split or None, dialog)."""
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DataError(
            path,
            f"byte 0x{raw[err.start]:02x} at column {err.start + 1} is not valid UTF-8",
            line=number,
        ) from None
    except json.JSONDecodeError as err:
        raise DataError(
            path, f"not valid JSON ({err.msg} at column {err.colno})", line=number
        ) from None
    if not isinstance(record, dict):
        raise DataError(
            path, f"a dialog must be a JSON object, not {json_type(record)}", line=number
        )

    def wrong(field: str, message: str) -> DataError:
        return DataError(path, message, line=number, field=field)

    dialog_id = record.get("id", f"line {number}")
    if not isinstance(dialog_id, str):
        raise wrong("id", f"must be a string, not {json_type(dialog_id)}")
    split = record.get("split")
    if split is not None and split not in SPLITS:
        raise wrong("split", f"must be one of {', '.join(SPLITS)}, not {split!r}")
    if "messages" not in record:
        raise wrong("messages", 'missing (a list of {"sender": ..., "text": ...})')
    messages = record["messages"]
    if not isinstance(messages, list):
        raise wrong("messages", f"must be a list, not {json_type(messages)}")
    pairs = [parse_message(message, f"messages[{i}]", wrong) for i, message in enumerate(messages)]
    return split, Dialog(id=dialog_id, turns=group_turns(pairs))


def parse_message(
    message: Any, where: str, wrong: Callable[[str, str], DataError]
) -> tuple[str, str]:
    """Check one message object and return its (sender, text)."""
    if not isinstance(message, dict):
        raise wrong(where, f"a message must be an object, not {json_type(message)}")
    for key in ("sender", "text"):
        if key not in message:
            raise wrong(f"{where}.{key}", "missing")
        if not isinstance(message[key], str):
            raise wrong(f"{where}.{key}", f"must be a string, not {json_type(message[key])}")
        try:
            message[key].encode("utf-8")
        except UnicodeEncodeError:
            raise wrong(f"{where}.{key}", "holds a lone surrogate escape") from None
    if not message["sender"]:
        raise wrong(f"{where}.sender", "the sender is empty")
    timestamp = message.get("timestamp")
    if timestamp is not None and not isinstance(timestamp, str):
        raise wrong(f"{where}.timestamp", f"must be a string, not {json_type(timestamp)}")
    return message["sender"], message["text"]


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for messages."""
    names = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


# ----------------------------------------------------------------------------------------
# The embedded corpus


def read_embedded(seed: int) -> dict[str, list[Dialog]]:
    """The chit-chat corpus of the `chitchat-dataset` package, split 80/10/10 by `seed`.

    The sorted conversation ids are shuffled with `seed` to choose each one's split; every
    split keeps the sorted order.
    """
    try:
        import chitchat_dataset
    except ImportError:
        raise DualencError(
            "the embedded corpus needs the chitchat-dataset package (pip install chitchat-dataset)"
        ) from None
    conversations = chitchat_dataset.Dataset()
    ids = sorted(conversations)
    splits: dict[str, list[Dialog]] = {split: [] for split in SPLITS}
    for conv_id, split in zip(ids, split_by_shuffle(len(ids), seed), strict=True):
        turns = [
            [message["text"] for message in turn]
            for turn in conversations[conv_id]["messages"]
            if turn
        ]
        splits[split].append(Dialog(id=conv_id, turns=turns))
    return splits
