"""`dualenc chat --run RUN --index INDEX`: a conversation in the terminal, one line a turn.

Each line read from standard input is a user turn; the reply is the best response of the
bank to the dialog so far (user turns and replies, joined with the corpus markers). Lines
starting with "/" are commands: /reset starts a new dialog, /quit (or end of input) ends.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from dualenc.text import MARKERS

if TYPE_CHECKING:
    from dualenc.index import BankHit

Respond = Callable[[list[str], int], "list[BankHit]"]  # (turns so far, k) -> best first

COMMANDS = "/reset starts a new dialog, /quit ends"
KEPT_TURNS = 64  # turns of the dialog kept: the encoder sees at most its last 160 tokens


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `chat` subcommand."""
    p = subparsers.add_parser(
        "chat",
        help="talk to a run in the terminal, replies from a response bank",
        description="Read turns from standard input, one a line, and answer each with the "
        f"best response of the bank to the dialog so far; {COMMANDS}.",
    )
    p.add_argument("--run", type=Path, required=True, help="a run folder written by train")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which checkpoint of the run (default best)")
    p.add_argument("--index", type=Path, required=True, help="a bank written by `dualenc index`")
    p.add_argument("--top", type=int, default=1,
                   help="also list the K best responses with their scores, when above 1 "
                   "(default 1: the reply only)")
    p.add_argument("--exact", action="store_true", help="search a FAISS bank exactly")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default 0: torch's own choice)")
    p.set_defaults(func=run)


def display(text: str) -> str:
    """A response as shown to a person: without the corpus markers."""
    return " ".join(word for word in text.split() if word not in MARKERS)


def reply_lines(hits: list[BankHit], top: int) -> list[str]:
    """What the bot prints for one turn: the reply, then with top > 1 the ranked list."""
    lines = [f"bot: {display(hits[0].text)}"] if hits else ["bot: (the bank is empty)"]
    if top > 1:
        lines += [f"  {place}. {h.logit:8.3f}  {h.probability:.3f}  {display(h.text)}"
                  for place, h in enumerate(hits, 1)]
    return lines


def converse(respond: Respond, lines: TextIO, out: TextIO, top: int, prompt: bool = False
             ) -> int:
    """Run the dialog over `lines`, writing replies to `out`; returns how many were given."""
    turns: list[str] = []
    replies = 0
    while True:
        if prompt:
            out.write("you: ")
            out.flush()
        line = lines.readline()
        if not line:
            if prompt:
                out.write("\n")
            break
        text = line.strip()
        if text in ("/quit", "/exit"):
            break
        if text == "/reset":
            turns = []
            print("(new dialog)", file=out)
        elif text.startswith("/"):
            print(f"(unknown command {text.split()[0]}: {COMMANDS})", file=out)
        elif text:
            turns.append(text)
            hits = respond(turns[-KEPT_TURNS:], max(top, 1))
            print("\n".join(reply_lines(hits, top)), file=out, flush=True)
            if hits:
                turns.append(hits[0].text)
            replies += 1
    return replies


def run(args: argparse.Namespace) -> int:
    import torch

    from dualenc.index import ResponseBank
    from dualenc.ranker import Ranker

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    ranker = Ranker.load(args.run, args.checkpoint)
    bank = ResponseBank.load(args.index, ranker)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"{len(bank):,} responses; {COMMANDS}", file=sys.stderr)

    def respond(turns: list[str], k: int) -> list[BankHit]:
        return bank.respond(ranker, turns, k, exact=args.exact)

    converse(respond, sys.stdin, sys.stdout, args.top, prompt=interactive)
    return 0
