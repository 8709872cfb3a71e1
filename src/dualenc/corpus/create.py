"""Dialogs -> UDC v2 ranking sets, sampled the way the UDC creator samples them.

Lowe et al. 2015 ("The Ubuntu Dialogue Corpus", arXiv 1506.08909) build training pairs of a
context and a response that is either the true next turn (label 1) or a turn of a random
dialog (label 0), and evaluation rows of a context, its true next turn and n distractors.
This module follows the creator's draws one for one, with its crash on a distractor dialog
too short to give a turn replaced by a redraw.
"""

from __future__ import annotations

import csv
import logging
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from dualenc.corpus.dialogs import SPLITS, read_dialog_source
from dualenc.corpus.nlp import TextProcessor, check_resources
from dualenc.errors import DualencError
from dualenc.fileio import atomic_dir

logger = logging.getLogger(__name__)

EOU = " __eou__"  # after every utterance
EOT = " __eot__ "  # after every context turn
MIN_CONTEXT_TURNS = 2  # the creator's minimum_context_length
MIN_DISTRACTOR_INDEX = MIN_CONTEXT_TURNS + 1  # distractors come from turn 3 on, or turn 2
TRAIN_HEADER = ["Context", "Utterance", "Label"]

# A dialog ready for sampling: one string a turn, markers and text processing applied.
Turns = list[str]


@dataclass(frozen=True)
class CreateOptions:
    """How `create_sets` samples and writes; the defaults are the UDC creator's."""

    examples: int = 1_000_000  # training pairs to write, cycling through the dialogs
    positive_probability: float = 0.5  # chance a training response is the true next turn
    distractors: int = 9  # wrong candidates per valid/test context
    max_context_turns: int = 20  # the creator's max_context_length: bounds contexts and
    # the turn a distractor is taken from
    seed: int = 1234  # seeds each output file's generator, so output is reproducible
    tokenize: bool = False  # NLTK word_tokenize each utterance
    stem: bool = False  # Snowball (English) stem each token
    lemmatize: bool = False  # WordNet verb lemma of each token, after stemming
    overwrite: bool = False  # replace an existing non-empty output folder
    progress: bool = True  # show a progress bar on stderr

    def problems(self) -> list[str]:
        """Every invalid value, described; empty when the options are usable."""
        found = []
        if self.examples < 0:
            found.append(f"examples must be >= 0, not {self.examples}")
        if not 0.0 <= self.positive_probability <= 1.0:
            found.append(f"positive probability must be in [0, 1], not {self.positive_probability}")
        if self.distractors < 0:
            found.append(f"distractors must be >= 0, not {self.distractors}")
        if self.max_context_turns < MIN_DISTRACTOR_INDEX:
            found.append(
                f"max context turns must be >= {MIN_DISTRACTOR_INDEX} (distractors come "
                f"from turn index 2 on), not {self.max_context_turns}"
            )
        return found


@dataclass
class CreateReport:
    """What `create_sets` wrote: the folder and the counts per split."""

    out: Path
    dialogs: dict[str, int] = field(default_factory=dict)  # split -> dialogs sampled from
    skipped: dict[str, int] = field(default_factory=dict)  # split -> dialogs under 2 turns
    rows: dict[str, int] = field(default_factory=dict)  # split -> data rows written
    positives: int = 0  # training pairs with label 1

    def summary(self) -> str:
        """One line of counts, for logs and the demo."""
        rows = ", ".join(f"{split} {self.rows[split]:,}" for split in self.rows)
        dialogs = ", ".join(f"{split} {n:,}" for split, n in self.dialogs.items())
        line = f"wrote {self.out}: rows {rows} ({self.positives:,} positive pairs); dialogs "
        line += dialogs
        if any(self.skipped.values()):
            line += f"; skipped under 2 turns: {sum(self.skipped.values()):,}"
        return line


def turn_text(utterances: Sequence[str]) -> str:
    """One turn as the corpus writes it: each utterance followed by " __eou__", space-joined."""
    return " ".join(utterance + EOU for utterance in utterances)


def context_text(turns: Sequence[str]) -> str:
    """A context from turn strings: each followed by " __eot__ " (so it ends in a space)."""
    return "".join(turn + EOT for turn in turns)


def context_length(n_turns: int, max_turns: int, rng: random.Random) -> int:
    """How many leading turns form the context; turn `k` itself is the true response.

    The creator counts a closing end-of-dialog turn, hence `n_turns + 1`. Draws from `rng`
    only when there is a choice.
    """
    bound = min(max_turns, n_turns + 1) - 2
    if bound <= MIN_CONTEXT_TURNS:
        return bound
    return rng.randint(MIN_CONTEXT_TURNS, bound)


def gives_distractor(n_turns: int, max_turns: int) -> bool:
    """Whether a dialog of `n_turns` turns has a turn the distractor rule may take."""
    return min(max_turns, n_turns) - 1 >= MIN_CONTEXT_TURNS


def distractor_index(n_turns: int, max_turns: int, rng: random.Random) -> int:
    """The turn a distractor is taken from, for a dialog where `gives_distractor` holds."""
    last = min(max_turns, n_turns) - 1
    if last == MIN_CONTEXT_TURNS:
        return last
    return rng.randint(MIN_DISTRACTOR_INDEX, last)


def draw_distractor(dialogs: Sequence[Turns], max_turns: int, rng: random.Random) -> str:
    """A turn of a uniformly drawn dialog; dialogs too short to give one are redrawn.

    The caller makes sure that at least one dialog can give a turn.
    """
    while True:
        turns = dialogs[rng.randint(0, len(dialogs) - 1)]
        if gives_distractor(len(turns), max_turns):
            return turns[distractor_index(len(turns), max_turns, rng)]


def create_sets(source: str | Path, out: str | Path, options: CreateOptions) -> CreateReport:
    """Read dialogs and write UDC v2 `train.csv`, `valid.csv` and `test.csv` into `out`.

    Dialogs of fewer than 2 turns give no context and response, and are left out.

    Args:
        source: what `read_dialog_source` reads: a UDC folder, a .jsonl file or "embedded".
        out: the folder to create; it appears only once all three files are complete.
        options: sampling and output choices.

    Returns:
        The counts written.
    """
    out = Path(out)
    problems = options.problems()
    if problems:
        raise DualencError("invalid create options:\n  " + "\n  ".join(problems))
    check_resources(tokenize=options.tokenize, lemmatize=options.lemmatize)
    replace = check_out(out, options.overwrite)

    # Every dialog becomes its list of finished turn strings, once.
    splits = read_dialog_source(source, seed=options.seed)
    process = TextProcessor(options.tokenize, options.stem, options.lemmatize)
    report = CreateReport(out=out)
    ready = {}
    for split in SPLITS:
        ready[split] = [
            [turn_text([process(text) for text in turn]) for turn in dialog.turns]
            for dialog in splits[split]
            if len(dialog.turns) >= MIN_CONTEXT_TURNS
        ]
        report.dialogs[split] = len(ready[split])
        report.skipped[split] = len(splits[split]) - len(ready[split])
        check_split(split, ready[split], options)

    with atomic_dir(out, overwrite=replace) as tmp:
        rows, report.positives = write_train(tmp / "train.csv", ready["train"], options)
        report.rows["train"] = rows
        for split in ("valid", "test"):
            report.rows[split] = write_eval(tmp / f"{split}.csv", split, ready[split], options)
    logger.info("%s", report.summary())
    return report


def check_out(out: Path, overwrite: bool) -> bool:
    """Refuse an output path that is a file, or a non-empty folder unless `overwrite`.

    Returns whether an existing (empty or overwritable) folder is to be replaced.
    """
    if not out.exists():
        return False
    if not out.is_dir():
        raise DualencError(f"{out} exists and is not a folder")
    if any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass --overwrite to replace it)")
    return True


def check_split(split: str, dialogs: list[Turns], options: CreateOptions) -> None:
    """Fail before writing where a split cannot give its rows or their distractors."""
    if not dialogs:
        if split == "train" and options.examples > 0:
            raise DualencError("the train split has no dialog of 2 or more turns to sample from")
        logger.warning("the %s split has no dialog of 2 or more turns: no rows", split)
        return
    if split == "train":
        needs_distractors = options.examples > 0 and options.positive_probability < 1.0
    else:
        needs_distractors = options.distractors > 0
    limit = options.max_context_turns
    if needs_distractors and not any(gives_distractor(len(t), limit) for t in dialogs):
        raise DualencError(
            f"no dialog of the {split} split can give a distractor: one needs at least "
            f"{MIN_DISTRACTOR_INDEX} turns"
        )


def progress_bar(total: int, desc: str, options: CreateOptions) -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit=" rows",
        file=sys.stderr,
        disable=not options.progress,
        mininterval=0.5,
    )


def csv_writer(handle):
    return csv.writer(handle, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")


def write_train(path: Path, dialogs: list[Turns], options: CreateOptions) -> tuple[int, int]:
    """Write `options.examples` training pairs; returns (rows, positive rows)."""
    rng = random.Random(options.seed)
    limit = options.max_context_turns
    positives = 0
    with (
        path.open("w", encoding="utf-8", newline="") as handle,
        progress_bar(options.examples, "train", options) as bar,
    ):
        writer = csv_writer(handle)
        writer.writerow(TRAIN_HEADER)
        for i in range(options.examples):
            turns = dialogs[i % len(dialogs)]
            k = context_length(len(turns), limit, rng)
            if options.positive_probability > rng.random():
                response, label = turns[k], "1.0"
                positives += 1
            else:
                response, label = draw_distractor(dialogs, limit, rng), "0.0"
            writer.writerow((context_text(turns[:k]), response, label))
            bar.update()
    return options.examples, positives


def write_eval(path: Path, split: str, dialogs: list[Turns], options: CreateOptions) -> int:
    """Write one row a dialog: context, true next turn, `options.distractors` distractors."""
    rng = random.Random(options.seed)
    limit = options.max_context_turns
    header = ["Context", "Ground Truth Utterance"]
    header += [f"Distractor_{i}" for i in range(options.distractors)]
    with (
        path.open("w", encoding="utf-8", newline="") as handle,
        progress_bar(len(dialogs), split, options) as bar,
    ):
        writer = csv_writer(handle)
        writer.writerow(header)
        for turns in dialogs:
            k = context_length(len(turns), limit, rng)
            row = [context_text(turns[:k]), turns[k]]
            row += [draw_distractor(dialogs, limit, rng) for _ in range(options.distractors)]
            writer.writerow(row)
            bar.update()
    return len(dialogs)
