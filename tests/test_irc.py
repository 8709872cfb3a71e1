"""Day-log parsing and `dualenc dialogs` end to end, on logs written in the test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dualenc.cli import main
from dualenc.corpus.dialogs import read_dialog_source
from dualenc.corpus.disentangle import NickChange, read_links
from dualenc.corpus.irc import BuildOptions, build_layout, read_log, split_days
from dualenc.errors import DataError

# Lines 0..11: a join, two dialogs (alice-bob, carol-bob), an action, a notice, an empty
# message and dave's unanswered hello.
LOG = """\
=== alice [~a@example.org] has joined #ubuntu
[10:00] <alice> how do I mount a usb stick?
[10:01] <bob> alice: try pmount
[10:01]  * carol waves
[10:01] <carol> anyone know grub?
[10:02] <alice> bob: thanks, that worked
[10:02] <bob> carol: grub lives in /boot
[10:02] -ChanServ:#ubuntu- welcome
[10:03] <alice> one more thing
[10:03] <carol> bob: thanks
[10:03] <dave>
[10:04] <dave> hello?
"""
ALICE_BOB = """\
2011-03-18T10:00:00.000Z\talice\t\thow do I mount a usb stick?
2011-03-18T10:01:00.000Z\tbob\talice\ttry pmount
2011-03-18T10:02:00.000Z\talice\tbob\tthanks, that worked
2011-03-18T10:03:00.000Z\talice\t\tone more thing
"""
CAROL_BOB = """\
2011-03-18T10:01:00.000Z\tcarol\t\tanyone know grub?
2011-03-18T10:02:00.000Z\tbob\tcarol\tgrub lives in /boot
2011-03-18T10:03:00.000Z\tcarol\tbob\tthanks
"""


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def read_lists(root: Path) -> list[str]:
    return [
        (root / name).read_text() for name in ("trainfiles.csv", "valfiles.csv", "testfiles.csv")
    ]


def test_bracket_log_messages_and_skipped_lines(tmp_path):
    log = read_log(write(tmp_path / "2011-03-18.raw.txt", LOG))
    assert log.fmt == "bracket" and log.day == "2011-03-18" and log.lines == 12
    assert [(m.line, m.sender, m.text) for m in log.messages][:3] == [
        (1, "alice", "how do I mount a usb stick?"),
        (2, "bob", "alice: try pmount"),
        (4, "carol", "anyone know grub?"),
    ]
    assert len(log.messages) == 8
    assert log.skipped == {"system": 1, "action": 1, "other": 1, "empty": 1}
    assert log.actions == [(3, 1.0, "carol")]


def test_plain_and_iso_formats_and_their_timestamps(tmp_path):
    plain = read_log(
        write(
            tmp_path / "chat-2012-01-02.log",
            "03:42 <alice> hi\n03:42:05 <@bob> hello\n03:43 -!- bob is now known as bob_\n",
        )
    )
    assert plain.fmt == "plain"
    assert [(m.timestamp, m.sender) for m in plain.messages] == [
        ("2012-01-02T03:42:00.000Z", "alice"),
        ("2012-01-02T03:42:05.000Z", "bob"),
    ]
    assert plain.entries[2] == NickChange(2, "bob", "bob_")
    iso = read_log(
        write(
            tmp_path / "iso.txt",
            "2004-12-25T03:42:00 <a> one\n2004-12-25T03:42:00.123Z <b> two\n"
            "[2004-12-25 03:43] <a> three\n2004-12-25T05:44:00+02:00 <b> four\n",
        )
    )
    assert iso.fmt == "iso" and iso.day is None
    assert [m.timestamp for m in iso.messages] == [
        "2004-12-25T03:42:00.000Z",
        "2004-12-25T03:42:00.123Z",
        "2004-12-25T03:43:00.000Z",
        "2004-12-25T03:44:00.000Z",
    ]
    minutes = [m.minute - iso.messages[0].minute for m in iso.messages]
    assert minutes == pytest.approx([0, 0.123 / 60, 1, 2], abs=1e-6)


def test_clock_runs_on_past_midnight(tmp_path):
    log = read_log(write(tmp_path / "2011-03-18.txt", "[23:59] <a> x\n[00:01] <b> y\n"))
    assert [m.minute for m in log.messages] == [0, 2]


@pytest.mark.parametrize(
    ("name", "data", "fmt", "line", "field"),
    [
        ("2011-03-18.txt", b"[10:00] <alice> hi\n[10:01] <bob> caf\xe9\n", "auto", 2, "text"),
        ("2011-03-18.txt", b"[10:00] <alice> hi\nrandom words\n", "bracket", 2, "timestamp"),
        ("2011-03-18.txt", b"[25:00] <alice> hi\n", "bracket", 1, "timestamp"),
        ("2011-03-18.txt", b"10:00 <alice> hi\n", "bracket", 1, "timestamp"),
        ("no-day.txt", b"[10:00] <alice> hi\n", "auto", None, "day"),
        ("2011-03-18.txt", b"nothing like a log\n", "auto", None, "format"),
    ],
)
def test_bad_lines_are_errors_with_line_and_field(tmp_path, name, data, fmt, line, field):
    path = write(tmp_path / name, data)
    with pytest.raises(DataError) as caught:
        read_log(path, fmt)
    assert (caught.value.path, caught.value.line, caught.value.field) == (str(path), line, field)


def test_skip_bad_lines_counts_them(tmp_path):
    data = b"[10:00] <alice> hi\nrandom words\n[10:01] <bob> caf\xe9\n[10:02] <bob> ok\n"
    log = read_log(write(tmp_path / "2011-03-18.txt", data), "bracket", skip_bad_lines=True)
    assert [m.text for m in log.messages] == ["hi", "ok"]
    assert log.skipped["unparseable"] == 2


def test_bad_annotation_line(tmp_path):
    path = write(tmp_path / "x.annotation.txt", "0 0 -\n1 x -\n")
    with pytest.raises(DataError) as caught:
        read_links(path)
    assert (caught.value.line, caught.value.field) == (2, "child")
    with pytest.raises(DataError, match="below 1"):
        read_links(write(tmp_path / "y.annotation.txt", "0 1 -\n"), lines=1)


def test_dialogs_command_writes_the_layout_and_report(tmp_path):
    write(tmp_path / "logs" / "2011-03-18.raw.txt", LOG)
    out = tmp_path / "out"
    assert main(["dialogs", str(tmp_path / "logs"), "--out", str(out), "--split", "1,0,0"]) == 0
    assert (out / "dialogs" / "2011-03-18" / "1.tsv").read_text() == ALICE_BOB
    assert (out / "dialogs" / "2011-03-18" / "2.tsv").read_text() == CAROL_BOB
    assert read_lists(out) == ["1.tsv,2011-03-18\n2.tsv,2011-03-18\n", "", ""]
    report = json.loads((out / "report.json").read_text())
    assert (report["lines"], report["messages"]) == (12, 8)
    assert report["skipped"] == {
        "system": 1, "action": 1, "other": 1, "empty": 1, "unparseable": 0, "unaddressed": 1
    }  # fmt: skip
    assert report["dialogs"] == {"kept": 2, "dropped_short": 0, "dropped_duplicate": 0}
    assert report["turns"] == {"3": 2}
    assert {len(d.turns) for d in read_dialog_source(out)["train"]} == {3}


def test_existing_out_is_refused_unless_overwrite(tmp_path, capsys):
    logs = write(tmp_path / "2011-03-18.raw.txt", LOG)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["dialogs", str(logs), "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["dialogs", str(logs), "--out", str(out), "--overwrite"]) == 0
    assert (out / "report.json").is_file()


def test_seeded_day_split_keeps_days_whole(tmp_path):
    logs = tmp_path / "logs"
    days = [f"2011-03-{day:02d}" for day in range(1, 11)]
    for name in [*days, "2011-03-05.b"]:  # two parts of the 5th
        write(logs / f"{name}.raw.txt", LOG.replace("?", f" ({name})?"))  # no duplicates
    options = BuildOptions(split=(0.8, 0.1, 0.1), seed=7)
    report = build_layout(logs, tmp_path / "out", options)
    splits = split_days(days, (0.8, 0.1, 0.1), 7)
    assert sorted(splits.values()).count("train") == 8
    valid_day = next(day for day, split in splits.items() if split == "valid")
    test_day = next(day for day, split in splits.items() if split == "test")
    assert (valid_day, test_day) == ("2011-03-03", "2011-03-06")
    train, valid, test = read_lists(tmp_path / "out")
    assert valid == f"1.tsv,{valid_day}\n2.tsv,{valid_day}\n"
    assert test == f"1.tsv,{test_day}\n2.tsv,{test_day}\n"
    assert "2.tsv,2011-03-05.b\n" in train and "1.tsv,2011-03-05\n" in train
    assert len(train.splitlines()) == 2 * 9
    assert report["splits"]["train"] == {"logs": 9, "built": 18, "merged": 0}
    assert build_layout(logs, tmp_path / "again", options)["splits"] == report["splits"]
    assert read_lists(tmp_path / "again") == read_lists(tmp_path / "out")


def test_links_mode_on_an_annotated_log(tmp_path):
    logs = tmp_path / "logs"
    write(logs / "2011-03-18.raw.txt", LOG)
    # alice's question, bob's answer, her thanks, and carol replying to the thanks.
    write(logs / "2011-03-18.annotation.txt", "1 1 -\n1 2 -\n2 5 -\n5 9 -\n4 4 -\n")
    out = tmp_path / "out"
    assert main(["dialogs", str(logs), "--out", str(out), "--links", "--split", "1,0,0"]) == 0
    assert (out / "dialogs" / "2011-03-18" / "1.tsv").read_text() == ALICE_BOB.replace(
        "2011-03-18T10:03:00.000Z\talice\t\tone more thing\n", ""
    )
    report = json.loads((out / "report.json").read_text())
    assert report["mode"] == "links"
    assert report["dialogs"] == {"kept": 1, "dropped_short": 1, "dropped_duplicate": 0}
    assert report["skipped"]["other_speakers"] == 1  # carol's reply
    assert report["skipped"]["unannotated"] == 3


def make_udc(root: Path, train: str, valid: str, test: str) -> Path:
    for number, text in enumerate((train, valid, test), start=1):
        write(root / "dialogs" / "3" / f"{number}.tsv", text)
    write(root / "trainfiles.csv", "1.tsv,3\n")
    write(root / "valfiles.csv", "2.tsv,3\n")
    write(root / "testfiles.csv", "3.tsv,3\n")
    return root


def test_merge_keeps_the_merged_splits_and_drops_duplicates(tmp_path):
    logs = write(tmp_path / "2011-03-18.raw.txt", LOG)
    # The merged train dialog holds carol-bob with other stamps, spacing and one more line.
    longer = CAROL_BOB.replace("10:0", "09:0").replace("grub lives", "grub  lives")
    udc = make_udc(
        tmp_path / "udc",
        longer + "2011-03-18T09:04:00.000Z\tbob\t\tnp\n",
        "2011-01-01T00:00:00.000Z\tx\t\tq\n2011-01-01T00:00:00.000Z\ty\tx\ta\n",
        "2011-01-02T00:00:00.000Z\tx\t\tq\n2011-01-02T00:00:00.000Z\ty\tx\tb\n",
    )
    out = tmp_path / "out"
    args = ["dialogs", str(logs), "--out", str(out), "--split", "1,0,0", "--merge", str(udc)]
    assert main(args) == 0
    assert read_lists(out) == ["1.tsv,3\n1.tsv,2011-03-18\n", "2.tsv,3\n", "3.tsv,3\n"]
    for number in (1, 2, 3):
        name = f"dialogs/3/{number}.tsv"
        assert (out / name).read_bytes() == (udc / name).read_bytes()
    assert (out / "dialogs" / "2011-03-18" / "1.tsv").read_text() == ALICE_BOB
    report = json.loads((out / "report.json").read_text())
    assert report["dialogs"] == {"kept": 1, "dropped_short": 0, "dropped_duplicate": 1}
    assert report["splits"]["train"] == {"logs": 1, "built": 1, "merged": 1}
    assert [len(v) for v in read_dialog_source(out).values()] == [2, 1, 1]


def test_merge_drops_a_built_dialog_that_holds_a_merged_test_dialog(tmp_path):
    logs = write(tmp_path / "2011-03-18.raw.txt", LOG)
    held_out = "".join(ALICE_BOB.splitlines(keepends=True)[1:3])
    udc = make_udc(tmp_path / "udc", "t\tx\t\tq\nt\ty\t\ta\n", "t\tx\t\tq\nt\ty\t\tb\n", held_out)
    report = build_layout(logs, tmp_path / "out", BuildOptions(split=(1, 0, 0), merge=[udc]))
    assert report["dialogs"]["dropped_duplicate"] == 1
    assert read_lists(tmp_path / "out")[0] == "1.tsv,3\n1.tsv,2011-03-18\n"
    assert (tmp_path / "out" / "dialogs" / "2011-03-18" / "1.tsv").read_text() == CAROL_BOB


def test_real_day_log(shared_data, tmp_path):
    # One of the 123 #ubuntu day-logs: 1,500 lines, 335 of them joins, quits and renames.
    logs = tmp_path / "logs"
    logs.mkdir()
    shutil.copy(shared_data / "ubuntu-irc-logs" / "2004-12-25.train-c.raw.txt", logs)
    shutil.copy(shared_data / "ubuntu-irc-logs" / "2004-12-25.train-c.annotation.txt", logs)
    report = build_layout(logs, tmp_path / "heuristic", BuildOptions(split=(1, 0, 0)))
    assert (report["lines"], report["messages"], report["skipped"]["system"]) == (1500, 1165, 335)
    assert report["skipped"]["unaddressed"] == 259
    assert report["dialogs"] == {"kept": 77, "dropped_short": 46, "dropped_duplicate": 0}
    assert report["messages_in_dialogs"] == {"kept": 790, "dropped_short": 116}
    # With the links: 24 dialogs, as many as ubuntu-irc holds from this day; 16 of them are
    # the same (sender, text) sequence as, or a part of, one of ubuntu-irc's.
    options = BuildOptions(links=True, split=(1, 0, 0), merge=[shared_data / "ubuntu-irc"])
    report = build_layout(logs, tmp_path / "links", options)
    assert report["dialogs"] == {"kept": 8, "dropped_short": 28, "dropped_duplicate": 16}
    assert report["skipped"]["addressed_elsewhere"] == 14
