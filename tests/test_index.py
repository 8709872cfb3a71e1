import json
import random
import sys

import numpy as np
import pytest
import torch
from test_ranker import WORDS, overlap_model, random_model, write_run

from dualenc.cli import main
from dualenc.errors import DualencError
from dualenc.index import ResponseBank, encode_bank, read_responses
from dualenc.ranker import Ranker

CONTEXTS = ["my sound is broken", ["hello", "welcome to ubuntu", "grub is broken"],
            "try the live cd __eou__ __eot__ it is broken __eou__ __eot__ "]


def word_responses(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return list(dict.fromkeys(" ".join(rng.choices(WORDS, k=rng.randint(1, 8)))
                              for _ in range(count)))


@pytest.fixture(scope="module")
def random_ranker(tmp_path_factory):
    return Ranker.load(write_run(tmp_path_factory.mktemp("index") / "run", random_model()))


def test_responses_are_read_from_lines_or_ranking_files_without_duplicates(tmp_path):
    lines = tmp_path / "bank.txt"
    lines.write_text("try alsamixer\n\nhello\ntry alsamixer\n  hello  \nbye\n", encoding="utf-8")
    assert read_responses(lines) == (["try alsamixer", "hello", "bye"], 5)

    train = tmp_path / "train.csv"
    train.write_text("Context,Utterance,Label\n"
                     "hi __eou__ __eot__ ,hello __eou__,1\n"
                     "sound ? __eou__ __eot__ ,try alsamixer __eou__,0\n"
                     "hey __eou__ __eot__ ,hello __eou__,1\n", encoding="utf-8")
    assert read_responses(train) == (["hello __eou__", "try alsamixer __eou__"], 3)

    test = tmp_path / "test.csv"
    test.write_text("Context,Ground Truth Utterance,Distractor_0,Distractor_1\n"
                    "hi __eou__ __eot__ ,hello __eou__,bye __eou__,grub __eou__\n"
                    "yo __eou__ __eot__ ,grub __eou__,hello __eou__,cd __eou__\n",
                    encoding="utf-8")
    assert read_responses(test)[0] == ["hello __eou__", "bye __eou__", "grub __eou__",
                                       "cd __eou__"]

    xu = tmp_path / "valid.txt"
    xu.write_text("1\thi\thello\n0\thi\tbye\n1\tsound ?\ttry alsamixer\n", encoding="utf-8")
    assert read_responses(xu) == (["hello", "bye", "try alsamixer"], 3)
    assert read_responses(xu, "lines")[0][0] == "1\thi\thello"


def test_bank_vectors_are_m_times_r_and_give_the_rankers_logits(random_ranker):
    responses = word_responses(40)
    r = random_ranker.encode_responses(responses)  # (N, D)
    m = random_ranker.model.M.detach()
    vectors = encode_bank(random_ranker, responses, batch_size=16, progress=False)
    torch.testing.assert_close(torch.from_numpy(vectors), r @ m.t())
    assert not torch.allclose(r @ m.t(), r @ m, atol=1e-3)  # a transposed M would show

    bank = ResponseBank.build(random_ranker, responses, kind="exact", progress=False)
    logits, rows = bank.search(random_ranker.encode_contexts(CONTEXTS), k=len(responses))
    expected = random_ranker.score(CONTEXTS, [responses] * len(CONTEXTS))  # c·M·r + b, (B, N)
    found = np.take_along_axis(expected, rows, axis=1)
    np.testing.assert_allclose(logits, found, rtol=0, atol=1e-5)
    np.testing.assert_allclose(logits[:, 0], expected.max(axis=1), rtol=0, atol=1e-5)
    assert (np.diff(logits, axis=1) <= 0).all()


def test_index_is_saved_loaded_and_faiss_agrees_with_exact_on_a_small_bank(
    random_ranker, tmp_path
):
    responses = word_responses(400)
    exact = ResponseBank.build(random_ranker, responses, kind="exact", progress=False)
    approx = ResponseBank.build(random_ranker, responses, kind="faiss", nlist=4, nprobe=4,
                                progress=False)
    assert approx.meta["faiss"]["recall@10"] == 1.0  # every list searched: exact
    exact.save(tmp_path / "exact")
    approx.save(tmp_path / "faiss")
    assert sorted(p.name for p in (tmp_path / "faiss").iterdir()) == [
        "faiss.index", "meta.json", "responses.jsonl", "vectors.npy"]

    loaded = {name: ResponseBank.load(tmp_path / name, random_ranker) for name in ("exact",
                                                                                  "faiss")}
    assert loaded["faiss"].kind == "faiss" and loaded["exact"].kind == "exact"
    assert loaded["exact"].responses == responses
    for context in CONTEXTS:
        best = exact.respond(random_ranker, context, k=3)
        for bank in loaded.values():
            hits = bank.respond(random_ranker, context, k=3)
            assert [h.index for h in hits] == [h.index for h in best]
            assert hits[0].text == responses[best[0].index]
            assert hits[0].logit == pytest.approx(best[0].logit, abs=1e-5)


def test_faiss_nprobe_is_tuned_to_the_target_recall(random_ranker):
    bank = ResponseBank.build(random_ranker, word_responses(400, seed=1), kind="faiss",
                              nlist=8, target_recall=0.9, progress=False)
    faiss = bank.meta["faiss"]
    assert faiss["recall@10"] >= 0.9 or faiss["nprobe"] == faiss["nlist"] == 8
    assert faiss["recall_queries"] == 256
    assert bank.faiss_index.nprobe == faiss["nprobe"]


def test_an_index_refuses_a_run_it_was_not_built_with(random_ranker, tmp_path):
    bank = ResponseBank.build(random_ranker, word_responses(20), kind="exact", progress=False)
    bank.save(tmp_path / "bank")
    other = Ranker.load(write_run(tmp_path / "other", overlap_model()))
    with pytest.raises(DualencError, match="rebuild it with `dualenc index"):
        ResponseBank.load(tmp_path / "bank", other)
    retrained = Ranker(random_model(seed=0), random_ranker.encoder)
    with torch.no_grad():
        retrained.model.M[0, 0] += 0.01  # same shape and config, other weights
    with pytest.raises(DualencError, match="not with this run's model"):
        ResponseBank.load(tmp_path / "bank", retrained)
    meta = json.loads((tmp_path / "bank" / "meta.json").read_text())
    assert meta["run"]["fingerprint"] == random_ranker.fingerprint()


def test_a_missing_faiss_is_a_clear_error(random_ranker, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    with pytest.raises(DualencError, match=r"pip install 'dualenc\[faiss\]'"):
        ResponseBank.build(random_ranker, word_responses(50), kind="faiss", progress=False)


def test_index_command_writes_a_bank_and_keeps_an_existing_one(random_ranker, tmp_path, capsys):
    source = tmp_path / "bank.txt"
    source.write_text("hello\ntry alsamixer\nhello\n", encoding="utf-8")
    args = ["index", "--run", str(random_ranker.run_dir), "--responses", str(source),
            "--out", str(tmp_path / "bank"), "--no-progress"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("2 responses (1 duplicates dropped), 8-d, exact")
    meta = json.loads((tmp_path / "bank" / "meta.json").read_text())
    assert meta["size"] == 2 and meta["source"]["read"] == 3 and meta["run"]["checkpoint"] == "best"
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--kind", "faiss", "--nlist", "1"]) == 0
    assert "recall@10 1.000" in capsys.readouterr().out
