"""How well the addressee heuristic of `dualenc dialogs` finds who replies to whom.

Measured on the ``#ubuntu`` day-logs with human reply-to annotations (Kummerfeld et al.,
ACL 2019), by default ``../shared/data/ubuntu-irc-logs`` beside the repository:

    python benchmarks/dialogs_quality.py [LOGS] [--grid]

Definitions, per day-log, summed over all day-logs:

- annotated lines: the lines named in the log's annotation file (lines 1,000 on);
- gold pairs: the annotated links (parent, child) with parent != child whose two lines are
  messages of different speakers (nicks compared case-insensitively);
- predicted pairs: the heuristic runs over the whole log; for each message m of a kept
  dialog, the pair (p, m), where p is the latest earlier message of the other speaker in
  that dialog; a pair counts only if both of its lines are annotated;
- precision = |predicted & gold| / |predicted|, recall = |predicted & gold| / |gold|;
- together: the fraction of gold pairs whose two lines land in one kept dialog, in any
  order (a looser recall: right dialog, maybe the wrong message replied to).

Also printed: dialogs built from the whole logs (compare with the 2,580 training dialogs of
``ubuntu-irc``, which were built from the annotated part only) and dialogs built from the
links (``--links``). The table holds the default windows and, one at a time, the other
values of GRID; ``--grid`` tries every combination of GRID instead. Best F1 first.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import replace
from pathlib import Path

from dualenc.corpus.disentangle import (
    DialogOptions,
    Utterance,
    address_messages,
    heuristic_dialogs,
    linked_dialogs,
)
from dualenc.corpus.irc import DayLog, annotation_path, find_logs, read_links, read_log

DEFAULT_LOGS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ubuntu-irc-logs"
GRID = {  # the settings tried: every combination of these, in minutes
    "nick_window": (5.0, 10.0, 30.0),
    "reply_window": (0.5, 1.0, 3.0),
    "question_window": (2.0, 5.0, 10.0),
    "max_silence": (5.0, 10.0, 20.0),
}
_LABELS = [(name, name.removesuffix("_window")) for name in GRID]


def gold_pairs(log: DayLog, links: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """Annotated links between messages of two different speakers."""
    sender = {m.line: m.sender.lower() for m in log.messages}
    return {
        (parent, child)
        for parent, child in links
        if parent != child
        and parent in sender
        and child in sender
        and sender[parent] != sender[child]
    }


def predicted_pairs(dialogs: list[list[Utterance]], annotated: set[int]) -> set[tuple[int, int]]:
    """(latest earlier message of the other speaker, message) pairs within each dialog."""
    pairs = set()
    for dialog in dialogs:
        last_line: dict[str, int] = {}
        for said in dialog:
            speaker = said.message.sender.lower()
            others = [line for nick, line in last_line.items() if nick != speaker]
            if others and others[0] in annotated and said.message.line in annotated:
                pairs.add((others[0], said.message.line))
            last_line[speaker] = said.message.line
    return pairs


def together(dialogs: list[list[Utterance]], gold: set[tuple[int, int]]) -> int:
    """Gold pairs whose two lines lie in one dialog."""
    dialog_of = {u.message.line: i for i, dialog in enumerate(dialogs) for u in dialog}
    return sum(1 for p, c in gold if p in dialog_of and dialog_of.get(c) == dialog_of[p])


def measure(logs: list[tuple[DayLog, list[tuple[int, int]]]], options: DialogOptions) -> dict:
    """Dialogs built with `options` and the precision and recall of their reply pairs."""
    dialogs = hits = predicted = gold_total = joined = 0
    for log, links in logs:
        utterances = address_messages(log.entries, options.nick_window, log.actions)
        built = heuristic_dialogs(utterances, options).dialogs
        annotated = {line for link in links for line in link}
        gold = gold_pairs(log, links)
        pairs = predicted_pairs(built, annotated)
        dialogs += len(built)
        hits += len(pairs & gold)
        predicted += len(pairs)
        gold_total += len(gold)
        joined += together(built, gold)
    precision, recall = hits / max(predicted, 1), hits / max(gold_total, 1)
    return {
        "dialogs": dialogs,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / max(precision + recall, 1e-12),
        "together": joined / max(gold_total, 1),
    }


def linked_count(logs: list[tuple[DayLog, list[tuple[int, int]]]], options: DialogOptions) -> int:
    """Dialogs built from the reply-to links, as `dualenc dialogs --links` builds them."""
    total = 0
    for log, links in logs:
        utterances = address_messages(log.entries, options.nick_window, log.actions)
        total += len(linked_dialogs(utterances, links, options.min_turns).dialogs)
    return total


def one_at_a_time(default: DialogOptions) -> list[DialogOptions]:
    """The default, and every setting of GRID that differs from it in one value."""
    settings = [default]
    for name, values in GRID.items():
        settings += [replace(default, **{name: v}) for v in values if v != getattr(default, name)]
    return settings


def _row(options: DialogOptions, scores: dict) -> str:
    windows = "".join(f"{getattr(options, name):>{len(label)}g} " for name, label in _LABELS)
    return (
        f"{windows}| {scores['dialogs']:>7,} | {scores['precision']:.3f} | "
        f"{scores['recall']:.3f} | {scores['f1']:.3f} | {scores['together']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="?", type=Path, default=DEFAULT_LOGS)
    parser.add_argument("--grid", action="store_true", help="print every setting tried")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    logs = [(read_log(p), read_links(annotation_path(p))) for p in find_logs(args.logs)]
    messages = sum(len(log.messages) for log, _ in logs)
    default = DialogOptions()
    print(f"day-logs {len(logs)} | messages {messages:,} | lines {sum(g.lines for g, _ in logs):,}")
    print(f"dialogs from --links: {linked_count(logs, default):,} (ubuntu-irc train: 2,580)")

    settings = one_at_a_time(default)
    if args.grid:
        settings = [
            DialogOptions(**dict(zip(GRID, v, strict=True)))
            for v in itertools.product(*GRID.values())
        ]
    results = sorted(
        ((options, measure(logs, options)) for options in settings),
        key=lambda pair: -pair[1]["f1"],
    )
    print(" ".join(label for _, label in _LABELS), end=" ")
    print("| dialogs | prec  | rec   | F1    | together")
    for options, scores in results:
        mark = "  <- default" if options == default else ""
        print(_row(options, scores) + mark)
    print(f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
