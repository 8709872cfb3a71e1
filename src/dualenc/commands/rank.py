"""`dualenc rank --run RUN --context TEXT CANDIDATE...`: candidates ranked for one context."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dualenc.errors import DualencError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `rank` subcommand."""
    p = subparsers.add_parser(
        "rank",
        help="score candidate responses for one context",
        description="Rank candidate responses for a context with a trained run: best first, "
        "with logits c·M·r + b and their sigmoid probabilities.",
    )
    p.add_argument("--run", type=Path, required=True, help="a run folder written by train")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which checkpoint of the run (default best)")
    p.add_argument("--context", action="append", required=True, metavar="TEXT",
                   help="the dialog so far: text with __eou__/__eot__ markers, or give "
                   "--context once per turn")
    p.add_argument("candidates", nargs="*", metavar="CANDIDATE", help="responses to rank")
    p.add_argument("--candidates", dest="candidates_file", type=Path, metavar="FILE",
                   help="also rank the responses of FILE, one a line ('-' reads stdin)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default 0: torch's own choice)")
    p.set_defaults(func=run)


def read_candidates(args: argparse.Namespace) -> list[str]:
    """The positional candidates, then those of --candidates FILE."""
    candidates = list(args.candidates)
    if args.candidates_file is not None:
        if str(args.candidates_file) == "-":
            lines = sys.stdin.read().splitlines()
        else:
            lines = args.candidates_file.read_text(encoding="utf-8").splitlines()
        candidates += [line.strip() for line in lines if line.strip()]
    if not candidates:
        raise DualencError("no candidates: give them as arguments or with --candidates FILE")
    return candidates


def run(args: argparse.Namespace) -> int:
    import torch

    from dualenc.ranker import Ranker

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    candidates = read_candidates(args)
    context = args.context[0] if len(args.context) == 1 else args.context
    ranked = Ranker.load(args.run, args.checkpoint).rank(context, candidates)
    if args.json:
        rows = [vars(c) for c in ranked]
        print(json.dumps({"context": context, "ranked": rows}, ensure_ascii=False))
        return 0
    print(f"{'rank':>4}  {'logit':>8}  {'prob':>6}  {'input':>5}  candidate")
    for place, c in enumerate(ranked, 1):
        print(f"{place:4d}  {c.logit:8.3f}  {c.probability:6.3f}  {c.index:5d}  {c.text}")
    return 0
