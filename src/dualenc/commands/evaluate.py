"""`dualenc evaluate`: recall@k and MRR of a trained run or a baseline on a 1-in-n file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dualenc.baselines import BASELINES, make_baseline
from dualenc.errors import DualencError
from dualenc.metrics import format_metrics


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score a run or a baseline on a ranking file",
        description="Print R@1/2 (the truth against Distractor_0), R@1, R@2 and R@5 of n, MRR "
        "and the row count. Ties count against the truth.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="a run folder written by `dualenc train`")
    source.add_argument("--baseline", choices=BASELINES, help="a baseline ranker instead")
    p.add_argument("--data", type=Path, required=True, help="a 1-in-n file (UDC v2 CSV or Xu)")
    p.add_argument("--train", type=Path, help="training file a tfidf or bm25 baseline is fitted on")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which checkpoint of the run (default best)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the random baseline")
    p.add_argument("--batch-size", type=int, default=64, help="contexts per batch (default 64)")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=run)


def make_scorer(args: argparse.Namespace):
    """The model's Ranker, or the named baseline fitted on --train."""
    if args.run is not None:
        from dualenc.ranker import Ranker

        return Ranker.load(args.run, args.checkpoint)
    from dualenc.text import Tokenizer

    try:
        return make_baseline(args.baseline, args.train, Tokenizer(), args.seed)
    except ValueError as err:
        raise DualencError(str(err)) from err


def run(args: argparse.Namespace) -> int:
    from dualenc.evaluate import evaluate_file

    values = evaluate_file(make_scorer(args), args.data, args.batch_size)
    if args.json:
        print(json.dumps(values, sort_keys=True))
    else:
        print(format_metrics(values, [k for k in values if k != "n"] + ["n"]))
    return 0
