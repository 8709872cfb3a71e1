"""`dualenc plot RUN... --out curves.png`: training curves from the runs' metrics.csv."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plot",
        help="draw training curves of runs into a PNG",
        description="Draws train loss, validation loss, R@1/2, R@1/10, R@2/10 and R@5/10 "
        "against the step, one line per run, from each run's metrics.csv.",
    )
    p.add_argument("runs", type=Path, nargs="+", help="run folders written by `dualenc train`")
    p.add_argument("--out", type=Path, required=True, help="the PNG file to write")
    p.add_argument("--labels", nargs="+", help="one legend label per run (default: folder names)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dualenc.plots import plot_curves

    print(plot_curves(args.runs, args.out, args.labels))
    return 0
