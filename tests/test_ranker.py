import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dualenc import __version__
from dualenc.checkpoint import run_config, save_checkpoint
from dualenc.cli import main
from dualenc.config import ModelConfig, TrainConfig
from dualenc.features import TextEncoder
from dualenc.fileio import write_json
from dualenc.model import DualEncoder
from dualenc.ranker import Ranker, context_text, length_groups
from dualenc.text import PAD, UNK, Tokenizer, Vocabulary, join_turns

# The words the test models know; every other token (the markers too) is <unk>.
WORDS = ["my", "sound", "is", "broken", "try", "alsamixer", "unmute", "reinstall", "grub",
         "live", "cd", "hello", "welcome", "ubuntu"]
TOKENS = [PAD, UNK, *WORDS]
ONE_WORD = float(np.tanh(1.0)) ** 2  # the overlap model's logit for one word shared once


def write_run(run_dir: Path, model: DualEncoder, tokens: list[str] = TOKENS) -> Path:
    """A run folder as `dualenc train` leaves it, around an untrained model."""
    run_dir.mkdir(parents=True)
    write_json(run_dir / "config.json",
               run_config(model.config, TrainConfig(), Path("none"), (160, 160), __version__))
    Vocabulary(tokens).save(run_dir / "vocab.txt")
    Tokenizer().save(run_dir / "tokenizer.json")
    save_checkpoint(run_dir / "best", model, {"trainer": {"step": 0}})
    return run_dir


def overlap_model(vocab_size: int = len(TOKENS)) -> DualEncoder:
    """A dual encoder that scores the words a context and a response share.

    Hidden unit j counts word j through a saturated LSTM cell (input, forget and output
    gates open, cell input tanh(10) for word j, nothing for <pad> and <unk>), so an encoding
    is tanh(times each word was seen); with M = I and b = 0 the logit is
    sum_j tanh(n_j(context)) * tanh(n_j(response)): tanh(1)^2 = 0.580 for one shared word.
    """
    v = vocab_size
    model = DualEncoder(ModelConfig(vocab_size=v, embed_dim=v, hidden_dim=v, m_init="identity"))
    rnn = model.encoder.forward_rnn
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        model.embedding.weight.copy_(torch.eye(v))
        model.embedding.weight[:2] = 0  # <pad>, <unk>
        rnn.bias_ih_l0[: 2 * v] = 10.0  # input and forget gates
        rnn.bias_ih_l0[3 * v :] = 10.0  # output gate
        rnn.weight_ih_l0[2 * v : 3 * v] = 10.0 * torch.eye(v)  # cell input: the word's unit
        model.M.copy_(torch.eye(v))
    return model.eval()


def random_model(vocab_size: int = len(TOKENS), seed: int = 0, **config) -> DualEncoder:
    """A tiny randomly initialised model: M is far from symmetric, b is not zero."""
    torch.manual_seed(seed)
    model = DualEncoder(ModelConfig(vocab_size=vocab_size, embed_dim=8, hidden_dim=8, **config))
    with torch.no_grad():
        model.b.fill_(0.25)
    return model.eval()


@pytest.fixture(scope="module")
def overlap_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("overlap") / "run", overlap_model())


@pytest.fixture(scope="module")
def random_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("random") / "run", random_model())


def test_rank_puts_the_obvious_answer_first_with_logits_and_probabilities(overlap_run):
    candidates = ["reinstall grub", "try alsamixer to unmute the sound", "hello"]
    ranked = Ranker.load(overlap_run).rank("my sound is broken", candidates)
    assert [c.index for c in ranked][0] == 1  # the only candidate that shares a word
    assert ranked[0].text == candidates[1]
    assert ranked[0].logit == pytest.approx(ONE_WORD, abs=1e-3)
    assert [c.logit for c in ranked[1:]] == [0.0, 0.0]  # nothing shared: tanh(0) = 0
    assert [c.index for c in ranked[1:]] == [0, 2]  # ties keep their input order
    for c in ranked:
        assert c.probability == pytest.approx(1 / (1 + np.exp(-c.logit)))


def test_rank_and_score_agree_and_contexts_come_as_text_or_turns(random_run):
    ranker = Ranker.load(random_run)
    turns = ["my sound is broken", "try alsamixer __eou__", "it is muted __eou__ __eot__"]
    candidates = ["unmute it", "reinstall grub from a live cd", "hello", ""]
    as_text = join_turns(turns)
    logits = ranker.score([as_text], [candidates])[0]
    ranked = ranker.rank(turns, candidates)
    assert [c.logit for c in ranked] == sorted(logits.tolist(), reverse=True)
    assert [logits[c.index] for c in ranked] == [c.logit for c in ranked]
    assert ranker.score([turns], [candidates]).tolist() == [logits.tolist()]

    # plain text without markers is one turn, as in every training context
    assert context_text("my sound is broken") == "my sound is broken __eou__ __eot__ "
    assert context_text(as_text) == as_text
    bare = ranker.score(["my sound"], [candidates])
    assert bare.tolist() == ranker.score([["my sound"]], [candidates]).tolist()
    assert ranker.rank("my sound", []) == []
    with pytest.raises(ValueError, match="rows of candidates"):
        ranker.score(["a", "b"], [["x", "y"], ["z"]])


@pytest.mark.parametrize("config", [{}, {"cell": "gru", "bidirectional": True}])
def test_length_groups_cover_each_row_once_and_encode_like_one_at_a_time(config):
    lengths = [30, 1, 2, 2, 3, 25, 0, 4, 3, 40, 2]
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert len(groups) > 1  # one call would pad the ten short rows to 40 steps

    model = random_model(**config)
    ranker = Ranker(model, TextEncoder(Tokenizer(), Vocabulary(TOKENS)))
    words = " ".join(WORDS * 3).split()
    texts = [" ".join(words[:n]) for n in lengths]
    together = ranker.encode_responses(texts)  # (11, D)
    with torch.inference_mode():
        alone = []
        for text in texts:
            ids = ranker.encoder.encode_response(text) or [0]
            alone.append(ranker.model.encode(torch.tensor([ids]), torch.tensor([len(ids)]))[0])
    torch.testing.assert_close(together, torch.stack(alone), rtol=0, atol=1e-6)


def test_the_fingerprint_changes_with_the_weights_only(random_run, tmp_path):
    a, b = Ranker.load(random_run), Ranker.load(random_run)
    assert a.fingerprint() == b.fingerprint()
    with torch.no_grad():
        b.model.M[0, 1] += 1e-3
    assert a.fingerprint() != b.fingerprint()
    other = Ranker.load(write_run(tmp_path / "other", random_model(seed=1)))
    assert other.fingerprint() != a.fingerprint()


def test_rank_command_prints_a_table_and_json(overlap_run, tmp_path, capsys):
    args = ["rank", "--run", str(overlap_run), "--context", "my sound is broken"]
    assert main([*args, "hello", "the sound"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["rank", "logit", "prob", "input", "candidate"]
    assert lines[1].split() == ["1", "0.580", "0.641", "1", "the", "sound"]  # sigmoid(0.58)
    assert lines[2].split() == ["2", "0.000", "0.500", "0", "hello"]

    listed = tmp_path / "candidates.txt"
    listed.write_text("hello\n\ntry alsamixer for the sound\n", encoding="utf-8")
    assert main([*args, "--context", "grub", "--candidates", str(listed), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["context"] == ["my sound is broken", "grub"]
    assert [r["text"] for r in out["ranked"]] == ["try alsamixer for the sound", "hello"]
    assert out["ranked"][0]["logit"] == pytest.approx(ONE_WORD, abs=1e-3)

    assert main(args) == 1
    assert "no candidates" in capsys.readouterr().err
