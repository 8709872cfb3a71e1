"""`dualenc demo`: the whole flow on the embedded corpus in a few minutes on a CPU."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)

# The small-data preset with half its units (twice as fast), validated every 100 steps and
# trained for --steps without stopping.
DEMO_OVERRIDES = {"hidden_dim": 200, "eval_every": 100, "patience": 0}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="create, prepare, train and evaluate on the embedded corpus",
        description="Runs the whole flow on the conversations bundled with the chitchat-dataset "
        "package: create ranking sets, prepare them, train a small dual encoder for a few "
        "minutes, evaluate it beside random, TF-IDF and BM25, and rank a few test contexts.",
    )
    p.add_argument("--out", type=Path, default=Path("dualenc-demo"),
                   help="folder for the sets, prepared arrays and run (default dualenc-demo)")
    p.add_argument("--examples", type=int, default=50_000, help="training pairs (default 50000)")
    p.add_argument("--steps", type=int, default=900, help="training steps (default 900)")
    p.add_argument("--seed", type=int, default=1234, help="one seed for everything (default 1234)")
    p.add_argument("--show", type=int, default=3, help="test contexts to show ranked (default 3)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=run)


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    from dualenc.commands.train import COMMAND_DEFAULTS, PRESETS, resolve_auto, split_settings
    from dualenc.corpus.create import CreateOptions, create_sets
    from dualenc.prepare import PrepareOptions, prepare
    from dualenc.train import train

    out: Path = args.out
    sets, prepared, run_dir = out / "sets", out / "prepared", out / "run"

    start = _stage("create: the embedded corpus -> train/valid/test ranking sets")
    options = CreateOptions(
        examples=args.examples, seed=args.seed, overwrite=True, progress=args.progress
    )
    create_sets("embedded", sets, options)

    _stage("prepare: vocabulary and memory-mapped id arrays")
    manifest = prepare(sets, prepared, PrepareOptions(overwrite=True, progress=args.progress))
    print(f"vocabulary {manifest['vocab_size']:,} tokens; files in {prepared}")

    _stage(f"train: {args.steps} steps of a dual encoder "
           "(bidirectional LSTM, in-batch loss, GloVe 50-d)")
    settings = {**COMMAND_DEFAULTS, **PRESETS["small-data"], **DEMO_OVERRIDES,
                "max_steps": args.steps}
    settings["seed"] = args.seed
    settings = resolve_auto({**settings, "progress": args.progress})
    model_config, train_config = split_settings(settings)
    summary = train(prepared, run_dir, model_config, train_config, overwrite=True)
    print(f"best validation R@1/10 {summary['best_R@1/10']:.3f} at step {summary['best_step']}")

    _stage("evaluate: the best checkpoint beside the baselines, on the test set")
    print(_results(run_dir, sets, args.seed))

    _stage("rank: test contexts with their candidates, best first")
    _show_examples(run_dir, sets / "test.csv", args.show)
    print(f"\ndone in {time.perf_counter() - start:.0f} s; everything is in {out}/")
    return 0


def _results(run_dir: Path, sets: Path, seed: int) -> str:
    from dualenc.baselines import make_baseline
    from dualenc.evaluate import evaluate_file, results_table
    from dualenc.ranker import Ranker
    from dualenc.text import Tokenizer

    rows = {}
    for name in ("random", "tfidf", "bm25"):
        scorer = make_baseline(name, sets / "train.csv", Tokenizer(), seed)
        rows[name] = evaluate_file(scorer, sets / "test.csv")
    rows["dual encoder"] = evaluate_file(Ranker.load(run_dir), sets / "test.csv")
    return results_table(rows)


def _show_examples(run_dir: Path, test_file: Path, count: int) -> None:
    from dualenc.corpus.ranking import read_eval_examples
    from dualenc.ranker import Ranker

    ranker = Ranker.load(run_dir)
    for number, example in enumerate(read_eval_examples(test_file)):
        if number == count:
            break
        turns = [t.strip() for t in example.context.split("__eot__") if t.strip()]
        print(f"\ncontext (last turns of {len(turns)}):")
        for turn in turns[-3:]:
            print(f"  > {turn.replace(' __eou__', '').strip()}")
        for place, cand in enumerate(ranker.rank(example.context, example.candidates), 1):
            mark = "*" if cand.index == 0 else " "
            text = cand.text.replace(" __eou__", "").strip()
            print(f"  {place:2d}. {mark} {cand.logit:7.2f}  {text[:90]}")
    print("\n(* marks the true response)")
