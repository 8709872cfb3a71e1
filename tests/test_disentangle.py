"""Addressees, the dialog heuristic and the reply-to links, on messages written in the test."""

from __future__ import annotations

import pytest

from dualenc.corpus.disentangle import (
    DialogOptions,
    DuplicateFinder,
    Message,
    NickChange,
    RecentNicks,
    address_messages,
    conversations,
    count_turns,
    find_addressee,
    heuristic_dialogs,
    linked_dialogs,
)

RECENT = {
    nick.lower(): nick
    for nick in ["bob2", "Xophe", "[foo]", "foo_", "foo|away", "foo-bar", "foo^", "help"]
}


def chat(*rows: tuple[float, str, str]) -> list[Message]:
    """Messages from (minute, sender, text) rows, one line each."""
    return [
        Message(line, minute, f"t{line}", sender, text)
        for line, (minute, sender, text) in enumerate(rows)
    ]


def lines_of(dialogs) -> list[list[int]]:
    return [[u.message.line for u in dialog] for dialog in dialogs]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bob2: try this", ("bob2", "try this")),
        ("Xophe, yes", ("Xophe", "yes")),
        ("xophe: lower case still counts", ("Xophe", "lower case still counts")),
        ("[foo]: brackets", ("[foo]", "brackets")),
        ("foo_ , underscore", ("foo_", "underscore")),
        ("foo|away: a pipe", ("foo|away", "a pipe")),
        ("foo-bar; a dash", ("foo-bar", "a dash")),
        ("foo^ no punctuation needed", ("foo^", "no punctuation needed")),
        ("Bob2 bare", ("bob2", "bare")),
        ("help: try sudo", ("help", "try sudo")),  # a word, but a leading address
        ("help, that is all", ("help", "that is all")),
        ("help me please", None),  # a word without ':' or ','
        ("help; anyone?", None),
        ("well, that is odd", None),  # "well" never spoke
        ("carol: not here lately", None),
        ("http://example.com", None),
        ("try bob2: later", None),  # not leading
    ],
)
def test_find_addressee(text, expected):
    assert find_addressee(text, "alice", RECENT) == expected


def test_find_addressee_needs_a_recent_nick_and_not_oneself():
    assert find_addressee("well, that is odd", "alice", {"well": "well"}) == ("well", "that is odd")
    assert find_addressee("ubuntu: hi", "alice", {"ubuntu": "ubuntu"}) == ("ubuntu", "hi")
    assert find_addressee("ubuntu is great", "alice", {"ubuntu": "ubuntu"}) is None
    assert find_addressee("bob2: me", "Bob2", RECENT) is None


def test_recent_nicks_window_and_rename():
    recent = RecentNicks(window=10)
    recent.see("Bob", 0)
    recent.see("carol", 5)
    assert recent.at(10) == {"bob": "Bob", "carol": "carol"}
    recent.rename("carol", "carol_away")
    assert recent.at(10.5) == {"carol_away": "carol_away"}  # Bob spoke 10.5 minutes ago


def test_address_messages_follows_nick_changes_and_actions():
    entries = [
        Message(0, 0, "t0", "bob", "hi"),
        NickChange(1, "bob", "bob_"),
        Message(2, 1, "t2", "alice", "bob_: hello"),
        Message(4, 1, "t4", "alice", "dave: you there?"),  # dave only acted, on line 3
        Message(5, 1, "t5", "alice", "bob: the old nick"),
    ]
    placed = address_messages(entries, nick_window=10, actions=[(3, 0.5, "dave")])
    assert [(u.recipient, u.text) for u in placed] == [
        ("", "hi"),
        ("bob_", "hello"),
        ("dave", "you there?"),
        ("", "bob: the old nick"),
    ]


def test_count_turns():
    assert count_turns(["a", "a", "b", "a", "a"]) == 3
    assert count_turns([]) == 0


def test_heuristic_question_continuation_and_a_third_person():
    messages = chat(
        (0, "alice", "how do I mount a usb stick?"),  # 0: the question, unaddressed
        (1, "bob", "alice: try pmount"),  # 1: opens alice-bob with line 0
        (1, "carol", "anyone know grub?"),  # 2: carol's question
        (2, "alice", "bob: thanks, that worked"),  # 3
        (2, "bob", "carol: grub lives in /boot"),  # 4: opens bob-carol, not alice-bob
        (3, "alice", "one more thing"),  # 5: alice's one fresh dialog
        (3, "carol", "bob: thanks"),  # 6
    )
    built = heuristic_dialogs(address_messages(messages, 10), DialogOptions())
    assert lines_of(built.dialogs) == [[0, 1, 3, 5], [2, 4, 6]]
    assert [u.recipient for u in built.dialogs[0]] == ["", "alice", "bob", ""]
    assert [u.text for u in built.dialogs[1]] == [
        "anyone know grub?",
        "grub lives in /boot",
        "thanks",
    ]
    assert built.counts["unaddressed"] == 0
    assert built.counts["addressed"] == 4 and built.counts["continued"] == 1


def test_heuristic_splits_a_dialog_at_a_silence():
    messages = chat(
        (0, "alice", "my wifi is gone"),
        (1, "bob", "alice: which card?"),
        (2, "alice", "bob: intel"),
        (3, "bob", "alice: load iwlwifi"),
        (12, "alice", "bob: it broke again"),  # 9 minutes later
        (13, "bob", "alice: reboot"),
        (14, "alice", "bob: ok"),
    )
    utterances = address_messages(messages, 10)
    split = heuristic_dialogs(utterances, DialogOptions(max_silence=5))
    assert lines_of(split.dialogs) == [[0, 1, 2, 3], [4, 5, 6]]
    whole = heuristic_dialogs(utterances, DialogOptions(max_silence=10))
    assert lines_of(whole.dialogs) == [[0, 1, 2, 3, 4, 5, 6]]


def test_heuristic_drops_short_dialogs_and_leaves_ambiguous_messages_out():
    messages = chat(
        (0, "alice", "q1"),
        (0, "carol", "q2"),
        (1, "bob", "alice: a1"),  # alice-bob: 2 turns, dropped
        (1, "bob", "carol: a2"),
        (1, "bob", "and reboot"),  # bob has two fresh dialogs: ambiguous
        (2, "carol", "bob: thanks"),
        (2, "dave", "hello"),  # nobody answers
    )
    built = heuristic_dialogs(address_messages(messages, 10), DialogOptions())
    assert lines_of(built.dialogs) == [[1, 3, 5]]
    assert built.counts["dropped_short"] == 1 and built.counts["in_dropped"] == 2
    assert built.counts["unaddressed"] == 2  # "and reboot" and dave's hello
    assert built.counts["in_kept"] == 3


def test_conversations_are_connected_components():
    links = [(0, 0), (1, 0), (2, 2), (3, 1), (4, 2), (5, 5)]
    assert conversations(links) == [[0, 1, 3], [2, 4], [5]]


def test_linked_dialogs_keep_two_speakers_and_drop_third_person_addresses():
    messages = chat(
        (0, "alice", "how do I set up raid?"),  # 0
        (0, "bob", "alice: use mdadm"),  # 1
        (0, "eve", "alice: or lvm"),  # 2: a third speaker, fewer messages than bob
        (1, "alice", "bob: thanks"),  # 3
        (1, "bob", "alice: np"),  # 4
        (1, "alice", "eve: and lvm how?"),  # 5: addressed to eve, left out
        (2, "carol", "hi"),  # 6
        (2, "dave", "carol: hey"),  # 7: a two-turn conversation, dropped
        (2, "dave", "not annotated"),  # 8
    )
    links = [(0, 0), (0, 1), (0, 2), (1, 3), (3, 4), (2, 5), (6, 6), (6, 7)]
    built = linked_dialogs(address_messages(messages, 10), links, min_turns=3)
    assert lines_of(built.dialogs) == [[0, 1, 3, 4]]
    assert [u.recipient for u in built.dialogs[0]] == ["", "alice", "bob", "alice"]
    assert [u.text for u in built.dialogs[0]] == [
        "how do I set up raid?",
        "use mdadm",
        "thanks",
        "np",
    ]
    assert built.counts["other_speakers"] == 1
    assert built.counts["addressed_elsewhere"] == 1
    assert built.counts["dropped_short"] == 1
    assert built.counts["unannotated"] == 1


def test_linked_dialogs_break_a_tie_by_who_spoke_first():
    messages = chat((0, "a", "q"), (0, "c", "a: x"), (0, "b", "a: y"), (1, "a", "ok"))
    links = [(0, 0), (0, 1), (0, 2), (1, 3)]
    built = linked_dialogs(address_messages(messages, 10), links, min_turns=3)
    assert lines_of(built.dialogs) == [[0, 1, 3]]


def test_duplicate_finder():
    finder = DuplicateFinder()
    finder.add((("a", "1"), ("b", "2"), ("a", "3")))
    assert finder.contains((("a", "1"), ("b", "2"), ("a", "3")))
    assert finder.contains((("b", "2"), ("a", "3")))
    assert not finder.contains((("a", "1"), ("a", "3")))  # not an unbroken run
    assert finder.inside((("x", "0"), ("a", "1"), ("b", "2"), ("a", "3"), ("y", "4")))
    assert not finder.inside((("a", "1"), ("b", "2")))


def test_dialog_options_report_every_problem():
    problems = DialogOptions(nick_window=0, max_silence=-1, min_turns=1).problems()
    assert len(problems) == 3


def test_a_dialog_spells_each_nick_as_it_first_appears():
    messages = chat((0, "Alice", "q"), (1, "bob", "alice: a"), (2, "alice", "BOB: thanks"))
    built = heuristic_dialogs(address_messages(messages, 10), DialogOptions())
    assert [(u.message.sender, u.recipient) for u in built.dialogs[0]] == [
        ("Alice", ""),
        ("bob", "Alice"),
        ("Alice", "bob"),
    ]
