"""Dialog readers: the UDC 1.0 raw layout, JSON Lines and the embedded corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dualenc.corpus.dialogs import (
    group_turns,
    read_dialog_source,
    read_embedded,
    split_by_shuffle,
)
from dualenc.errors import DataError


def write_udc(root: Path, dialogs: dict[str, bytes], lists: dict[str, str] | None = None) -> Path:
    """A UDC folder: `dialogs` maps "<folder>/<id>.tsv" to file bytes; lists default to
    every dialog in train.csv and none in the others."""
    for name, data in dialogs.items():
        path = root / "dialogs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if lists is None:
        lines = "".join(f"{name.split('/')[1]},{name.split('/')[0]}\n" for name in dialogs)
        lists = {"trainfiles.csv": lines, "valfiles.csv": "", "testfiles.csv": ""}
    for list_name, text in lists.items():
        (root / list_name).write_text(text, encoding="utf-8")
    return root


def tsv(*lines: tuple[str, str, str]) -> bytes:
    """Dialog file bytes from (sender, recipient, text) triples."""
    return "".join(f"2024-01-01T00:00:00Z\t{s}\t{r}\t{t}\n" for s, r, t in lines).encode()


def test_group_turns_joins_consecutive_messages_of_one_sender():
    pairs = [("a", "1"), ("a", "2"), ("b", "3"), ("a", "4"), ("a", "5")]
    assert group_turns(pairs) == [["1", "2"], ["3"], ["4", "5"]]
    assert group_turns([]) == []


def test_udc_folder_turns_and_tabs_in_text(tmp_path):
    data = tsv(
        ("ann", "", "hi"), ("ann", "", "any\there?"), ("bob", "ann", "yes"), ("ann", "", "ok")
    )
    lists = {"trainfiles.csv": "  7.tsv , 3 \n\n", "valfiles.csv": "7.tsv,3\n", "testfiles.csv": ""}
    root = write_udc(tmp_path, {"3/7.tsv": data}, lists)

    splits = read_dialog_source(root)

    # The list line is stripped, its blank line skipped; the 4th field keeps its inner tab.
    assert [d.id for d in splits["train"]] == ["3/7.tsv"]
    assert splits["train"][0].turns == [["hi", "any\there?"], ["yes"], ["ok"]]
    assert len(splits["valid"]) == 1 and splits["test"] == []


def test_udc_folder_real_data(shared_data):
    splits = read_dialog_source(shared_data / "ubuntu-irc")

    assert {split: len(dialogs) for split, dialogs in splits.items()} == {
        "train": 2580,
        "valid": 343,
        "test": 387,
    }
    assert min(len(d.turns) for dialogs in splits.values() for d in dialogs) >= 3
    first = splits["train"][0]
    assert first.id == "3/1.tsv"
    assert len(first.turns[0]) == 4  # Xophe's four opening lines
    assert first.turns[1] == ["you'll need to build an initrd"]
    assert first.turns[2] == ["oh, damn", "of course"]


@pytest.mark.parametrize(
    ("data", "line", "field"),
    [
        # A Latin-1 "é" in the text of line 2, and one in the sender of line 1.
        (tsv(("ann", "", "hi")) + b"t\tbob\t\tcaf\xe9\n", 2, "text"),
        (b"t\tJos\xe9\t\thi\n", 1, "sender"),
        # Three fields: the text is the one missing.
        (tsv(("ann", "", "hi")) + b"t\tbob\tann\n", 2, "text"),
        (b"t\tann\n", 1, "recipient"),
        (tsv(("ann", "", "hi"), ("bob", "", "yo")) + b"t\t\t\tnobody\n", 3, "sender"),
    ],
    ids=["utf8-text", "utf8-sender", "three-fields", "two-fields", "empty-sender"],
)
def test_udc_bad_dialog_file_names_file_line_and_field(tmp_path, data, line, field):
    root = write_udc(tmp_path, {"3/1.tsv": data})

    with pytest.raises(DataError) as caught:
        read_dialog_source(root)

    assert caught.value.path == str(root / "dialogs" / "3" / "1.tsv")
    assert (caught.value.line, caught.value.field) == (line, field)
    assert f"line {line}, field {field!r}" in str(caught.value)


def test_udc_missing_dialog_file_is_blamed_on_its_list_line(tmp_path):
    lists = {"trainfiles.csv": "1.tsv,3\n2.tsv,3\n", "valfiles.csv": "", "testfiles.csv": ""}
    root = write_udc(tmp_path, {"3/1.tsv": tsv(("ann", "", "hi"))}, lists)

    with pytest.raises(DataError) as caught:
        read_dialog_source(root)

    assert caught.value.path == str(root / "trainfiles.csv")
    assert (caught.value.line, caught.value.field) == (2, "file")
    assert str(root / "dialogs" / "3" / "2.tsv") in caught.value.message


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [("1.tsv,3\n1.tsv\n", 2, "file"), ("1.tsv,3,x\n", 1, "file"), ("1.tsv,..\n", 1, "folder")],
    ids=["one-field", "three-fields", "parent-folder"],
)
def test_udc_malformed_list_line(tmp_path, text, line, field):
    lists = {"trainfiles.csv": "1.tsv,3\n", "valfiles.csv": text, "testfiles.csv": ""}
    root = write_udc(tmp_path, {"3/1.tsv": tsv(("ann", "", "hi"))}, lists)

    with pytest.raises(DataError) as caught:
        read_dialog_source(root)

    assert caught.value.path == str(root / "valfiles.csv")
    assert (caught.value.line, caught.value.field) == (line, field)


def test_udc_missing_list_file(tmp_path):
    root = write_udc(tmp_path, {"3/1.tsv": tsv(("ann", "", "hi"))})
    (root / "testfiles.csv").unlink()

    with pytest.raises(DataError, match="no such list file") as caught:
        read_dialog_source(root)
    assert caught.value.path == str(root / "testfiles.csv")


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def chat(*senders_texts: str, **extra) -> dict:
    """A JSONL dialog from "sender:text" strings."""
    messages = [
        dict(zip(("sender", "text"), st.split(":", 1), strict=True)) for st in senders_texts
    ]
    return {"messages": messages, **extra}


def test_jsonl_explicit_splits_and_turns(tmp_path):
    records = [
        chat("a:hi", "a:there", "b:yo", id="one", split="valid"),
        chat("b:x", "a:y", split="test"),
        chat("a:1", "b:2", "a:3", id="three", split="train"),
    ]
    path = write_jsonl(tmp_path / "logs.jsonl", records)

    splits = read_dialog_source(path)

    assert [(d.id, d.turns) for d in splits["valid"]] == [("one", [["hi", "there"], ["yo"]])]
    assert [(d.id, d.turns) for d in splits["test"]] == [("line 2", [["x"], ["y"]])]
    assert [d.id for d in splits["train"]] == ["three"]


def test_jsonl_unsplit_dialogs_are_split_by_a_seeded_shuffle(tmp_path):
    records = [chat("a:hi", "b:yo", id=f"d{i}") for i in range(10)]
    path = write_jsonl(tmp_path / "logs.jsonl", records)

    first = read_dialog_source(path, seed=7)
    again = read_dialog_source(path, seed=7)
    other = read_dialog_source(path, seed=8)

    def ids(splits):
        return {split: [d.id for d in dialogs] for split, dialogs in splits.items()}

    # 10 dialogs: 10 * 8 // 10 = 8 train, (10 - 8) // 2 = 1 valid, 1 test.
    assert [len(d) for d in first.values()] == [8, 1, 1]
    assert ids(first) == ids(again)
    assert ids(first) != ids(other)
    # Each split keeps file order.
    assert ids(first)["train"] == sorted(ids(first)["train"], key=lambda i: int(i[1:]))


def test_split_by_shuffle_sizes():
    assert [split_by_shuffle(7168, 1).count(s) for s in ("train", "valid", "test")] == [
        5734,  # 7168 * 8 // 10
        717,  # (7168 - 5734) // 2
        717,  # the rest
    ]


@pytest.mark.parametrize(
    ("line", "line_no", "field"),
    [
        ('{"messages": [}', 2, None),
        ("[1, 2]", 2, None),
        ('{"id": "x"}', 2, "messages"),
        ('{"messages": {"sender": "a"}}', 2, "messages"),
        ('{"messages": [{"sender": "a", "text": "t"}, {"text": "t"}]}', 2, "messages[1].sender"),
        ('{"messages": [{"sender": "a", "text": 5}]}', 2, "messages[0].text"),
        ('{"messages": [{"sender": "", "text": "t"}]}', 2, "messages[0].sender"),
        ('{"messages": ["hello"]}', 2, "messages[0]"),
        ('{"split": "dev", "messages": []}', 2, "split"),
        ('{"id": 3, "messages": []}', 2, "id"),
    ],
    ids=[
        "bad-json",
        "not-object",
        "no-messages",
        "messages-not-list",
        "no-sender",
        "text-not-string",
        "empty-sender",
        "message-not-object",
        "bad-split",
        "id-not-string",
    ],
)
def test_jsonl_bad_line_names_file_line_and_field(tmp_path, line, line_no, field):
    path = tmp_path / "logs.jsonl"
    path.write_text('{"messages": []}\n' + line + "\n", encoding="utf-8")

    with pytest.raises(DataError) as caught:
        read_dialog_source(path)

    assert caught.value.path == str(path)
    assert (caught.value.line, caught.value.field) == (line_no, field)


def test_jsonl_non_utf8_bytes(tmp_path):
    path = tmp_path / "logs.jsonl"
    path.write_bytes(b'\n{"messages": [{"sender": "a", "text": "caf\xe9"}]}\n')

    # '{"messages": [{"sender": "a", "text": "' is 39 characters, "caf" 3 more: é is 43rd.
    with pytest.raises(DataError, match="0xe9 at column 43 is not valid UTF-8") as caught:
        read_dialog_source(path)
    assert caught.value.line == 2


def test_unknown_source(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        read_dialog_source(tmp_path / "nothing.jsonl")


def test_embedded_corpus_loads_and_splits_reproducibly():
    first = read_embedded(seed=1234)
    again = read_dialog_source("embedded", seed=1234)
    other = read_embedded(seed=99)

    assert sum(len(dialogs) for dialogs in first.values()) == 7168
    assert [len(first[s]) for s in ("train", "valid", "test")] == [5734, 717, 717]
    assert [d.id for d in first["valid"]] == [d.id for d in again["valid"]]
    assert [d.id for d in first["valid"]] != [d.id for d in other["valid"]]
    assert first["valid"][0] == again["valid"][0]
    # Every turn is a non-empty list of texts.
    assert all(
        turn and all(isinstance(t, str) for t in turn) for d in first["test"] for turn in d.turns
    )
