"""The tokenizers and the vocabulary."""

from __future__ import annotations

from collections import Counter

import pytest

from dualenc.errors import DataError
from dualenc.text import PAD, UNK, Tokenizer, Vocabulary, bucket_of, join_turns

# Text as the real UDC v2 files hold it: already tokenized, so it must come back as it is.
PRETOKENIZED = [
    "do n't",
    "it 's",
    "`` // fixm : be this requir ? ''",
    "https : //bugs.launchpad.net/lightdm/+bug/864109/c2",
    "$ user",
    "# ubuntu-offtop __eou__",
    "2.6.8.1",
    "but it 's realli not the right time : / __eou__ with a chang __eou__ __eot__",
    "i do n't pm . ; ) __eou__ oop sorri",
]

# Raw IRC text and what the default tokenizer makes of it.
RAW = {
    "(built from the .config that came with the 2.6.8.1 generic amd64 kernel": [
        "(", "built", "from", "the", ".config", "that", "came", "with", "the", "2.6.8.1",
        "generic", "amd64", "kernel",
    ],
    "you'll need to build an initrd": ["you", "'ll", "need", "to", "build", "an", "initrd"],
    "which came with Ubuntu Warty)": ["which", "came", "with", "ubuntu", "warty", ")"],
    "hello, world!": ["hello", ",", "world", "!"],
    "Don't, it's fine": ["do", "n't", ",", "it", "'s", "fine"],
    "I can't, won't; I'd've": ["i", "ca", "n't", ",", "wo", "n't", ";", "i", "'d", "'ve"],
    "see http://example.com/a?b=1. or ~/.bashrc,": [
        "see", "http://example.com/a?b=1", ".", "or", "~/.bashrc", ",",
    ],
    "edit /etc/X11/xorg.conf (as root)...": [
        "edit", "/etc/x11/xorg.conf", "(", "as", "root", ")", "...",
    ],
    "use e.g. dual-boot, 'quoted' \"text\"?!": [
        "use", "e.g.", "dual-boot", ",", "'", "quoted", "'", '"', "text", '"', "?", "!",
    ],
    "it don\u2019t work __eou__ __eot__": ["it", "do", "n't", "work", "__eou__", "__eot__"],
}


@pytest.mark.parametrize("text", PRETOKENIZED)
def test_default_tokenizer_leaves_pretokenized_text_alone(text: str) -> None:
    assert Tokenizer().tokenize(text) == text.lower().split()


@pytest.mark.parametrize("text", list(RAW))
def test_default_tokenizer_splits_raw_text(text: str) -> None:
    assert Tokenizer().tokenize(text) == RAW[text]


IDEMPOTENCE_CASES = [
    *PRETOKENIZED,
    *RAW,
    "wait... what?!) (\"nested 'quotes'\")",
    "<nick> ok:) :-( -> foo.'s 'tis rock'n'roll dogs' <<eof",
    "``hello'' ''world`` e.g.. i.e.,, n't 's 'll",
    "C:\\Program Files\\ x86_64 --help -rf #ubuntu $HOME/bin",
    "\u201cdouble\u201d \u00abguillemets\u00bb tail\u2026",
    "", "   ", "__eou__ __eot__", ".", "'", "a'", "'a", "((x))", "x.y.",
]


@pytest.mark.parametrize("text", IDEMPOTENCE_CASES)
def test_tokenizing_tokenized_text_changes_nothing(text: str) -> None:
    tokenizer = Tokenizer()
    tokens = tokenizer.tokenize(text)
    assert tokenizer.tokenize(" ".join(tokens)) == tokens


def test_idempotence_on_real_irc_lines(shared_data) -> None:
    tokenizer = Tokenizer()
    paths = sorted((shared_data / "ubuntu-irc" / "dialogs" / "3").glob("*.tsv"))[:200]
    lines = [
        line.split("\t")[-1]
        for path in paths
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    assert len(lines) > 1000
    for line in lines:
        tokens = tokenizer.tokenize(line)
        assert tokenizer.tokenize(" ".join(tokens)) == tokens, line


def test_whitespace_tokenizer_only_splits() -> None:
    assert Tokenizer("whitespace").tokenize("Don't (panic)!") == ["don't", "(panic)!"]
    assert Tokenizer("whitespace", lowercase=False).tokenize(" A  b ") == ["A", "b"]


def test_default_tokenizer_can_keep_case() -> None:
    assert Tokenizer(lowercase=False).tokenize("Don't Panic!") == ["Do", "n't", "Panic", "!"]


def test_tokenizer_settings_round_trip(tmp_path) -> None:
    tokenizer = Tokenizer("whitespace", lowercase=False)
    assert Tokenizer.from_dict(tokenizer.to_dict()) == tokenizer
    tokenizer.save(tmp_path / "tokenizer.json")
    assert Tokenizer.load(tmp_path / "tokenizer.json") == tokenizer


def test_unknown_tokenizer_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown tokenizer"):
        Tokenizer("nltk")
    (tmp_path / "tokenizer.json").write_text('{"kind": "nltk", "lowercase": true}')
    with pytest.raises(DataError, match="tokenizer.json"):
        Tokenizer.load(tmp_path / "tokenizer.json")


def test_join_turns_adds_only_missing_markers() -> None:
    turns = ["hi", "there __eou__", "yes __eou__ __eot__", "  "]
    assert join_turns(turns) == "hi __eou__ __eot__ there __eou__ __eot__ yes __eou__ __eot__ "


COUNTS = Counter({"the": 9, "ubuntu": 7, "apt": 7, "grub": 5, "kernel": 4, "x": 1})


def test_vocabulary_orders_by_frequency_then_alphabet() -> None:
    vocab = Vocabulary.build(COUNTS, min_frequency=5)
    # "apt" and "ubuntu" tie at 7: alphabetical; "kernel" (4) and "x" (1) are below 5.
    assert vocab.tokens == [PAD, UNK, "the", "apt", "ubuntu", "grub"]
    assert (vocab.pad_id, vocab.unk_id) == (0, 1)
    assert vocab.token_to_id("apt") == 3
    assert vocab.token_to_id("kernel") == vocab.unk_id
    assert vocab.id_to_token(5) == "grub"


def test_vocabulary_cuts_at_min_frequency_and_max_size() -> None:
    assert len(Vocabulary.build(COUNTS, min_frequency=1)) == 8  # 6 tokens + 2 specials
    assert len(Vocabulary.build(COUNTS, min_frequency=4)) == 7  # "x" out
    # max_size counts the specials: 4 ids = <pad>, <unk>, "the", "apt".
    assert Vocabulary.build(COUNTS, min_frequency=1, max_size=4).tokens == [
        PAD, UNK, "the", "apt",
    ]
    assert len(Vocabulary.build(COUNTS, min_frequency=1, max_size=2)) == 2
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build(COUNTS, max_size=1)


def test_vocabulary_encodes_unknown_tokens_as_unk() -> None:
    vocab = Vocabulary.build(COUNTS, min_frequency=5)
    assert vocab.encode(["the", "kernel", "grub", "<pad>", "<unk>"]) == [2, 1, 5, 1, 1]


def test_vocabulary_round_trip(tmp_path) -> None:
    vocab = Vocabulary.build(Counter({"caf\u00e9": 6, "__eou__": 9, "n't": 5}), min_frequency=5)
    vocab.save(tmp_path / "vocab.txt")
    text = (tmp_path / "vocab.txt").read_text(encoding="utf-8")
    assert text == "<pad>\n<unk>\n__eou__\ncaf\u00e9\nn't\n"  # line number = id
    loaded = Vocabulary.load(tmp_path / "vocab.txt")
    assert loaded.tokens == vocab.tokens
    tokens = ["n't", "caf\u00e9", "nope", "__eou__"]
    assert loaded.encode(tokens) == vocab.encode(tokens) == [4, 3, 1, 2]


def test_unknown_tokens_share_hash_buckets(tmp_path) -> None:
    vocab = Vocabulary.build(COUNTS, min_frequency=5, hash_buckets=4)
    assert vocab.tokens == [PAD, UNK, "the", "apt", "ubuntu", "grub",
                            "<hash:0>", "<hash:1>", "<hash:2>", "<hash:3>"]
    assert (vocab.num_buckets, vocab.first_bucket) == (4, 6)
    # CRC-32 mod 4: "nope" 2882617104 -> 0, "kernel" 1574083243 -> 3, "x" 2363233923 -> 3,
    # "<pad>" 1076432921 -> 1; a known token keeps its id, so does a literal "<unk>".
    assert [bucket_of(t, 4) for t in ("nope", "kernel", "x", "<pad>")] == [0, 3, 3, 1]
    assert vocab.encode(["the", "nope", "kernel", "x", "<pad>", "<unk>"]) == [2, 6, 9, 9, 7, 1]
    assert vocab.token_to_id("kernel") == 9 and vocab.token_to_id("apt") == 3
    # A literal bucket token is unknown text like any other; "<hash:0>" hashes to bucket 1.
    assert vocab.encode(["<hash:0>"]) == [6 + bucket_of("<hash:0>", 4)]
    # Where each token would go without its id: "grub" 557064543 -> 3; <unk> 4214471641 -> 1.
    assert vocab.bucket_ids() == [0, 7, 6 + bucket_of("the", 4), 6 + bucket_of("apt", 4),
                                  6 + bucket_of("ubuntu", 4), 9, 6, 7, 8, 9]
    vocab.save(tmp_path / "vocab.txt")
    loaded = Vocabulary.load(tmp_path / "vocab.txt")
    assert (loaded.num_buckets, loaded.encode(["kernel"])) == (4, [9])
    with pytest.raises(ValueError, match="no hash buckets"):
        Vocabulary.build(COUNTS).bucket_ids()


def test_hash_buckets_must_end_the_vocabulary_in_order(tmp_path) -> None:
    (tmp_path / "vocab.txt").write_text("<pad>\n<unk>\n<hash:1>\n<hash:0>\n", encoding="utf-8")
    with pytest.raises(DataError, match="hash buckets"):
        Vocabulary.load(tmp_path / "vocab.txt")
    with pytest.raises(ValueError, match="hash_buckets"):
        Vocabulary.build(COUNTS, hash_buckets=-1)


@pytest.mark.parametrize("token", ["two words", "new\nline", "", "tab\t"])
def test_vocabulary_refuses_tokens_with_whitespace(token: str) -> None:
    with pytest.raises(ValueError, match="whitespace"):
        Vocabulary([PAD, UNK, token])


def test_vocabulary_file_must_start_with_specials(tmp_path) -> None:
    (tmp_path / "vocab.txt").write_text("the\n<pad>\n<unk>\n", encoding="utf-8")
    with pytest.raises(DataError, match="starts with"):
        Vocabulary.load(tmp_path / "vocab.txt")
    (tmp_path / "dupes.txt").write_text("<pad>\n<unk>\na\na\n", encoding="utf-8")
    with pytest.raises(DataError, match="once"):
        Vocabulary.load(tmp_path / "dupes.txt")
