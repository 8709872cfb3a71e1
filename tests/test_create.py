"""`dualenc create`: the UDC creator's sampling rules, markers, output files and errors."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import nltk
import pytest

from dualenc.cli import main
from dualenc.corpus.create import (
    CreateOptions,
    context_length,
    context_text,
    create_sets,
    distractor_index,
    draw_distractor,
    gives_distractor,
    turn_text,
)
from dualenc.corpus.nlp import TextProcessor
from dualenc.errors import DualencError

QUIET = {"progress": False}


class ScriptedRng:
    """Stands in for random.Random: records randint bounds, returns scripted values."""

    def __init__(self, values: list[int] | None = None):
        self.values = list(values or [])
        self.calls: list[tuple[int, int]] = []

    def randint(self, low: int, high: int) -> int:
        self.calls.append((low, high))
        return self.values.pop(0) if self.values else low


def write_dialogs(path: Path, splits: dict[str, list[list[list[str]]]]) -> Path:
    """A JSONL file from split -> dialogs, each a list of turns of utterance texts; the two
    speakers alternate turn by turn."""
    with path.open("w", encoding="utf-8") as handle:
        for split, dialogs in splits.items():
            for number, turns in enumerate(dialogs):
                messages = [
                    {"sender": "ab"[t % 2], "text": text}
                    for t, turn in enumerate(turns)
                    for text in turn
                ]
                record = {"id": f"{split}{number}", "split": split, "messages": messages}
                handle.write(json.dumps(record) + "\n")
    return path


def read_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def numbered(dialog: int, n_turns: int) -> list[list[str]]:
    """Turns whose one utterance names its dialog and turn, e.g. "d1t7"."""
    return [[f"d{dialog}t{t}"] for t in range(n_turns)]


# The three-turn dialog A and the two-turn dialog B of most tests below.
A = [['hi, "you"'], ["A2a", "A2b"], ["A3"]]
B = [["B1"], ["B2"]]
A_CONTEXT = 'hi, "you" __eou__ __eot__ A2a __eou__ A2b __eou__ __eot__ '
B_CONTEXT = "B1 __eou__ __eot__ "


def test_marker_spacing():
    assert turn_text(["a"]) == "a __eou__"
    assert turn_text(["a", "b"]) == "a __eou__ b __eou__"
    assert context_text(["a __eou__", "b __eou__ c __eou__"]) == (
        "a __eou__ __eot__ b __eou__ c __eou__ __eot__ "
    )
    assert context_text([]) == ""


@pytest.mark.parametrize(
    ("n_turns", "max_turns", "k", "calls"),
    [
        (3, 20, 2, []),  # m = min(20, 4) - 2 = 2: no draw, the response is the 3rd turn
        (2, 20, 1, []),  # m = min(20, 3) - 2 = 1
        (4, 20, 2, [(2, 3)]),  # m = min(20, 5) - 2 = 3 > 2: uniform in [2, 3], scripted 2
        (30, 20, 2, [(2, 18)]),  # m = min(20, 31) - 2 = 18
        (10, 5, 2, [(2, 3)]),  # m = min(5, 11) - 2 = 3
    ],
)
def test_context_length(n_turns, max_turns, k, calls):
    rng = ScriptedRng()
    assert context_length(n_turns, max_turns, rng) == k
    assert rng.calls == calls


@pytest.mark.parametrize(
    ("n_turns", "max_turns", "index", "calls"),
    [
        (3, 20, 2, []),  # min(20, 3) - 1 = 2: the single point, index 2, no draw
        (4, 20, 3, [(3, 3)]),  # min(20, 4) - 1 = 3
        (30, 20, 3, [(3, 19)]),  # min(20, 30) - 1 = 19, scripted low end 3
        (30, 3, 2, []),  # min(3, 30) - 1 = 2
    ],
)
def test_distractor_index(n_turns, max_turns, index, calls):
    rng = ScriptedRng()
    assert gives_distractor(n_turns, max_turns)
    assert distractor_index(n_turns, max_turns, rng) == index
    assert rng.calls == calls


def test_too_short_for_a_distractor():
    # min(20, 2) - 1 = 1 < 2, and min(2, 30) - 1 = 1.
    assert not gives_distractor(2, 20)
    assert not gives_distractor(30, 2)


def test_short_distractor_dialog_is_redrawn():
    dialogs = [["x __eou__", "y __eou__"], ["a __eou__", "b __eou__", "c __eou__"]]
    rng = ScriptedRng([0, 0, 1])

    # Dialog 0 (two turns) is drawn twice and redrawn; dialog 1 gives its turn 2.
    assert draw_distractor(dialogs, 20, rng) == "c __eou__"
    assert rng.calls == [(0, 1), (0, 1), (0, 1)]


def test_exact_bytes_of_all_positive_sets(tmp_path):
    source = write_dialogs(tmp_path / "d.jsonl", {"train": [A, B], "valid": [A, B], "test": [A]})
    options = CreateOptions(examples=3, positive_probability=1.0, distractors=2, **QUIET)

    report = create_sets(source, tmp_path / "sets", options)

    # p = 1 > u always. A (3 turns) has k = 2, B (2 turns) k = 1; the only distractor is
    # A's turn 2, because B is too short to give one. Commas and quotes are CSV-quoted.
    a_context = '"hi, ""you"" __eou__ __eot__ A2a __eou__ A2b __eou__ __eot__ "'
    assert (tmp_path / "sets" / "train.csv").read_bytes().decode() == (
        "Context,Utterance,Label\n"
        f"{a_context},A3 __eou__,1.0\n"
        "B1 __eou__ __eot__ ,B2 __eou__,1.0\n"
        f"{a_context},A3 __eou__,1.0\n"
    )
    assert (tmp_path / "sets" / "valid.csv").read_text() == (
        "Context,Ground Truth Utterance,Distractor_0,Distractor_1\n"
        f"{a_context},A3 __eou__,A3 __eou__,A3 __eou__\n"
        "B1 __eou__ __eot__ ,B2 __eou__,A3 __eou__,A3 __eou__\n"
    )
    assert report.rows == {"train": 3, "valid": 2, "test": 1}
    assert report.positives == 3


def test_two_turn_dialog_is_never_a_distractor(tmp_path):
    source = write_dialogs(tmp_path / "d.jsonl", {"train": [A, B], "valid": [B, A], "test": [A]})

    report = create_sets(source, tmp_path / "sets", CreateOptions(examples=40, **QUIET))

    train = read_rows(tmp_path / "sets" / "train.csv")[1:]
    for i, (context, response, label) in enumerate(train):
        # Rows cycle A, B, A, ...; a negative is always A's third turn.
        assert context == (A_CONTEXT if i % 2 == 0 else B_CONTEXT)
        truth = "A3 __eou__" if i % 2 == 0 else "B2 __eou__"
        assert (response, label) in ((truth, "1.0"), ("A3 __eou__", "0.0"))
    assert {label for _, _, label in train} == {"1.0", "0.0"}
    assert report.positives == sum(label == "1.0" for _, _, label in train)

    valid = read_rows(tmp_path / "sets" / "valid.csv")
    assert valid[1] == [B_CONTEXT, "B2 __eou__"] + ["A3 __eou__"] * 9
    assert valid[2] == [A_CONTEXT, "A3 __eou__"] + ["A3 __eou__"] * 9


def expected_distractor(dialogs, rng):
    """The distractor rule, spelled out draw by draw."""
    while True:
        chosen = rng.randint(0, len(dialogs) - 1)
        last = min(20, len(dialogs[chosen])) - 1
        if last >= 2:
            index = 2 if last == 2 else rng.randint(3, last)
            return f"d{chosen}t{index} __eou__"


def expected_context(turns, rng):
    m = min(20, len(turns) + 1) - 2
    k = m if m <= 2 else rng.randint(2, m)
    return "".join(f"{text} __eou__ __eot__ " for (text,) in turns[:k]), k


def test_draw_order(tmp_path):
    # 6, 25, 2 and 4 turns: long ones hit the bound of 20, the two-turn one is redrawn.
    dialogs = [numbered(0, 6), numbered(1, 25), numbered(2, 2), numbered(3, 4)]
    source = write_dialogs(
        tmp_path / "d.jsonl", {"train": dialogs, "valid": dialogs, "test": dialogs[:1]}
    )
    create_sets(source, tmp_path / "sets", CreateOptions(examples=60, seed=5, **QUIET))

    # Train: context k, then u, then for a negative the dialog draw(s) and the turn draw.
    rng = random.Random(5)
    expected = [["Context", "Utterance", "Label"]]
    for i in range(60):
        turns = dialogs[i % 4]
        context, k = expected_context(turns, rng)
        if 0.5 > rng.random():
            expected.append([context, f"{turns[k][0]} __eou__", "1.0"])
        else:
            expected.append([context, expected_distractor(dialogs, rng), "0.0"])
    assert read_rows(tmp_path / "sets" / "train.csv") == expected

    # Valid: context k, then for each distractor the dialog draw(s) and the turn draw.
    rng = random.Random(5)
    rows = read_rows(tmp_path / "sets" / "valid.csv")[1:]
    for row, turns in zip(rows, dialogs, strict=True):
        context, k = expected_context(turns, rng)
        distractors = [expected_distractor(dialogs, rng) for _ in range(9)]
        assert row == [context, f"{turns[k][0]} __eou__", *distractors]
    assert not any(text.startswith("d2t") for row in rows for text in row[2:])


def test_one_turn_dialogs_are_left_out(tmp_path):
    source = write_dialogs(
        tmp_path / "d.jsonl", {"train": [A, [["alone"]]], "valid": [A], "test": [A]}
    )
    report = create_sets(source, tmp_path / "sets", CreateOptions(examples=4, **QUIET))

    assert report.dialogs == {"train": 1, "valid": 1, "test": 1}
    assert report.skipped == {"train": 1, "valid": 0, "test": 0}
    contexts = [row[0] for row in read_rows(tmp_path / "sets" / "train.csv")[1:]]
    assert contexts == [A_CONTEXT] * 4


def test_no_dialog_can_give_a_distractor(tmp_path):
    source = write_dialogs(tmp_path / "d.jsonl", {"train": [B, B], "valid": [A], "test": [A]})

    with pytest.raises(DualencError, match="no dialog of the train split can give a distractor"):
        create_sets(source, tmp_path / "sets", CreateOptions(examples=4, **QUIET))
    assert not (tmp_path / "sets").exists()

    # All-positive pairs need no distractor.
    options = CreateOptions(examples=4, positive_probability=1.0, **QUIET)
    assert create_sets(source, tmp_path / "sets", options).rows["train"] == 4


def test_invalid_options_are_reported_together(tmp_path):
    options = CreateOptions(
        examples=-1, positive_probability=1.5, distractors=-2, max_context_turns=2
    )
    assert len(options.problems()) == 4
    with pytest.raises(DualencError, match="examples.*\n.*probability.*\n.*distractors"):
        create_sets("embedded", tmp_path / "sets", options)


def test_stemming_exact_values(tmp_path):
    dialog = [["The cats were jumping"], ["Connections generously"], ["Running"]]
    source = write_dialogs(tmp_path / "d.jsonl", {s: [dialog] for s in ("train", "valid", "test")})
    options = CreateOptions(examples=1, positive_probability=1.0, stem=True, **QUIET)

    create_sets(source, tmp_path / "sets", options)

    # Snowball lowercases; markers are added after stemming, so they stay intact.
    assert read_rows(tmp_path / "sets" / "train.csv")[1] == [
        "the cat were jump __eou__ __eot__ connect generous __eou__ __eot__ ",
        "run __eou__",
        "1.0",
    ]
    assert TextProcessor()("Keep  as  is") == "Keep  as  is"
    assert TextProcessor(stem=True)("  spaced   out ") == "space out"


@pytest.fixture
def no_nltk_data(tmp_path, monkeypatch):
    """Point NLTK at an empty folder, so no resource is found wherever the tests run."""
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "no-nltk-data")])


@pytest.mark.parametrize(
    ("flags", "packages"),
    [
        (["--tokenize"], "punkt_tab"),
        (["--lemmatize"], "wordnet"),
        (["-t", "-s", "-l"], "punkt_tab wordnet"),
    ],
)
def test_missing_nltk_resource(tmp_path, capsys, no_nltk_data, flags, packages):
    source = write_dialogs(tmp_path / "d.jsonl", {s: [A] for s in ("train", "valid", "test")})
    out = tmp_path / "sets"

    assert main(["create", str(source), "--out", str(out), "--no-progress", *flags]) == 1

    err = capsys.readouterr().err
    for package in packages.split():
        assert f"needs the NLTK data package {package!r}" in err
    assert f"python -m nltk.downloader {packages}" in err
    assert not out.exists()


def test_existing_output_folder(tmp_path, capsys):
    source = write_dialogs(tmp_path / "d.jsonl", {s: [A] for s in ("train", "valid", "test")})
    out = tmp_path / "sets"
    out.mkdir()  # empty: fine
    args = ["create", str(source), "--out", str(out), "-e", "2", "--no-progress"]

    assert main(args) == 0
    assert main(args) == 1
    assert "not empty (pass --overwrite" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--seed", "9"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test.csv", "train.csv", "valid.csv"]


def test_cli_on_real_data_counts_and_reproducibility(tmp_path, shared_data):
    def create(name: str, seed: int) -> Path:
        out = tmp_path / name
        args = ["create", str(shared_data / "ubuntu-irc"), "--out", str(out)]
        assert main([*args, "--examples", "2000", "--seed", str(seed), "--no-progress"]) == 0
        return out

    first, again, other = create("a", 1234), create("b", 1234), create("c", 99)

    # One eval row a dialog (343 valid, 387 test), 2000 training pairs, plus headers.
    assert len(read_rows(first / "train.csv")) == 1 + 2000
    assert len(read_rows(first / "valid.csv")) == 1 + 343
    assert len(read_rows(first / "test.csv")) == 1 + 387
    assert read_rows(first / "valid.csv")[0][-1] == "Distractor_8"
    for name in ("train.csv", "valid.csv", "test.csv"):
        assert (first / name).read_bytes() == (again / name).read_bytes()
        assert (first / name).read_bytes() != (other / name).read_bytes()
    context, response, _ = read_rows(first / "train.csv")[1]
    assert context.startswith("I popped in earlier") and context.endswith(" __eou__ __eot__ ")
    assert response.endswith(" __eou__") and "__eot__" not in response
