"""`dualenc prepare SETS --out PREPARED`: ranking files -> vocabulary and id arrays."""

from __future__ import annotations

import argparse

from dualenc.features import DEFAULT_MAX_CONTEXT_LEN, DEFAULT_MAX_RESPONSE_LEN
from dualenc.prepare import DEFAULT_HASH_BUCKETS, PrepareOptions, prepare
from dualenc.text import TOKENIZER_KINDS


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `prepare` subcommand."""
    parser = subparsers.add_parser(
        "prepare",
        help="ranking files -> vocabulary and memory-mapped id arrays",
        description=(
            "Tokenize the ranking files in SETS (train.csv and optional valid.csv, test.csv "
            "in the UDC v2 layout, or train.txt, valid.txt, test.txt in the tab format of "
            "Xu et al.), build the vocabulary on the training file, and write id arrays, "
            "vocab.txt, tokenizer.json and manifest.json to PREPARED."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("sets", metavar="SETS", help="folder of ranking files")
    parser.add_argument("--out", metavar="PREPARED", required=True, help="output folder")
    parser.add_argument(
        "--min-frequency", type=int, default=5, help="fewest training occurrences for an id"
    )
    parser.add_argument(
        "--max-size", type=int, default=None, help="most ids, <pad> and <unk> included"
    )
    parser.add_argument(
        "--hash-buckets",
        type=int,
        default=DEFAULT_HASH_BUCKETS,
        help="ids shared out by hash to tokens without their own (0: they are all <unk>)",
    )
    parser.add_argument(
        "--tokenizer", choices=TOKENIZER_KINDS, default="default", help="how text is split"
    )
    parser.add_argument(
        "--keep-case", action="store_true", help="do not lower-case text before tokenizing"
    )
    parser.add_argument(
        "--max-context-len",
        type=int,
        default=DEFAULT_MAX_CONTEXT_LEN,
        help="context tokens kept (the most recent)",
    )
    parser.add_argument(
        "--max-response-len",
        type=int,
        default=DEFAULT_MAX_RESPONSE_LEN,
        help="response tokens kept (the first)",
    )
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip bad rows and count them in the manifest instead of stopping",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing PREPARED")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prepare SETS into PREPARED; returns the exit status."""
    options = PrepareOptions(
        min_frequency=args.min_frequency,
        max_size=args.max_size,
        hash_buckets=args.hash_buckets,
        tokenizer=args.tokenizer,
        lowercase=not args.keep_case,
        max_context_len=args.max_context_len,
        max_response_len=args.max_response_len,
        skip_bad=args.skip_bad_rows,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    prepare(args.sets, args.out, options)
    return 0
