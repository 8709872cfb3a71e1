"""Tokenizers and the vocabulary that maps their tokens to integer ids."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from dualenc.errors import DataError
from dualenc.fileio import read_json, write_json

EOU = "__eou__"  # ends an utterance in the corpus' text
EOT = "__eot__"  # ends a turn
MARKERS = frozenset({EOU, EOT})

PAD = "<pad>"
UNK = "<unk>"
_BUCKET = "<hash:{}>"  # the token of hash bucket i: the last ids of a vocabulary that has them

TOKENIZER_KINDS = ("default", "whitespace")

# Punctuation split off the front of a word, and off its end. Characters outside these sets
# ("/", ".", "$", "#", "-", "~", ...) stay attached in front, so paths, file names and
# variables keep their shape; inside a word every character stays.
_OPENERS = "([{<\"'`\u201c\u2018\u00ab"
_CLOSERS = ".,!?;:)]}>\"'`\u201d\u2019\u00bb\u2026"

_PLAIN = re.compile(r"[^\W_]+")  # letters and digits only: nothing to split
_HAS_ALNUM = re.compile(r"[^\W_]")
_RUNS = re.compile(r"((.)\2*)", re.S)  # runs of one repeated character: "..." or "!" or "``"
_ABBREVIATION = re.compile(r"(?:[^\W\d_]\.){2,}")  # "e.g." and "i.e." keep their last dot
# English clitics, split off the way the Ubuntu corpus was tokenized: "do n't", "it 's".
_CLITIC = re.compile(r"(.*[^\W_])(n't|'s|'ll|'re|'ve|'d|'m)")
_CLITICS = frozenset({"n't", "'s", "'ll", "'re", "'ve", "'d", "'m"})

_NORMALIZE = str.maketrans({"\u2019": "'", "\u2018": "'"})  # typographic apostrophes

_CACHE_LIMIT = 1_000_000  # words whose split is remembered; the cache restarts when full


class Memo(dict):
    """A dict that fills in a missing key with `compute(key)` and keeps the answer."""

    def __init__(self, compute: Callable[[str], Any]) -> None:
        super().__init__()
        self.compute = compute

    def __missing__(self, key: str) -> Any:
        value = self[key] = self.compute(key)
        return value


@dataclass
class Tokenizer:
    """Turns text into tokens the same way in `prepare`, training and ranking new text.

    The "default" kind lower-cases, splits punctuation off the ends of words and English
    clitics off their stems ("don't" -> "do n't"), and keeps the markers `__eou__` and
    `__eot__`, URLs, paths, versions, file names and hyphenated words whole. Text that was
    already tokenized that way comes back unchanged. The "whitespace" kind only splits on
    whitespace.

    Tokenizing is `words` then `split_word` on each word, so a caller may memoize words.
    """

    kind: str = "default"  # "default" or "whitespace"
    lowercase: bool = True  # lower-case before splitting
    _pieces: Memo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in TOKENIZER_KINDS:
            raise ValueError(f"unknown tokenizer {self.kind!r}; choose from {TOKENIZER_KINDS}")
        self._pieces = Memo(self.split_word)

    def tokenize(self, text: str) -> list[str]:
        """The tokens of `text`."""
        if self.kind == "whitespace":
            return self.words(text)
        if len(self._pieces) > _CACHE_LIMIT:
            self._pieces.clear()
        return list(chain.from_iterable(map(self._pieces.__getitem__, self.words(text))))

    def words(self, text: str) -> list[str]:
        """The whitespace-separated words of `text`, lower-cased if `lowercase`."""
        if self.lowercase:
            text = text.lower()
        if self.kind == "default":
            text = text.translate(_NORMALIZE)
        return text.split()

    def split_word(self, word: str) -> tuple[str, ...]:
        """The tokens of one word from `words`."""
        return split_word(word) if self.kind == "default" else (word,)

    def to_dict(self) -> dict[str, Any]:
        """The settings, as saved in a prepared folder's tokenizer.json."""
        return {"kind": self.kind, "lowercase": self.lowercase}

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any]) -> Tokenizer:
        """The tokenizer that `to_dict` described."""
        return cls(kind=settings["kind"], lowercase=bool(settings["lowercase"]))

    def save(self, path: str | Path) -> None:
        """Write the settings as JSON."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Read a file written by `save`."""
        try:
            return cls.from_dict(read_json(path))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(path, f"not a tokenizer settings file: {err}") from err


def join_turns(turns: Iterable[str]) -> str:
    """Join turns into the corpus' marker text: each turn + " __eou__ __eot__ ".

    A turn that already ends with a marker gets only what is missing; empty turns are dropped.
    """
    parts = []
    for turn in turns:
        turn = turn.strip()
        if turn.endswith(EOT):
            parts.append(turn + " ")
        elif turn.endswith(EOU):
            parts.append(f"{turn} {EOT} ")
        elif turn:
            parts.append(f"{turn} {EOU} {EOT} ")
    return "".join(parts)


def split_word(word: str) -> tuple[str, ...]:
    """Split one whitespace-free word into tokens by the rules of the default tokenizer."""
    if _PLAIN.fullmatch(word) or word in MARKERS or word in _CLITICS:
        return (word,)
    if not _HAS_ALNUM.search(word):
        return (word,)  # all punctuation, like "``", ":/" or "...": one token

    # Closing punctuation off the end, one token per run of a repeated character.
    core = word.rstrip(_CLOSERS)
    trail = word[len(core) :]
    if trail.startswith(".") and _ABBREVIATION.fullmatch(core + "."):
        core, trail = core + ".", trail[1:]
    tokens: list[str] = []

    # Opening punctuation off the front, unless what is left is a clitic ("'ll").
    if core not in _CLITICS:
        rest = core.lstrip(_OPENERS)
        tokens.extend(run[0] for run in _RUNS.findall(core[: len(core) - len(rest)]))
        core = rest

    # Clitics off the stem, from the end: "i'd've" -> "i 'd 've".
    clitics: list[str] = []
    while clitic := _CLITIC.fullmatch(core):
        core = clitic.group(1)
        clitics.insert(0, clitic.group(2))
    tokens.append(core)
    tokens.extend(clitics)
    tokens.extend(run[0] for run in _RUNS.findall(trail))
    return tuple(tokens)


def bucket_of(token: str, buckets: int) -> int:
    """The hash bucket (0 to buckets - 1) of a token: CRC-32 of its UTF-8 bytes, the same on
    every machine and in every process."""
    return zlib.crc32(token.encode("utf-8")) % buckets


def _count_buckets(tokens: list[str]) -> int:
    # The bucket tokens <hash:0> .. <hash:B-1> end the list, in order.
    n = 0
    while n < len(tokens) and tokens[-1 - n].startswith("<hash:"):
        n += 1
    if tokens[len(tokens) - n :] != [_BUCKET.format(i) for i in range(n)]:
        raise ValueError(f"a vocabulary ends with the hash buckets {_BUCKET.format(0)!r} to "
                         f"{_BUCKET.format('B-1')!r}, in order")
    return n


class Vocabulary:
    """Token <-> id: 0 is `<pad>`, 1 is `<unk>`, then tokens by falling frequency, then
    optionally B hash buckets `<hash:0>` .. `<hash:B-1>`.

    Without buckets every unknown token is `<unk>`. With them an unknown token gets the id
    of its bucket (`bucket_of`), so a rare name, path or package shared by a context and a
    response still shows up as the same id in both.

    Args:
        tokens: every token in id order, starting with `<pad>` and `<unk>`.
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = list(tokens)
        if self._tokens[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r} and {UNK!r}")
        self._index = {token: i for i, token in enumerate(self._tokens)}
        if len(self._index) != len(self._tokens):
            raise ValueError("a vocabulary holds each token once")
        self.num_buckets = _count_buckets(self._tokens)
        self.first_bucket = len(self._tokens) - self.num_buckets
        # Text that happens to hold a literal "<pad>" or bucket token is unknown text.
        self._encoding = {
            token: i for token, i in self._index.items() if 0 < i < self.first_bucket
        }
        for token in self._tokens:
            if not token or token.split() != [token]:
                raise ValueError(f"vocabulary token {token!r} is empty or holds whitespace")

    @classmethod
    def build(
        cls,
        counts: Mapping[str, int],
        min_frequency: int = 5,
        max_size: int | None = None,
        hash_buckets: int = 0,
    ) -> Vocabulary:
        """The tokens seen at least `min_frequency` times, most frequent first, ties A-Z.

        Args:
            counts: occurrences of each token in the training text.
            min_frequency: the fewest occurrences a token needs to get its own id.
            max_size: the most ids, the two special tokens included and the hash buckets
                not; None for no limit.
            hash_buckets: how many buckets share out the tokens left without an id.
        """
        if hash_buckets < 0:
            raise ValueError(f"hash_buckets must be at least 0, not {hash_buckets}")
        if max_size is not None and max_size < 2:
            raise ValueError(f"max_size must be at least 2 (the special tokens), not {max_size}")
        kept = [
            (token, n)
            for token, n in counts.items()
            if n >= min_frequency and token not in (PAD, UNK) and not token.startswith("<hash:")
        ]
        kept.sort(key=lambda item: (-item[1], item[0]))
        if max_size is not None:
            kept = kept[: max_size - 2]
        buckets = (_BUCKET.format(i) for i in range(hash_buckets))
        return cls([PAD, UNK, *(token for token, _ in kept), *buckets])

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._tokens == other._tokens

    def __contains__(self, token: str) -> bool:
        return token in self._index

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def tokens(self) -> list[str]:
        """Every token in id order (a copy)."""
        return list(self._tokens)

    def token_to_id(self, token: str) -> int:
        """The id of `token`; an unknown token gets its bucket's id, or `unk_id` if there
        are no buckets."""
        i = self._encoding.get(token)
        return self._unknown_id(token) if i is None else i

    def _unknown_id(self, token: str) -> int:
        if not self.num_buckets:
            return 1
        return self.first_bucket + bucket_of(token, self.num_buckets)

    def id_to_token(self, i: int) -> str:
        """The token with id `i`."""
        return self._tokens[i]

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """The ids of `tokens`. Unknown tokens (a literal `<pad>` among them) get their
        bucket's id, or `unk_id` if there are no buckets."""
        if not self.num_buckets:
            index = self._encoding
            return [index.get(token, 1) for token in tokens]
        return [self.token_to_id(token) for token in tokens]

    def bucket_ids(self) -> list[int]:
        """For every id, the id of its token's hash bucket: the way `encode` would map the
        token if it had no id of its own. Buckets and `<pad>` map to themselves, `<unk>`
        to its own bucket."""
        if not self.num_buckets:
            raise ValueError("this vocabulary has no hash buckets")
        return [
            i if i == 0 or i >= self.first_bucket else self._unknown_id(token)
            for i, token in enumerate(self._tokens)
        ]

    def save(self, path: str | Path) -> None:
        """Write one token a line, in id order, as UTF-8."""
        text = "".join(token + "\n" for token in self._tokens)
        Path(path).write_text(text, encoding="utf-8", newline="\n")

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a file written by `save`."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(path, f"cannot read the vocabulary: {err}") from err
        try:
            return cls(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"))
        except ValueError as err:
            raise DataError(path, str(err)) from err
