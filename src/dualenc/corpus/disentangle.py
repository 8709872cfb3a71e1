"""One-on-one dialogs out of a channel's interleaved messages, and telling repeated ones.

- `heuristic_dialogs`, after Lowe et al. 2015 ("The Ubuntu Dialogue Corpus", arXiv
  1506.08909, section 3): a message that starts with the nick of someone who spoke recently
  is addressed to them and joins (or opens) the dialog of that pair; the first reply pulls
  in the addressee's recent unaddressed messages (the question); an unaddressed message
  continues its speaker's dialog when exactly one is fresh; a dialog ends after a silence.
- `linked_dialogs`, from the human reply-to links of Kummerfeld et al. (ACL 2019), as the
  ``ubuntu-irc`` dialogs were made: a conversation is a connected component of the links;
  its dialog keeps the first speaker and the other speaker who wrote most.

Both keep dialogs of at least `min_turns` turns, and neither puts a message addressed to
one person into a dialog with another. `DuplicateFinder` tells whether a dialog equals or
lies inside one seen before.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from dualenc.errors import DataError


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message of a day-log."""

    line: int  # 0-based line number in the log, as the annotations count them
    minute: float  # minutes on a clock that never runs backwards, for time windows
    timestamp: str  # ISO 8601 UTC, as written into the dialog files
    sender: str
    text: str


@dataclass(frozen=True, slots=True)
class NickChange:
    """A system line saying that `old` is now known as `new`."""

    line: int
    old: str
    new: str


# Nicks that are also words people start messages with: such a nick is an addressee only
# when followed by ':' or ','.
ENGLISH_WORDS = frozenset(
    """
    a about actually after again ah all also alright am an and another any anybody anyone
    anything anyway are as at aw away awesome back bad be because been before best better
    both brb but by bye can cant cd check come cool could damn dear did do does done dont
    down dude each easy edit else even ever every exactly fine first fix for from get give
    go god good great guys ha had hah haha has have he hehe hello help her here hey hi him
    his hm hmm how however huh i if im in indeed info install is it its just k kde keep
    kernel know later let like linux lol look looks lots make man may maybe me mine more
    most much must my nah need never new nice no nobody none nope not nothing now np of oh
    ok okay on once one only oops or other our out perhaps please pls plus power problem
    quite raid rather read really right root run same see seems she should simple since so
    some somebody someone something sometimes soon sorry start still stop such sudo sure
    test thank thanks that the their then there these they think this those though thx to
    too try ty ubuntu uh um update upgrade us use user very wait was we weird well were
    what whatever when where which who why will with without wow wrong ya yeah yep yes yet
    you your yup
    """.split()
)
_LEADING_ADDRESS = re.compile(r"\s*([^:,;>\s][^:,;>]{0,39}?)\s*([:,;>])\s*(.*)", re.DOTALL)


@dataclass
class DialogOptions:
    """Time windows and limits of dialog building; all times in minutes."""

    nick_window: float = 10.0  # a nick is an addressee only if it spoke this recently
    reply_window: float = 1.0  # an unaddressed message continues a dialog this fresh
    question_window: float = 5.0  # unaddressed messages this fresh open the first reply's dialog
    max_silence: float = 10.0  # a dialog ends after this long without a message
    min_turns: int = 3  # shorter dialogs are dropped

    def problems(self) -> list[str]:
        """Every bad value, as one message each (empty when all are fine)."""
        found = [
            f"{name} must be positive, got {getattr(self, name)}"
            for name in ("nick_window", "reply_window", "question_window", "max_silence")
            if not getattr(self, name) > 0
        ]
        if self.min_turns < 2:
            found.append(f"min_turns must be at least 2, got {self.min_turns}")
        return found


@dataclass(frozen=True, slots=True)
class Utterance:
    """A message as placed in a dialog: the leading address moved into `recipient`."""

    message: Message
    recipient: str
    text: str


@dataclass
class Built:
    """Dialogs built from one day-log, and what became of its messages."""

    dialogs: list[list[Utterance]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


def count_turns(senders: Iterable[str]) -> int:
    """Turns in a sequence of senders: consecutive messages of one sender form one turn."""
    turns, last = 0, None
    for sender in senders:
        if sender != last:
            turns, last = turns + 1, sender
    return turns


def find_addressee(text: str, speaker: str, recent: dict[str, str]) -> tuple[str, str] | None:
    """The addressee of a message and the text without the address, or None.

    Args:
        text: the message.
        speaker: who wrote it; nobody addresses themselves.
        recent: nicks that spoke recently, lower-cased, to their spelling in the log.
    """
    own = speaker.lower()
    punctuated = _LEADING_ADDRESS.fullmatch(text)
    if punctuated:
        nick = punctuated.group(1).lower()
        is_word = nick in ENGLISH_WORDS and punctuated.group(2) not in ":,"
        if nick in recent and nick != own and not is_word:
            return recent[nick], punctuated.group(3) or text
    first, _, rest = text.strip().partition(" ")
    nick = first.lower()
    if nick in recent and nick != own and nick not in ENGLISH_WORDS:
        return recent[nick], rest.strip() or text
    return None


class RecentNicks:
    """Who spoke within the last `window` minutes, following nick changes."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: dict[str, tuple[str, float]] = {}  # lower-cased nick -> (nick, minute)

    def see(self, nick: str, minute: float) -> None:
        self._seen[nick.lower()] = (nick, minute)

    def rename(self, old: str, new: str) -> None:
        seen = self._seen.pop(old.lower(), None)
        if seen is not None:
            self._seen[new.lower()] = (new, seen[1])

    def at(self, minute: float) -> dict[str, str]:
        """The recent nicks at `minute`, lower-cased, to their spelling."""
        stale = [k for k, (_, last) in self._seen.items() if minute - last > self.window]
        for key in stale:
            del self._seen[key]
        return {key: nick for key, (nick, _) in self._seen.items()}


def address_messages(
    entries: list[Message | NickChange],
    nick_window: float,
    actions: Iterable[tuple[int, float, str]] = (),
) -> list[Utterance]:
    """Every message of a day-log with its addressee found among the recent nicks.

    `actions` are ``(line, minute, nick)`` of action lines, which count as being present.
    """
    recent = RecentNicks(nick_window)
    pending = sorted(actions, reverse=True)
    placed = []
    for entry in entries:
        while pending and pending[-1][0] < entry.line:
            _, minute, nick = pending.pop()
            recent.see(nick, minute)
        if isinstance(entry, NickChange):
            recent.rename(entry.old, entry.new)
            continue
        found = find_addressee(entry.text, entry.sender, recent.at(entry.minute))
        recipient, text = found or ("", entry.text)
        placed.append(Utterance(entry, recipient, text))
        recent.see(entry.sender, entry.minute)
    return placed


@dataclass
class _Open:
    utterances: list[Utterance]
    last: float


class _Heuristic:
    """The state of one pass over a day-log's messages."""

    def __init__(self, options: DialogOptions) -> None:
        self.options = options
        self.open: dict[frozenset[str], _Open] = {}
        self.unaddressed: dict[str, list[Utterance]] = defaultdict(list)
        self.closed: list[_Open] = []
        self.counts: Counter[str] = Counter()
        self.swept_at: float | None = None

    # TODO: carry open dialogs across nick changes; a new nick now starts new dialogs.
    def add(self, said: Utterance) -> None:
        now, speaker = said.message.minute, said.message.sender.lower()
        self._close_silent(now)
        if said.recipient:
            dialog = self._dialog_of(speaker, said.recipient.lower(), now)
            self.counts["addressed"] += 1
        else:
            dialog = self._continued(speaker, now)
            if dialog is None:
                self._keep_unaddressed(speaker, said, now)
                return
            self.counts["continued"] += 1
        dialog.utterances.append(said)
        dialog.last = now

    def _close_silent(self, now: float) -> None:
        if self.swept_at == now:
            return
        self.swept_at = now
        silent = [p for p, d in self.open.items() if now - d.last > self.options.max_silence]
        for pair in silent:
            self.closed.append(self.open.pop(pair))

    def _dialog_of(self, speaker: str, addressee: str, now: float) -> _Open:
        pair = frozenset((speaker, addressee))
        if pair not in self.open:
            # The addressee's fresh unaddressed messages are what the first reply answers.
            question = self._fresh(self.unaddressed.pop(addressee, []), now)
            self.open[pair] = _Open(question, now)
            self.counts["opened_with_question"] += bool(question)
        return self.open[pair]

    def _continued(self, speaker: str, now: float) -> _Open | None:
        window = self.options.reply_window
        fresh = [d for p, d in self.open.items() if speaker in p and now - d.last <= window]
        return fresh[0] if len(fresh) == 1 else None

    def _keep_unaddressed(self, speaker: str, said: Utterance, now: float) -> None:
        waiting = self._fresh(self.unaddressed[speaker], now)
        self.unaddressed[speaker] = [*waiting, said]

    def _fresh(self, utterances: list[Utterance], now: float) -> list[Utterance]:
        window = self.options.question_window
        return [u for u in utterances if now - u.message.minute <= window]


def heuristic_dialogs(utterances: list[Utterance], options: DialogOptions) -> Built:
    """Dialogs of one day-log from addressed messages, continuations and silences.

    Args:
        utterances: the log's messages in order, addressed by `address_messages`.
        options: the time windows and the fewest turns a dialog keeps.
    """
    state = _Heuristic(options)
    for said in utterances:
        state.add(said)
    state.closed.extend(state.open.values())
    found = [d.utterances for d in sorted(state.closed, key=lambda d: d.utterances[0].message.line)]
    built = _keep_long(found, options.min_turns)
    placed = sum(built.counts[k] for k in ("in_kept", "in_dropped"))
    built.counts["unaddressed"] = len(utterances) - placed
    built.counts.update(state.counts)
    return built


def _keep_long(dialogs: list[list[Utterance]], min_turns: int) -> Built:
    built = Built()
    for dialog in map(_one_spelling, dialogs):
        if count_turns(u.message.sender for u in dialog) >= min_turns:
            built.dialogs.append(dialog)
            built.counts["in_kept"] += len(dialog)
        else:
            built.counts["dropped_short"] += 1
            built.counts["in_dropped"] += len(dialog)
    return built


def _one_spelling(dialog: list[Utterance]) -> list[Utterance]:
    # Nicks are case-insensitive; a dialog spells each one as it first appears.
    spelling: dict[str, str] = {}
    for said in dialog:
        spelling.setdefault(said.message.sender.lower(), said.message.sender)
    return [
        replace(
            said,
            message=replace(said.message, sender=spelling[said.message.sender.lower()]),
            recipient=spelling.get(said.recipient.lower(), said.recipient),
        )
        for said in dialog
    ]


def read_links(path: str | Path, lines: int | None = None) -> list[tuple[int, int]]:
    """Reply-to links ``parent child -`` of an annotation file, as (parent, child) line pairs.

    Line numbers count from 0; a line linked to itself starts a conversation. With `lines`,
    the length of the log, a link past its end is an error.
    """
    path = Path(path)
    links = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = text.split()
        if not fields:
            continue
        for index, name in enumerate(("parent", "child")):
            value = fields[index] if index < len(fields) else ""
            if not value.isdigit() or (lines is not None and int(value) >= lines):
                bound = "" if lines is None else f" below {lines}, the log's length"
                message = f"expected a line number{bound}, got {value!r}"
                raise DataError(path, message, line=number, field=name)
        links.append((int(fields[0]), int(fields[1])))
    return links


def conversations(links: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components of reply-to links, each as sorted line numbers, in line order."""
    parent: dict[int, int] = {}

    def root(line: int) -> int:
        parent.setdefault(line, line)
        while parent[line] != line:
            parent[line] = parent[parent[line]]
            line = parent[line]
        return line

    for one, other in links:
        a, b = root(one), root(other)
        if a != b:
            parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = defaultdict(list)
    for line in sorted(parent):
        members[root(line)].append(line)
    return sorted(members.values())


def linked_dialogs(
    utterances: list[Utterance], links: Iterable[tuple[int, int]], min_turns: int
) -> Built:
    """Dialogs of one day-log from its human reply-to links.

    A conversation is a connected component of the links over the annotated lines; its
    dialog keeps the messages of the first speaker and of the other speaker who wrote most
    (the earlier one on a tie), less those addressed to a third person.
    """
    by_line = {u.message.line: u for u in utterances}
    found, counts = [], Counter()
    annotated = 0
    for component in conversations(links):
        said = [by_line[line] for line in component if line in by_line]
        annotated += len(said)
        dialog = _two_speakers(said)
        counts["other_speakers"] += len(said) - len(dialog)
        kept = _addressed_within(dialog)
        counts["addressed_elsewhere"] += len(dialog) - len(kept)
        if kept:
            found.append(kept)
    built = _keep_long(found, min_turns)
    built.counts.update(counts)
    built.counts["unannotated"] = len(utterances) - annotated
    return built


def _two_speakers(said: list[Utterance]) -> list[Utterance]:
    nicks = [u.message.sender.lower() for u in said]
    written = Counter(nick for nick in nicks if nick != nicks[0])
    if not written:
        return said
    other = max(written, key=lambda nick: (written[nick], -nicks.index(nick)))
    return [u for u, nick in zip(said, nicks, strict=True) if nick in (nicks[0], other)]


def _addressed_within(dialog: list[Utterance]) -> list[Utterance]:
    speakers = {u.message.sender.lower() for u in dialog}
    return [u for u in dialog if not u.recipient or u.recipient.lower() in speakers]


Key = tuple[tuple[str, str], ...]  # a dialog as its (sender, text) sequence


def dialog_key(messages: Iterable[tuple[str, str]]) -> Key:
    """A dialog's (sender, text) sequence with runs of white space in the text made one."""
    return tuple((sender, " ".join(text.split())) for sender, text in messages)


class DuplicateFinder:
    """Dialogs added so far, to tell whether another equals, lies inside or holds one."""

    def __init__(self) -> None:
        self._keys: list[Key] = []
        self._at: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)

    def add(self, key: Key) -> None:
        for position, message in enumerate(key):
            self._at[message].append((len(self._keys), position))
        self._keys.append(key)

    def contains(self, key: Key) -> bool:
        """Whether `key` equals, or is an unbroken run of, a dialog added before."""
        if not key:
            return True
        starts = self._at.get(key[0], ())
        return any(self._keys[i][at : at + len(key)] == key for i, at in starts)

    def inside(self, key: Key) -> bool:
        """Whether some dialog added before is an unbroken run of `key`."""
        for start, message in enumerate(key):
            for index, position in self._at.get(message, ()):
                found = self._keys[index]
                if position == 0 and key[start : start + len(found)] == found:
                    return True
        return False
