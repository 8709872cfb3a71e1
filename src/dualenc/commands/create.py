"""`dualenc create`: dialogs -> UDC v2 train.csv, valid.csv and test.csv."""

from __future__ import annotations

import argparse

from dualenc.corpus.create import CreateOptions, create_sets

DESCRIPTION = """\
Sample UDC v2 ranking sets from dialogs the way the Ubuntu Dialogue Corpus creator does:
train.csv holds (context, response, label) pairs, valid.csv and test.csv one row a dialog
with its true next turn and distractors taken from other dialogs of the same split.

DIALOGS is one of:
  a folder in the UDC 1.0 raw layout: dialogs/<folder>/<id>.tsv files of
      "timestamp TAB sender TAB recipient TAB text" lines, beside the list files
      trainfiles.csv, valfiles.csv and testfiles.csv of "<id>.tsv,<folder>" lines;
  a .jsonl file, one dialog a line:
      {"id": ..., "split": "train"|"valid"|"test", "messages": [{"sender": ..., "text": ...}]}
      (dialogs without "split" are split 80/10/10 by a shuffle seeded with --seed);
  the word "embedded": the chit-chat corpus of the chitchat-dataset package, split
      80/10/10 by a shuffle seeded with --seed (write ./embedded for a folder of that name).
"""


# (flags, CreateOptions field, metavar, type, help): the options that take a number.
NUMBER_OPTIONS = [
    (("-e", "--examples"), "examples", "N", int, "training pairs to write"),
    (
        ("-p", "--positive-probability"),
        "positive_probability",
        "P",
        float,
        "chance that a training response is the true next turn",
    ),
    (("-n", "--distractors"), "distractors", "N", int, "distractors per valid/test context"),
    (
        ("--max-context-turns",),
        "max_context_turns",
        "N",
        int,
        "bound on context turns and on the turn distractors come from",
    ),
    (("--seed",), "seed", "N", int, "seed of every random draw; equal seeds give equal bytes"),
]

FLAG_OPTIONS = [
    (("-t", "--tokenize"), "tokenize utterances with NLTK word_tokenize (needs punkt_tab)"),
    (("-s", "--stem"), "stem tokens with NLTK's English Snowball stemmer"),
    (
        ("-l", "--lemmatize"),
        "replace tokens by WordNet verb lemmas, after stemming (needs wordnet)",
    ),
    (("--overwrite",), "replace SETS if it exists and is not empty"),
    (("--no-progress",), "hide the progress bar"),
]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `create` subcommand."""
    parser = subparsers.add_parser(
        "create",
        help="dialogs -> UDC v2 train/valid/test ranking sets",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "dialogs", metavar="DIALOGS", help="a UDC folder, a .jsonl file, or embedded"
    )
    parser.add_argument("--out", required=True, metavar="SETS", help="the folder to write")
    defaults = CreateOptions()
    for flags, field, metavar, kind, text in NUMBER_OPTIONS:
        parser.add_argument(
            *flags,
            dest=field,
            metavar=metavar,
            type=kind,
            default=getattr(defaults, field),
            help=f"{text} (default: %(default)s)",
        )
    for flags, text in FLAG_OPTIONS:
        parser.add_argument(*flags, action="store_true", help=text)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Create the ranking sets the parsed arguments ask for; returns the exit status."""
    options = CreateOptions(
        examples=args.examples,
        positive_probability=args.positive_probability,
        distractors=args.distractors,
        max_context_turns=args.max_context_turns,
        seed=args.seed,
        tokenize=args.tokenize,
        stem=args.stem,
        lemmatize=args.lemmatize,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    create_sets(args.dialogs, args.out, options)
    return 0
