"""Readers of ranking files: UDC v2 CSV and the tab format of Xu et al."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from dualenc.corpus.ranking import (
    EvalExample,
    ReadStats,
    TrainPair,
    read_eval_examples,
    read_train_pairs,
)
from dualenc.errors import DataError

EVAL_HEADER = ["Context", "Ground Truth Utterance", "Distractor_0", "Distractor_1"]


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows(rows)
    return path


def test_reads_the_genuine_udc_rows(shared_data) -> None:
    folder = shared_data / "udc-format"
    pairs = list(read_train_pairs(folder / "train.csv"))
    assert [pair.label for pair in pairs] == [1, 0]
    assert [pair.line for pair in pairs] == [2, 3]
    assert pairs[1].response == "sorri __eou__ i think it be ubuntu relat . __eou__"
    assert pairs[0].context.startswith("i think we could import the old comment via rsync")
    assert pairs[0].context.endswith(" __eot__")
    for name in ("valid.csv", "test.csv"):
        (example,) = read_eval_examples(folder / name)
        assert len(example.candidates) == 10
        assert example.candidates[0] == "nice thank ! __eou__"
        assert example.candidates[-1] == "# ubuntu-offtop __eou__"


def test_reads_labels_in_every_spelling(tmp_path) -> None:
    rows = [["Context", "Utterance", "Label"]] + [
        ["hi __eou__ __eot__ ", "yo __eou__", label] for label in ("1", "0", "1.0", "0.0", " 1 ")
    ]
    pairs = read_train_pairs(write_csv(tmp_path / "train.csv", rows))
    assert [pair.label for pair in pairs] == [1, 0, 1, 0, 1]


def test_column_order_and_multiline_fields(tmp_path) -> None:
    rows = [
        ["Label", "Utterance", "Context"],
        ["1", "a", "first\nsecond __eou__ __eot__ "],  # lines 2-3
        ["0", "b", "third __eou__ __eot__ "],  # line 4
    ]
    pairs = list(read_train_pairs(write_csv(tmp_path / "train.csv", rows)))
    assert pairs == [
        TrainPair("first\nsecond __eou__ __eot__ ", "a", 1, 2),
        TrainPair("third __eou__ __eot__ ", "b", 0, 4),
    ]


def test_eval_csv_with_one_distractor(tmp_path) -> None:
    rows = [["Context", "Ground Truth Utterance", "Distractor_0"], ["c", "truth", "other"]]
    assert list(read_eval_examples(write_csv(tmp_path / "valid.csv", rows))) == [
        EvalExample("c", ["truth", "other"], 2)
    ]


def test_reads_long_contexts(tmp_path) -> None:
    context = "word " * 100_000  # 500 kB, past the csv module's default field limit
    rows = [["Context", "Utterance", "Label"], [context, "ok", "1"]]
    (pair,) = read_train_pairs(write_csv(tmp_path / "train.csv", rows))
    assert pair.context == context


XU_TRAIN = "1\thi there\tany news?\tnot yet\n0\thi there\tany news?\tgrub rescue\n"


def test_xu_train_pairs(tmp_path) -> None:
    path = tmp_path / "train.txt"
    path.write_text(XU_TRAIN, encoding="utf-8")
    context = "hi there __eou__ __eot__ any news? __eou__ __eot__ "
    assert list(read_train_pairs(path)) == [
        TrainPair(context, "not yet", 1, 1),
        TrainPair(context, "grub rescue", 0, 2),
    ]


def xu_group(context: str, truth_at: int, size: int = 10) -> str:
    labels = ["1" if i == truth_at else "0" for i in range(size)]
    return "".join(f"{label}\t{context}\tresponse {i}\n" for i, label in enumerate(labels))


def test_xu_eval_group_puts_the_truth_first(tmp_path) -> None:
    path = tmp_path / "test.tsv"
    path.write_text(xu_group("a\tb", truth_at=3) + xu_group("c", truth_at=0), encoding="utf-8")
    first, second = read_eval_examples(path)
    assert first.context == "a __eou__ __eot__ b __eou__ __eot__ "
    others = [f"response {i}" for i in (0, 1, 2, 4, 5, 6, 7, 8, 9)]
    assert first.candidates == ["response 3", *others]
    assert (first.line, second.line) == (1, 11)
    assert second.candidates == [f"response {i}" for i in range(10)]


def test_xu_eval_group_size(tmp_path) -> None:
    path = tmp_path / "valid.txt"
    path.write_text(xu_group("c", truth_at=1, size=2) * 3, encoding="utf-8")
    examples = list(read_eval_examples(path, group_size=2))
    assert [e.candidates for e in examples] == [["response 1", "response 0"]] * 3


def raises_at(path: Path, line: int, field: str | None, message: str, reader=read_train_pairs):
    with pytest.raises(DataError, match=message) as caught:
        list(reader(path))
    assert (caught.value.path, caught.value.line, caught.value.field) == (str(path), line, field)
    return caught.value


def test_missing_label_column(tmp_path) -> None:
    path = write_csv(tmp_path / "train.csv", [["Context", "Utterance"], ["a", "b"]])
    err = raises_at(path, 1, "Label", "missing column 'Label'")
    assert str(err).startswith(f"{path}, line 1, field 'Label': missing column 'Label'")


def test_missing_distractor_column(tmp_path) -> None:
    header = ["Context", "Ground Truth Utterance", "Distractor_0", "Distractor_2"]
    path = write_csv(tmp_path / "valid.csv", [header, ["a", "b", "c", "d"]])
    raises_at(path, 1, "Distractor_1", "missing column 'Distractor_1'", read_eval_examples)
    path = write_csv(tmp_path / "test.csv", [["Context", "Ground Truth Utterance"], ["a", "b"]])
    raises_at(path, 1, "Distractor_0", "missing column 'Distractor_0'", read_eval_examples)


BAD_TRAIN_ROWS = [
    # (row, field, message); the bad row is always on line 3
    (["a", "b"], "Label", "expected 3 fields, found 2"),
    (["a", "b", "1", "extra"], None, "expected 3 fields, found 4"),
    ([" ", "b", "1"], "Context", "empty context"),
    (["a", "", "1"], "Utterance", "empty response"),
    (["a", "b", "2"], "Label", "label must be 0 or 1"),
    (["a", "b", "yes"], "Label", "found 'yes'"),
]


@pytest.mark.parametrize(("row", "field", "message"), BAD_TRAIN_ROWS)
def test_bad_train_rows(tmp_path, row, field, message) -> None:
    rows = [["Context", "Utterance", "Label"], ["ok", "fine", "1"], row, ["ok", "again", "0"]]
    path = write_csv(tmp_path / "train.csv", rows)
    raises_at(path, 3, field, message)

    stats = ReadStats()
    pairs = list(read_train_pairs(path, skip_bad=True, stats=stats))
    assert [pair.line for pair in pairs] == [2, 4]
    assert (stats.rows, stats.skipped) == (2, 1)
    assert message in stats.errors[0]


def test_bad_eval_rows(tmp_path) -> None:
    rows = [EVAL_HEADER, ["c", "t", "d0", "d1"], ["c", "t", "", "d1"], ["c", "t", "d0"]]
    path = write_csv(tmp_path / "valid.csv", rows)
    raises_at(path, 3, "Distractor_0", "empty response", read_eval_examples)
    stats = ReadStats()
    assert len(list(read_eval_examples(path, skip_bad=True, stats=stats))) == 1
    assert stats.skipped == 2  # the empty distractor and the ragged row


def test_bytes_that_are_not_utf8(tmp_path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(b"Context,Utterance,Label\nok,fine,1\nok,caf\xe9 au lait,0\nok,again,1\n")
    raises_at(path, 3, "Utterance", "not UTF-8")
    stats = ReadStats()
    assert [p.line for p in read_train_pairs(path, skip_bad=True, stats=stats)] == [2, 4]
    assert stats.skipped == 1


def test_header_problems_are_fatal_even_when_skipping(tmp_path) -> None:
    path = write_csv(tmp_path / "train.csv", [["Context", "Response", "Label"], ["a", "b", "1"]])
    with pytest.raises(DataError, match="missing column 'Utterance'"):
        list(read_train_pairs(path, skip_bad=True))
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        list(read_train_pairs(empty, skip_bad=True))


def test_unreadable_and_unknown_files(tmp_path) -> None:
    with pytest.raises(DataError, match="cannot read") as caught:
        list(read_train_pairs(tmp_path / "absent.csv"))
    assert caught.value.path == str(tmp_path / "absent.csv")
    with pytest.raises(DataError, match="extension"):
        list(read_train_pairs(tmp_path / "train.json"))


def test_bad_xu_lines(tmp_path) -> None:
    path = tmp_path / "train.txt"
    path.write_text("1\tctx\tok\n2\tctx\tok\n1\tonly two\n1\tctx\t \n1\t \tresp\n")
    raises_at(path, 2, "label", "label must be 0 or 1")
    stats = ReadStats()
    assert [p.line for p in read_train_pairs(path, skip_bad=True, stats=stats)] == [1]
    assert stats.skipped == 4  # bad label, 2 fields, empty response, empty context
    assert "empty response" in stats.errors[2] and "empty context" in stats.errors[3]

    raw = tmp_path / "bytes.txt"
    raw.write_bytes(b"1\tctx\tok\n0\tctx\t\xff\xfe\n")
    raises_at(raw, 2, "response", "not UTF-8")


def test_bad_xu_groups(tmp_path) -> None:
    path = tmp_path / "valid.txt"
    path.write_text(xu_group("a", truth_at=0, size=3) + xu_group("b", truth_at=9, size=3))
    def reader(p: Path):
        return read_eval_examples(p, group_size=3)

    raises_at(path, 4, "label", "exactly one line labelled 1, found 0", reader)

    mixed = tmp_path / "test.txt"
    mixed.write_text("1\ta\tr0\n0\ta\tr1\n0\tb\tr2\n" + xu_group("c", truth_at=2, size=3))
    with pytest.raises(DataError, match="context changes") as caught:
        list(read_eval_examples(mixed, group_size=3))
    assert (caught.value.line, caught.value.field) == (3, "context")
    stats = ReadStats()
    examples = list(read_eval_examples(mixed, skip_bad=True, stats=stats, group_size=3))
    assert [e.line for e in examples] == [4]
    assert stats.skipped == 1

    short = tmp_path / "short.txt"
    short.write_text(xu_group("a", truth_at=0, size=3) + "1\tb\tr\n")
    with pytest.raises(DataError, match="ends inside a group") as caught:
        list(read_eval_examples(short, group_size=3))
    assert caught.value.line == 4
