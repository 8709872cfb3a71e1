"""IRC day-logs to one-on-one dialogs in the UDC 1.0 raw layout (`dualenc dialogs`).

Line formats, chosen per file or detected from its first lines: ``bracket``
(``[HH:MM] <nick> text``, the ``#ubuntu`` logs of Kummerfeld et al. 2019), ``plain``
(``HH:MM <nick> text``) and ``iso`` (``2004-12-25T03:42:00 <nick> text``; seconds fraction,
``Z`` or offset, a space for the ``T`` and brackets around the stamp are optional). Clock-only
formats take the day from the file name and keep it for every line, as ``ubuntu-irc`` does.
System lines (``===``, ``-!-``, ``***``) are skipped but for nick changes; ``* nick waves``
action lines are skipped too, though they show the nick is present.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from dualenc.corpus.dialogs import LIST_FILES, SPLITS, parse_tsv, read_list_file
from dualenc.corpus.disentangle import (
    DialogOptions,
    DuplicateFinder,
    Key,
    Message,
    NickChange,
    Utterance,
    address_messages,
    count_turns,
    dialog_key,
    heuristic_dialogs,
    linked_dialogs,
    read_links,
)
from dualenc.errors import DataError, DualencError
from dualenc.fileio import atomic_dir, write_json

logger = logging.getLogger(__name__)

FORMATS = ("bracket", "plain", "iso")

_STAMPS = {
    "bracket": re.compile(r"\[(\d{1,2}):(\d{2})(?::(\d{2}))?\] ?(.*)"),
    "plain": re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))? (.*)"),
    "iso": re.compile(
        r"\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)\]? (.*)"
    ),
}
_SAY = re.compile(r"<[@+%&~]?([^>]+)>(?: (.*))?")
_ACTION = re.compile(r"\s*\* (\S+)(?: .*)?")
_SYSTEM = re.compile(r"(===|-!-|\*\*\*|---|<--|-->)")
_NICK_CHANGE = re.compile(r"(\S+) is now known as (\S+)")
_DAY = re.compile(r"(\d{4}-\d{2}-\d{2})")
_DETECT_LINES = 200  # lines looked at to detect a file's format


@dataclass
class DayLog:
    """A parsed day-log: its messages and nick changes in order, and what was skipped."""

    path: Path
    name: str  # the file name without ``.raw.txt`` / ``.txt`` / ``.log``
    day: str | None
    fmt: str
    entries: list[Message | NickChange] = field(default_factory=list)
    actions: list[tuple[int, float, str]] = field(default_factory=list)  # (line, minute, nick)
    skipped: Counter[str] = field(default_factory=Counter)
    lines: int = 0

    @property
    def messages(self) -> list[Message]:
        return [e for e in self.entries if isinstance(e, Message)]


def log_name(path: Path) -> str:
    """The name of a day-log without its ``.raw.txt``, ``.txt`` or ``.log`` ending."""
    return re.sub(r"(\.raw)?\.(txt|log)$", "", path.name)


def annotation_path(path: Path) -> Path:
    """Where the reply-to annotations of a day-log lie: ``<name>.annotation.txt`` beside it."""
    return path.with_name(log_name(path) + ".annotation.txt")


def find_logs(path: str | Path) -> list[Path]:
    """The day-logs at `path`: the file itself, or the ``.txt``/``.log`` files of a folder."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    logs = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.suffix in (".txt", ".log") and not p.name.endswith(".annotation.txt")
    )
    if not logs:
        raise DataError(path, "holds no day-logs (*.txt or *.log other than *.annotation.txt)")
    return logs


def read_log(path: str | Path, fmt: str = "auto", skip_bad_lines: bool = False) -> DayLog:
    """Parse one day-log.

    Args:
        path: the log file, UTF-8.
        fmt: ``bracket``, ``plain``, ``iso`` or ``auto`` (detected from the first lines).
        skip_bad_lines: count lines that are not UTF-8 or carry no stamp of the format as
            ``skipped["unparseable"]`` instead of raising `DataError`.
    """
    path = Path(path)
    texts = _decode_lines(path, skip_bad_lines)
    fmt = detect_format(path, texts) if fmt == "auto" else fmt
    day = _file_day(path) if fmt != "iso" else None
    log = DayLog(path=path, name=log_name(path), day=day, fmt=fmt)
    clock = _Clock()
    for number, text in enumerate(texts):
        if text is None:
            log.skipped["unparseable"] += 1
        elif text.strip():
            _parse_into(log, number, text, clock, skip_bad_lines)
    log.lines = len(texts)
    return log


def detect_format(path: Path, texts: list[str | None]) -> str:
    """The format whose stamp starts most of the first lines that are not system lines."""
    sample = [t for t in texts if t and t.strip() and not _SYSTEM.match(t)][:_DETECT_LINES]
    hits = {fmt: sum(1 for t in sample if _STAMPS[fmt].fullmatch(t)) for fmt in FORMATS}
    best = max(FORMATS, key=lambda fmt: hits[fmt])
    if hits[best] == 0:
        raise DataError(path, "no line looks like a bracket, plain or ISO message", field="format")
    return best


def _decode_lines(path: Path, skip_bad_lines: bool) -> list[str | None]:
    raw_lines = path.read_bytes().split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    texts: list[str | None] = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            texts.append(raw.decode("utf-8").rstrip("\r").lstrip("\ufeff"))
        except UnicodeDecodeError as err:
            if not skip_bad_lines:
                before = raw[: err.start]
                where = "text" if b">" in before else "nick" if b"<" in before else "timestamp"
                message = f"not UTF-8: byte 0x{raw[err.start]:02x} at column {err.start + 1}"
                raise DataError(path, message, line=number, field=where) from None
            texts.append(None)
    return texts


def _file_day(path: Path) -> str:
    found = _DAY.search(path.name)
    if found:
        try:
            return date.fromisoformat(found.group(1)).isoformat()
        except ValueError:
            pass
    raise DataError(path, "the file name holds no YYYY-MM-DD day for the clock times", field="day")


class _Clock:
    """Minutes on a clock that never runs backwards, from times of day."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.total = 0.0

    def advance(self, minute_of_day: float) -> float:
        if self.last is not None:
            step = (minute_of_day - self.last) % 1440
            # NOTE: a backwards step is midnight or a 12-hour clock turning over; both mean
            # little time passed, so a step of more than half a day is taken modulo 12 hours.
            self.total += step % 720 if step > 720 else step
        self.last = minute_of_day
        return self.total


def _parse_into(log: DayLog, number: int, text: str, clock: _Clock, skip_bad: bool) -> None:
    stamped = _STAMPS[log.fmt].fullmatch(text)
    if stamped is None:
        if _SYSTEM.match(text):
            _add_system(log, number, text)
        elif skip_bad:
            log.skipped["unparseable"] += 1
        else:
            message = f"not a {log.fmt} log line: {text[:60]!r}"
            raise DataError(log.path, message, line=number + 1, field="timestamp")
        return
    try:
        minute, timestamp = _read_stamp(log, stamped, clock)
    except ValueError as err:
        if not skip_bad:
            raise DataError(log.path, str(err), line=number + 1, field="timestamp") from None
        log.skipped["unparseable"] += 1
        return
    _add_body(log, number, stamped.groups()[-1] or "", minute, timestamp)


def _read_stamp(log: DayLog, stamped: re.Match[str], clock: _Clock) -> tuple[float, str]:
    if log.fmt == "iso":
        when = datetime.fromisoformat(stamped.group(1).replace(" ", "T"))
        when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
        stamp = when.strftime("%Y-%m-%dT%H:%M:%S") + f".{when.microsecond // 1000:03d}Z"
        return when.timestamp() / 60, stamp
    hour, minute, second = (int(g) if g else 0 for g in stamped.groups()[:3])
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError(f"no such time of day: {hour:02d}:{minute:02d}:{second:02d}")
    stamp = f"{log.day}T{hour:02d}:{minute:02d}:{second:02d}.000Z"
    return clock.advance(hour * 60 + minute + second / 60), stamp


def _add_body(log: DayLog, number: int, body: str, minute: float, timestamp: str) -> None:
    said = _SAY.fullmatch(body)
    if said:
        sender, words = said.group(1).strip(), (said.group(2) or "").strip()
        if not words:
            log.skipped["empty"] += 1
        else:
            log.entries.append(Message(number, minute, timestamp, sender, words))
        return
    acted = _ACTION.fullmatch(body)
    if acted:
        log.skipped["action"] += 1
        log.actions.append((number, minute, acted.group(1)))
    elif _SYSTEM.match(body):
        _add_system(log, number, body)
    else:
        log.skipped["other"] += 1  # notices, relayed lines and the like


def _add_system(log: DayLog, number: int, text: str) -> None:
    log.skipped["system"] += 1
    changed = _NICK_CHANGE.search(text)
    if changed:
        log.entries.append(NickChange(number, changed.group(1), changed.group(2)))


# ----------------------------------------------------------------------------------------
# Day-logs to a UDC 1.0 raw layout, optionally merged with existing layouts


@dataclass
class BuildOptions:
    """How `dualenc dialogs` reads day-logs, builds, splits and merges dialogs."""

    fmt: str = "auto"  # bracket, plain, iso or auto (detected per file)
    links: bool = False  # build from the reply-to annotations where a log has them
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/valid/test share of days
    seed: int = 0  # seeds the shuffle of days into splits
    skip_bad_lines: bool = False  # count unparseable lines as skipped instead of failing
    merge: list[Path] = field(default_factory=list)  # UDC layouts to merge in
    dialog: DialogOptions = field(default_factory=DialogOptions)

    def problems(self) -> list[str]:
        """Every bad value, one message each."""
        found = self.dialog.problems()
        if self.fmt not in ("auto", *FORMATS):
            found.append(f"format must be auto, {', '.join(FORMATS)}; got {self.fmt!r}")
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6:
            found.append(f"split must be three shares >= 0 that add up to 1, got {self.split}")
        return found


@dataclass
class _Built:
    log: DayLog
    split: str
    dialogs: list[list[Utterance]]


def split_days(days: list[str], shares: tuple[float, ...], seed: int) -> dict[str, str]:
    """Assign days to train/valid/test by a seeded shuffle, `shares` of them to each."""
    order = sorted(days)
    random.Random(seed).shuffle(order)
    n_train = round(shares[0] * len(order))
    n_valid = min(round(shares[1] * len(order)), len(order) - n_train)
    bounds = (n_train, n_train + n_valid)
    return {day: SPLITS[sum(rank >= b for b in bounds)] for rank, day in enumerate(order)}


def build_layout(
    logs: str | Path, out: str | Path, options: BuildOptions, overwrite: bool = False
) -> dict[str, Any]:
    """Build one-on-one dialogs from day-logs and write them as a UDC 1.0 raw layout.

    Writes ``dialogs/<log name>/<n>.tsv``, the three list files and ``report.json`` under
    `out`, atomically, after copying in the layouts of `options.merge`; returns the report.
    """
    problems = options.problems()
    if problems:
        raise DualencError("bad options: " + "; ".join(problems))
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --overwrite to replace it)")
    report = _new_report(options)
    parsed = [_build_log(path, options, report) for path in find_logs(logs)]
    days = split_days(sorted({_day_key(b.log) for b in parsed}), options.split, options.seed)
    for built in parsed:
        built.split = days[_day_key(built.log)]
        report["splits"][built.split]["logs"] += 1
    merged = [read_layout(root) for root in options.merge]
    _deduplicate(parsed, merged, report)
    with atomic_dir(out, overwrite) as tmp:
        (tmp / "dialogs").mkdir()
        lists = _copy_merged(merged, tmp, report)
        _write_built(parsed, tmp, lists, report)
        for split, entries in lists.items():
            text = "".join(f"{name},{folder}\n" for name, folder in entries)
            (tmp / LIST_FILES[split]).write_text(text, encoding="utf-8")
        write_json(tmp / "report.json", report)
    return report


def _day_key(log: DayLog) -> str:
    found = _DAY.search(log.name)
    return log.day or (found.group(1) if found else log.name)


def _new_report(options: BuildOptions) -> dict[str, Any]:
    return {
        "mode": "links" if options.links else "heuristic",
        "unparseable_lines": "skipped" if options.skip_bad_lines else "error",
        "action_lines": "skipped",
        "options": {**asdict(options.dialog), "format": options.fmt, "seed": options.seed,
                    "split": list(options.split), "merge": [str(p) for p in options.merge]},
        "logs": 0, "formats": Counter(), "lines": 0, "messages": 0,
        "skipped": Counter(dict.fromkeys(("system", "action", "empty", "other", "unparseable"), 0)),
        "dialogs": Counter(kept=0, dropped_short=0, dropped_duplicate=0),
        "messages_in_dialogs": Counter(kept=0, dropped_short=0), "turns": Counter(),
        "splits": {s: {"logs": 0, "built": 0, "merged": 0} for s in SPLITS},
        "logs_without_links": [], "merged": [],
    }  # fmt: skip


def _build_log(path: Path, options: BuildOptions, report: dict[str, Any]) -> _Built:
    log = read_log(path, options.fmt, options.skip_bad_lines)
    utterances = address_messages(log.entries, options.dialog.nick_window, log.actions)
    links_file = annotation_path(path)
    if options.links and links_file.is_file():
        built = linked_dialogs(
            utterances, read_links(links_file, log.lines), options.dialog.min_turns
        )
    else:
        if options.links:
            logger.warning("%s: no %s, so its dialogs come from the heuristic", path.name,
                           links_file.name)  # fmt: skip
            report["logs_without_links"].append(path.name)
        built = heuristic_dialogs(utterances, options.dialog)
    report["logs"] += 1
    report["formats"][log.fmt] += 1
    report["lines"] += log.lines
    report["messages"] += len(utterances)
    report["skipped"].update(log.skipped)
    for name in ("unaddressed", "unannotated", "other_speakers", "addressed_elsewhere"):
        if name in built.counts:
            report["skipped"][name] += built.counts[name]
    report["dialogs"]["dropped_short"] += built.counts["dropped_short"]
    report["messages_in_dialogs"]["dropped_short"] += built.counts["in_dropped"]
    logger.debug("%s: %d dialogs", path.name, len(built.dialogs))
    return _Built(log, "", built.dialogs)


@dataclass
class Layout:
    """The dialogs a UDC 1.0 raw layout's list files name, by split."""

    root: Path
    entries: dict[str, list[tuple[str, str, Key]]]  # split -> (file name, folder, key)


def read_layout(root: str | Path) -> Layout:
    """Read the list files of a UDC 1.0 raw layout and the (sender, text) of each dialog."""
    layout = Layout(Path(root), {split: [] for split in SPLITS})
    for split, rows in layout.entries.items():
        for list_path, number, name, folder in read_list_file(layout.root / LIST_FILES[split]):
            path = layout.root / "dialogs" / folder / name
            if not path.is_file():
                message = f"no such dialog file dialogs/{folder}/{name}"
                raise DataError(list_path, message, line=number, field="file")
            rows.append((name, folder, dialog_key(parse_tsv(path, path.read_bytes()))))
    return layout


def _deduplicate(parsed: list[_Built], merged: list[Layout], report: dict[str, Any]) -> None:
    # Merged dialogs all stay; a built one goes if it equals or lies inside one already
    # present, or if it holds a merged valid/test dialog (which would leak into training).
    present, held_out = DuplicateFinder(), DuplicateFinder()
    for layout in merged:
        for split, rows in layout.entries.items():
            for _, _, key in rows:
                present.add(key)
                if split != "train":
                    held_out.add(key)
    keys = {
        (i, j): dialog_key((u.message.sender, u.text) for u in dialog)
        for i, built in enumerate(parsed)
        for j, dialog in enumerate(built.dialogs)
    }
    dropped = set()
    for place in sorted(keys, key=lambda place: -len(keys[place])):
        if present.contains(keys[place]) or held_out.inside(keys[place]):
            dropped.add(place)
        else:
            present.add(keys[place])
    for i, built in enumerate(parsed):
        built.dialogs = [d for j, d in enumerate(built.dialogs) if (i, j) not in dropped]
    report["dialogs"]["dropped_duplicate"] += len(dropped)


def _copy_merged(merged: list[Layout], tmp: Path, report: dict[str, Any]) -> dict[str, list]:
    lists: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    taken: set[tuple[str, str]] = set()
    for layout in merged:
        for split, rows in layout.entries.items():
            for name, folder, _ in rows:
                if (folder, name) in taken:
                    raise DualencError(f"{layout.root}: dialogs/{folder}/{name} is listed twice")
                taken.add((folder, name))
                target = tmp / "dialogs" / folder / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(layout.root / "dialogs" / folder / name, target)
                lists[split].append((name, folder))
            report["splits"][split]["merged"] += len(rows)
        counts = {split: len(rows) for split, rows in layout.entries.items()}
        report["merged"].append({"path": str(layout.root), **counts})
    return lists


def _write_built(parsed: list[_Built], tmp: Path, lists: dict[str, list], report: dict) -> None:
    for built in parsed:
        folder = tmp / "dialogs" / built.log.name
        if folder.exists():
            raise DualencError(f"dialogs/{built.log.name} is both a merged folder and a day-log")
        if built.dialogs:
            folder.mkdir(parents=True)
        for number, dialog in enumerate(built.dialogs, start=1):
            rows = [(u.message.timestamp, u.message.sender, u.recipient, u.text) for u in dialog]
            text = "".join("\t".join(map(_one_line, row)) + "\n" for row in rows)
            (folder / f"{number}.tsv").write_text(text, encoding="utf-8")
            lists[built.split].append((f"{number}.tsv", built.log.name))
            report["turns"][count_turns(u.message.sender for u in dialog)] += 1
            report["messages_in_dialogs"]["kept"] += len(dialog)
        report["splits"][built.split]["built"] += len(built.dialogs)
        report["dialogs"]["kept"] += len(built.dialogs)


def _one_line(field: str) -> str:
    return " ".join(field.replace("\t", " ").splitlines())
