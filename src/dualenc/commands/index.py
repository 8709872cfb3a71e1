"""`dualenc index --run RUN --responses FILE --out INDEX`: encode a response bank once."""

from __future__ import annotations

import argparse
from pathlib import Path

from dualenc.index import EXACT_LIMIT, KINDS, RECALL_K, SOURCE_FORMATS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `index` subcommand."""
    p = subparsers.add_parser(
        "index",
        help="encode a response bank once, for chat and serve",
        description="Encode every distinct response of FILE with a trained run and save the "
        "bank: a text file of responses (one a line), or a ranking file (UDC v2 CSV or Xu "
        "format), whose training responses or evaluation candidates are taken. Small banks "
        "are searched exactly; large ones through a FAISS IVF index whose recall@10 against "
        "the exact search is measured and reported.",
    )
    p.add_argument("--run", type=Path, required=True, help="a run folder written by train")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which checkpoint of the run (default best)")
    p.add_argument("--responses", type=Path, required=True, metavar="FILE",
                   help="responses, one a line, or a ranking file")
    p.add_argument("--out", type=Path, required=True, metavar="INDEX", help="output folder")
    p.add_argument("--format", choices=SOURCE_FORMATS, default="auto",
                   help="how FILE is read (default auto: ranking for .csv and for tab-separated "
                   ".txt/.tsv with a 0/1 label first, lines otherwise)")
    p.add_argument("--kind", choices=KINDS, default="auto",
                   help=f"search: exact, faiss, or auto, the default (faiss above {EXACT_LIMIT:,} "
                   "responses)")
    p.add_argument("--nlist", type=int, default=0,
                   help="FAISS inverted lists (default 0: about the square root of the bank size)")
    p.add_argument("--nprobe", type=int, default=0,
                   help="FAISS lists searched per query (default 0: the fewest that reach "
                   "--target-recall)")
    p.add_argument("--target-recall", type=float, default=0.95,
                   help=f"recall@{RECALL_K} against the exact search that --nprobe 0 aims at "
                   "(default 0.95)")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="responses encoded at once (default 1024)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default 0: torch's own choice)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing INDEX")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from dualenc.index import ResponseBank, read_responses
    from dualenc.ranker import Ranker

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"{args.out} already exists (pass --overwrite to replace it)")
    ranker = Ranker.load(args.run, args.checkpoint)
    responses, read = read_responses(args.responses, args.format)
    bank = ResponseBank.build(
        ranker, responses, args.kind, args.nlist, args.nprobe, args.target_recall,
        args.batch_size, args.progress,
    )
    bank.meta["source"] = {"path": str(args.responses), "read": read}
    bank.save(args.out, overwrite=args.overwrite)
    print(f"{len(bank):,} responses ({read - len(bank):,} duplicates dropped), "
          f"{ranker.encoding_dim}-d, {bank.kind} search; written to {args.out}")
    if bank.kind == "faiss":
        faiss = bank.meta["faiss"]
        print(f"FAISS IVF: {faiss['nlist']} lists, nprobe {faiss['nprobe']}: "
              f"recall@{RECALL_K} {faiss[f'recall@{RECALL_K}']:.3f} against the exact search "
              f"({faiss['recall_queries']} sampled responses as queries)")
    return 0
