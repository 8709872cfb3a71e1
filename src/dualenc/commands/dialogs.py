"""`dualenc dialogs`: raw IRC day-logs -> one-on-one dialogs in the UDC 1.0 raw layout."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from dualenc.corpus.disentangle import DialogOptions
from dualenc.corpus.irc import BuildOptions, build_layout

logger = logging.getLogger(__name__)

DESCRIPTION = """\
Build one-on-one dialogs from raw IRC day-logs the way the Ubuntu Dialogue Corpus was
built (Lowe et al. 2015, section 3) and write them in the UDC 1.0 raw layout that
`dualenc create` reads:
  DIALOGS/dialogs/<log name>/<n>.tsv   "timestamp TAB sender TAB recipient TAB text" lines
  DIALOGS/trainfiles.csv, valfiles.csv, testfiles.csv   "<n>.tsv,<log name>" lines
  DIALOGS/report.json   lines and messages read, skipped, kept and dropped; turn counts

LOGS is a day-log or a folder of them (*.txt, *.log). Lines are "[HH:MM] <nick> text"
(bracket), "HH:MM <nick> text" (plain) or "2004-12-25T03:42:00 <nick> text" (iso);
--format auto picks one per file from its first lines. Clock-only formats take the day
from a YYYY-MM-DD in the file name. System lines (===, -!-, ***) are skipped but for nick
changes, and so are "* nick waves" action lines, notices and empty messages. A line that
is not UTF-8 or carries no stamp of the format stops the run with its file, line and
field, unless --skip-bad-lines counts it as skipped ("unparseable" in the report).

The heuristic: a message that starts with the nick of someone who spoke within
--nick-window minutes ("bob: ...", "bob, ...", "bob ...") is addressed to them and joins
the dialog of that pair, which its first message opens together with the addressee's
unaddressed messages of the last --question-window minutes (their question). A nick that
is also an English word ("help", "well") is an addressee only before ':' or ','. An
unaddressed message continues its speaker's dialog when exactly one of their dialogs had
a message within --reply-window minutes. A dialog ends after --max-silence minutes
without a message and is dropped if shorter than --min-turns turns. The leading address
goes into the recipient column.

--links uses the human reply-to annotations beside a log (<name>.annotation.txt, one
"parent child -" line a link, lines counted from 0) instead: a conversation is a
connected component of the links, and its dialog keeps the first speaker and the other
speaker who wrote most. Logs without annotations fall back to the heuristic. Either way
a message addressed to a third person is left out of a dialog.

Day-logs, never single dialogs, are shuffled with --seed and dealt to train, valid and
test by the --split shares, so no day crosses splits.

--merge UDC copies in a UDC 1.0 raw layout: the dialogs its list files name, unchanged,
with its train list added to train and its valid and test lists added to valid and test.
A dialog built here is dropped as a duplicate when its (sender, text) sequence equals or
is an unbroken run of a dialog already present (merged ones first, then ours longest
first), or holds a merged valid or test dialog. To train on all dialogs of a folder of
logs plus a corpus's own training dialogs and evaluate on its valid and test split:
  dualenc dialogs LOGS --out DIALOGS --split 1,0,0 --merge UDC
"""

# (flag, DialogOptions field, type, metavar, help) for the time windows and limits.
DIALOG_OPTIONS = [
    ("--nick-window", "nick_window", float, "MIN", "how long a nick stays an addressee"),
    ("--reply-window", "reply_window", float, "MIN", "how fresh a dialog unaddressed text joins"),
    ("--question-window", "question_window", float, "MIN", "how long a question waits"),
    ("--max-silence", "max_silence", float, "MIN", "the silence that ends a dialog"),
    ("--min-turns", "min_turns", int, "N", "fewest turns a dialog keeps"),
]  # fmt: skip


def _shares(text: str) -> tuple[float, float, float]:
    try:
        shares = tuple(float(part) for part in text.split(","))
    except ValueError:
        shares = ()
    if len(shares) != 3 or min(shares) < 0 or abs(sum(shares) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"expected three shares >= 0 adding up to 1: {text!r}")
    return shares  # type: ignore[return-value]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `dialogs` subcommand."""
    parser = subparsers.add_parser(
        "dialogs",
        help="raw IRC day-logs -> one-on-one dialogs (UDC 1.0 raw layout)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("logs", metavar="LOGS", type=Path, help="a day-log or a folder of them")
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIALOGS", help="the folder to write"
    )
    parser.add_argument(
        "--format",
        choices=("auto", "bracket", "plain", "iso"),
        default="auto",
        help="line format of the logs (default: %(default)s)",
    )
    parser.add_argument("--links", action="store_true", help="build from reply-to annotations")
    defaults = DialogOptions()
    for flag, field, kind, metavar, text in DIALOG_OPTIONS:
        default = getattr(defaults, field)
        parser.add_argument(
            flag, dest=field, type=kind, default=default, metavar=metavar,
            help=f"{text} (default: {default:g})",
        )  # fmt: skip
    parser.add_argument(
        "--split",
        type=_shares,
        default=(0.8, 0.1, 0.1),
        metavar="T,V,T",
        help="train,valid,test shares of the day-logs (default: 0.8,0.1,0.1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the day split (default: 0)")
    parser.add_argument(
        "--merge", action="append", type=Path, default=[], metavar="UDC",
        help="a UDC 1.0 raw layout to merge in (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--skip-bad-lines", action="store_true", help="count bad lines as skipped, not fail"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DIALOGS if it exists")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the dialogs the parsed arguments ask for; returns the exit status."""
    options = BuildOptions(
        fmt=args.format,
        links=args.links,
        split=args.split,
        seed=args.seed,
        skip_bad_lines=args.skip_bad_lines,
        merge=args.merge,
        dialog=DialogOptions(**{field: getattr(args, field) for _, field, *_ in DIALOG_OPTIONS}),
    )
    report = build_layout(args.logs, args.out, options, overwrite=args.overwrite)
    log_report(report)
    logger.info("wrote %s", args.out)
    return 0


def log_report(report: dict[str, Any]) -> None:
    """Log the counts of a `build_layout` report, a line a kind."""
    logger.info(
        "read %d day-logs (%s): %s lines, %s messages",
        report["logs"],
        ", ".join(f"{fmt} {n}" for fmt, n in sorted(report["formats"].items())),
        f"{report['lines']:,}",
        f"{report['messages']:,}",
    )
    logger.info("skipped: %s", _pairs(report["skipped"]))
    logger.info("dialogs (%s): %s", report["mode"], _pairs(report["dialogs"]))
    turns = sorted(report["turns"].items())
    short = {str(n): count for n, count in turns if n < 12}
    logger.info("turns: %s | 12+ %s", _pairs(short), f"{sum(c for n, c in turns if n >= 12):,}")
    for split, counts in report["splits"].items():
        logger.info("%s: %s", split, _pairs(counts))


def _pairs(counts: dict) -> str:
    return " | ".join(f"{name} {value:,}" for name, value in counts.items())
