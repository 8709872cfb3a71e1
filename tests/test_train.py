import csv
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from dualenc.config import ModelConfig, TrainConfig
from dualenc.corpus.create import CreateOptions, create_sets
from dualenc.errors import DualencError
from dualenc.prepare import PrepareOptions, prepare
from dualenc.ranker import Ranker
from dualenc.train import Trainer, WeightAverage, train


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    options = CreateOptions(examples=320, seed=7, progress=False)
    create_sets(shared_data / "ubuntu-irc", root / "sets", options)
    prepare(root / "sets", root / "prepared", PrepareOptions(min_frequency=2, progress=False))
    return root


def tiny_model() -> ModelConfig:
    return ModelConfig(embed_dim=8, hidden_dim=8)


def tiny_train(**kw) -> TrainConfig:
    values = dict(batch_size=32, epochs=3, eval_every=0, patience=0, threads=1, progress=False)
    values.update(kw)
    return TrainConfig(**values)


def weights(run_dir):
    return load_file(str(run_dir / "last" / "model.safetensors"))


def test_run_folder_holds_checkpoints_logs_and_metrics(prepared, tmp_path):
    summary = train(prepared / "prepared", tmp_path / "run", tiny_model(), tiny_train(epochs=2))
    run = tmp_path / "run"
    assert summary["steps"] == 20 and summary["epochs"] == 2  # 320 pairs / 32 = 10 a epoch
    for name in ("config.json", "vocab.txt", "tokenizer.json", "metrics.csv"):
        assert (run / name).is_file()
    for folder in ("best", "last"):
        assert (run / folder / "model.safetensors").is_file()
    assert (run / "last" / "optimizer.safetensors").is_file()
    assert any((run / "tensorboard").iterdir())
    with open(run / "metrics.csv", newline="") as f:
        tags = {row["tag"] for row in csv.DictReader(f)}
    assert {"train/loss", "valid/loss", "valid/R@1/2", "valid/R@1/10", "valid/R@2/10",
            "valid/R@5/10"} <= tags
    state = json.loads((run / "best" / "state.json").read_text())
    assert state["trainer"]["best_step"] in (10, 20)


def test_same_seed_repeats_to_the_last_digit(prepared, tmp_path):
    for name in ("a", "b"):
        train(prepared / "prepared", tmp_path / name, tiny_model(), tiny_train(max_steps=6))
    a, b = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("loss", "ema_decay"), [("pair", 0.0), ("inbatch", 0.0),
                                                 ("symmetric", 0.9)])
def test_resume_ends_where_an_uninterrupted_run_ends(prepared, tmp_path, loss, ema_decay):
    config = dict(loss=loss, eval_every=4, ema_decay=ema_decay)
    data, whole, split = prepared / "prepared", tmp_path / "whole", tmp_path / "split"

    def model():  # dropout makes the random state matter
        return ModelConfig(embed_dim=8, hidden_dim=8, dropout=0.1)

    train(data, whole, model(), tiny_train(max_steps=14, **config))
    train(data, split, model(), tiny_train(max_steps=6, **config))
    # crosses an epoch boundary after the restart (10 or 5 batches an epoch)
    train(data, split, model(), tiny_train(max_steps=14, **config), resume=True)
    a, b = weights(whole), weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)
    if ema_decay:
        a, b = (load_file(str(run / "last" / "trained.safetensors")) for run in (whole, split))
        assert all(torch.equal(a[k], b[k]) for k in a)
    state = json.loads((split / "last" / "state.json").read_text())["trainer"]
    assert state["step"] == 14


def test_lanes_repeat_and_match_one_lane(prepared, tmp_path):
    data = prepared / "prepared"

    def model(dropout):
        return ModelConfig(embed_dim=8, hidden_dim=8, dropout=dropout)

    # dropout draws from each group's own generator: the same seed, the same weights, in
    # fp32 and under bf16 autocast
    for name, bf16 in (("a", False), ("b", False), ("c", True), ("d", True)):
        train(data, tmp_path / name, model(0.1), tiny_train(max_steps=6, lanes=2, bf16=bf16))
    for first, second in (("a", "b"), ("c", "d")):
        a, b = weights(tmp_path / first), weights(tmp_path / second)
        assert all(torch.equal(a[k], b[k]) for k in a)
    # without dropout, two lanes compute what one does, up to the order of the sums
    train(data, tmp_path / "one", model(0.0), tiny_train(max_steps=6, lanes=1))
    train(data, tmp_path / "two", model(0.0), tiny_train(max_steps=6, lanes=2))
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert all(torch.allclose(one[k], two[k], atol=1e-5) for k in one)


def test_the_moving_average_follows_its_ramped_decay(prepared, tmp_path):
    # decay 0.5, ramped: min(0.5, (1 + s) / (10 + s)) at step s = 0, 1, 2 is 1/10, 2/11, 3/12
    run = tmp_path / "run"
    steps = []

    class Recording(WeightAverage):
        def update(self, model, step):
            super().update(model, step)
            steps.append(({k: v.clone() for k, v in model.state_dict().items()}, step))

    trainer = Trainer(prepared / "prepared", run, tiny_model(),
                      tiny_train(max_steps=3, ema_decay=0.5))
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.average.__class__ = Recording
    trainer.fit()
    expected = start
    for current, step in steps:
        keep = min(0.5, (1 + step) / (10 + step))
        expected = {k: keep * expected[k] + (1 - keep) * current[k] for k in expected}
    assert [step for _, step in steps] == [0, 1, 2]
    saved = weights(run)
    trained = load_file(str(run / "last" / "trained.safetensors"))
    for name, value in saved.items():
        assert torch.allclose(value, expected[name], atol=1e-6), name
    assert not torch.equal(saved["M"], trained["M"])
    assert torch.equal(trained["M"], steps[-1][0]["M"])


def test_an_existing_run_is_not_overwritten_by_accident(prepared, tmp_path):
    train(prepared / "prepared", tmp_path / "run", tiny_model(), tiny_train(max_steps=1))
    with pytest.raises(DualencError, match="already holds a run"):
        train(prepared / "prepared", tmp_path / "run", tiny_model(), tiny_train(max_steps=1))


def test_a_checkpoint_loads_in_a_fresh_process_without_training_arguments(prepared, tmp_path):
    run = tmp_path / "run"
    train(prepared / "prepared", run, tiny_model(), tiny_train(max_steps=3))
    context = "my sound does not work __eou__ __eot__ "
    candidates = ["try alsamixer __eou__", "hello __eou__", "reinstall grub __eou__"]
    here = Ranker.load(run).score([context], [candidates])[0].tolist()
    code = (
        "import json, sys; from dualenc.ranker import Ranker; "
        "r = Ranker.load(sys.argv[1]); "
        "print(json.dumps(r.score([sys.argv[2]], [json.loads(sys.argv[3])])[0].tolist()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(run), context, json.dumps(candidates)],
        capture_output=True, text=True, check=True,
    )
    assert json.loads(out.stdout) == pytest.approx(here, abs=1e-6)
    ranked = Ranker.load(run).rank(context, candidates)
    assert sorted(c.index for c in ranked) == [0, 1, 2]
    assert [c.logit for c in ranked] == sorted(here, reverse=True)


def test_it_learns_on_real_dialogs(shared_data, tmp_path):
    # 8,000 pairs from the real IRC dialogs; a small model with the in-batch loss and GloVe
    # vectors. Chance is R@1/10 = 0.1; training must lift the validation score well above
    # that of the same model untrained.
    create_sets(shared_data / "ubuntu-irc", tmp_path / "sets",
                CreateOptions(examples=8000, seed=3, progress=False))
    prepare(tmp_path / "sets", tmp_path / "prepared",
            PrepareOptions(min_frequency=2, progress=False))
    model = ModelConfig(embed_dim=50, hidden_dim=64, m_init="identity")
    config = tiny_train(loss="inbatch", batch_size=128, epochs=6, patience=0,
                        embeddings="glove-6b-50d", context_window=60)
    from dualenc.evaluate import evaluate_split
    from dualenc.model import DualEncoder
    from dualenc.prepare import load_prepared

    data = load_prepared(tmp_path / "prepared")
    torch.manual_seed(config.seed)
    untrained = DualEncoder(ModelConfig(**{**vars(model), "vocab_size": len(data.vocab)}))
    before = evaluate_split(untrained, data.valid, loss="inbatch")["R@1/10"]
    summary = train(tmp_path / "prepared", tmp_path / "run", model, config)
    after = summary["best_R@1/10"]
    # seeded, so the same on every run: 0.137 untrained, 0.187 trained; chance is 0.100 with a
    # standard error of 0.016 on 343 rows
    assert after >= 0.17 and after >= before + 0.03, (before, after)


def test_hashed_words_need_buckets_and_keep_a_run_repeatable(shared_data, tmp_path):
    sets = tmp_path / "sets"
    create_sets(shared_data / "ubuntu-irc", sets, CreateOptions(examples=320, seed=7,
                                                                progress=False))
    config = tiny_train(max_steps=4, hash_words=0.5, hash_words_from=50)
    plain = tmp_path / "plain"
    prepare(sets, plain, PrepareOptions(min_frequency=2, hash_buckets=0, progress=False))
    with pytest.raises(DualencError, match="--hash-buckets"):
        train(plain, tmp_path / "refused", tiny_model(), config)
    hashed = tmp_path / "hashed"
    prepare(sets, hashed, PrepareOptions(min_frequency=2, hash_buckets=64, progress=False))
    for name in ("a", "b"):
        train(hashed, tmp_path / name, tiny_model(), config)
    train(hashed, tmp_path / "off", tiny_model(), tiny_train(max_steps=4))
    a, b, off = (weights(tmp_path / name) for name in ("a", "b", "off"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # without dropout, only the hashing can make the two runs differ
    assert not torch.equal(a["embedding.weight"], off["embedding.weight"])


def test_glibc_takes_the_allocator_thresholds():
    import platform

    from dualenc.memory import keep_freed_memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory() is True


def test_the_small_data_preset_resolves_to_valid_configs():
    from dualenc.commands.train import COMMAND_DEFAULTS, PRESETS, resolve_auto, split_settings
    from dualenc.config import validate
    from dualenc.evaluate import has_native_bf16

    settings = resolve_auto({**COMMAND_DEFAULTS, **PRESETS["small-data"], "device": "cpu"})
    assert settings["bf16"] is has_native_bf16(torch.device("cpu"))
    model, config = split_settings(settings)
    model.vocab_size = 100  # the trainer sets it from the prepared folder
    validate(model, config)
    assert (model.bidirectional, model.pooling, config.loss) == (True, "max", "symmetric")
    # the command's "auto" never reaches a saved config; anything else passes through as it is
    assert resolve_auto({"bf16": False}) == {"bf16": False}
    assert TrainConfig(bf16="auto").problems() == ["bf16 must be true or false, got 'auto'"]
