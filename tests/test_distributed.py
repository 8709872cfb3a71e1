"""`dualenc train` under torchrun: two CPU processes (gloo) checked against one process.

Each torchrun finds its rendezvous at 127.0.0.1:0, a port the system picks free. Run as a
script under torchrun, this file is also the worker of the gradient test (see the end).
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dualenc.checkpoint import load_model
from dualenc.cli import main
from dualenc.config import ModelConfig, TrainConfig
from dualenc.corpus.create import CreateOptions, create_sets
from dualenc.prepare import PrepareOptions, prepare
from dualenc.train import Trainer

# 31 pairs a step: slices of 16 and 15 rows, so the weighting of unequal slices is tested
BATCH = 31
STEPS = 6  # the in-batch loss's 168 true pairs make 6 batches an epoch, the last of 13
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
            "--nproc-per-node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", "127.0.0.1:0"]


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    create_sets(shared_data / "ubuntu-irc", root / "sets", CreateOptions(examples=320, seed=7,
                                                                         progress=False))
    prepare(root / "sets", root / "prepared", PrepareOptions(min_frequency=2, progress=False))
    return root / "prepared"


def flags(**settings) -> list[str]:
    """Command-line flags of a tiny run; dropout 0 unless given, so runs can be compared."""
    values = dict(embed_dim=8, hidden_dim=8, batch_size=BATCH, max_steps=STEPS, patience=0,
                  threads=1, device="cpu", dropout=0.0)
    values.update(settings)
    return [x for k, v in values.items() for x in (f"--{k.replace('_', '-')}", str(v))]


def torchrun(*args: str, trace: Path | None = None) -> None:
    env = dict(os.environ)
    if trace:
        env["DUALENC_TRACE_ROWS"] = str(trace)
    done = subprocess.run([*TORCHRUN, *args], env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def train_twice(prepared: Path, root: Path, **settings) -> tuple[Path, Path]:
    """The same run in one process and in two under torchrun, each tracing its rows."""
    # fp32: bf16 rounding differs between one batch and its two halves
    args = ["train", str(prepared), "--no-progress", "--no-bf16", *flags(**settings)]
    torchrun("-m", "dualenc", *args, "--out", str(root / "two"), trace=root / "trace-two")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DUALENC_TRACE_ROWS", str(root / "trace-one"))
        assert main([*args, "--out", str(root / "one")]) == 0
    return root / "one", root / "two"


@pytest.fixture(scope="module", params=["pair", "inbatch"])
def runs(request, prepared, tmp_path_factory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp(request.param)
    one, two = train_twice(prepared, root, loss=request.param)
    return one, two, request.param


def traced_rows(folder: Path, rank: int) -> dict[int, list[int]]:
    """step -> training rows, as DUALENC_TRACE_ROWS wrote them for one rank."""
    lines = (folder / f"rows-rank{rank}.txt").read_text().splitlines()
    return {int(line.split()[0]): [int(x) for x in line.split()[1:]] for line in lines}


def metric_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def validation_rows(run: Path) -> list[tuple[str, str, str]]:
    """(step, tag, value) of every validation value in metrics.csv."""
    return [(r["step"], r["tag"], r["value"]) for r in metric_rows(run)
            if r["tag"].startswith("valid/")]


def test_each_process_trains_on_its_own_slice_of_the_global_batch(runs):
    one, two, _ = runs
    global_batches = traced_rows(one.parent / "trace-one", 0)
    rank0, rank1 = (traced_rows(two.parent / "trace-two", r) for r in (0, 1))
    assert list(global_batches) == list(rank0) == list(rank1) == list(range(1, STEPS + 1))
    for step, batch in global_batches.items():
        assert set(rank0[step]).isdisjoint(rank1[step])
        assert rank0[step] + rank1[step] == batch  # contiguous slices, in rank order
        assert abs(len(rank0[step]) - len(rank1[step])) <= 1


def test_the_model_matches_one_process_training_on_the_global_batch(runs):
    one, two, loss = runs
    a = load_file(str(one / "last" / "model.safetensors"))
    b = load_file(str(two / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    # NOTE: the softmax of the in-batch loss ignores b (it shifts a whole row of logits), so
    # b's gradient is rounding noise, which Adam turns into steps of lr: b is not compared.
    names = [k for k in a if not (loss == "inbatch" and k == "b")]
    for name in names:
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-5), name


def test_one_checkpoint_set_and_one_row_per_logged_value(runs):
    one, two, _ = runs
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir()) == [
        "best", "config.json", "last", "metrics.csv", "tensorboard", "tokenizer.json",
        "vocab.txt",
    ]
    assert len(list((two / "tensorboard").iterdir())) == 1  # one event file: rank 0's
    rows_one, rows_two = metric_rows(one), metric_rows(two)
    keys = [(r["step"], r["tag"]) for r in rows_two]
    assert len(keys) == len(set(keys))  # nothing logged twice
    assert [(r["step"], r["epoch"], r["examples"], r["tag"]) for r in rows_two] == [
        (r["step"], r["epoch"], r["examples"], r["tag"]) for r in rows_one
    ]
    for a, b in zip(rows_one, rows_two, strict=True):
        if a["tag"] != "train/pairs_per_second":  # the loss is the mean over both processes
            assert float(a["value"]) == pytest.approx(float(b["value"]), abs=1e-4), a["tag"]
    model, state = load_model(two, "best", device="cpu")
    assert state["trainer"]["step"] == STEPS and next(model.parameters()).device.type == "cpu"


def one_step_gradients(
    prepared: Path, out: Path, loss: str, threads: int
) -> dict[str, torch.Tensor]:
    """Gradients of one training step on the first BATCH training rows (clipping off)."""
    config = TrainConfig(loss=loss, clip_norm=1e9, threads=threads, device="cpu",
                         progress=False)
    trainer = Trainer(prepared, out, ModelConfig(embed_dim=8, hidden_dim=8), config)
    trainer._step(trainer.training_rows()[:BATCH])
    if trainer.logger:
        trainer.logger.close()
    return {name: p.grad for name, p in trainer.model.named_parameters()}


def test_gradients_of_a_step_match_one_process(prepared, tmp_path):
    # DDP averages gradients over processes and the gather's backward sums them: together
    # with the weighting of each slice, a step must follow the global batch's mean loss.
    torchrun(__file__, str(prepared), str(tmp_path))
    for loss in ("pair", "inbatch", "symmetric"):
        two = load_file(str(tmp_path / f"grads-{loss}.safetensors"))
        one = one_step_gradients(prepared, tmp_path / f"one-{loss}", loss, threads=1)
        for name, grad in one.items():
            # atol: the in-batch loss's gradient of b is zero but for rounding (about 1e-7)
            assert torch.allclose(grad, two[name], rtol=1e-4, atol=1e-6), (loss, name)
    for rank in (0, 1):  # torch threads default to the cores shared among local processes
        seen = json.loads((tmp_path / f"threads-rank{rank}.json").read_text())
        assert seen["threads"] == max(1, seen["cores"] // 2)


def test_a_resumed_distributed_run_ends_where_an_uninterrupted_one_ends(prepared, tmp_path):
    # dropout makes every process's random state matter; 4 is mid-epoch (6 batches an epoch);
    # bf16 autocast on the CPU rides along
    settings = dict(loss="inbatch", dropout=0.1, eval_every=4)
    args = ["-m", "dualenc", "train", str(prepared), "--no-progress", "--bf16"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    torchrun(*args, "--out", str(whole), *flags(max_steps=14, **settings))
    torchrun(*args, "--out", str(split), *flags(max_steps=4, **settings))
    torchrun(*args, "--out", str(split), "--resume", *flags(max_steps=14, **settings))
    a = load_file(str(whole / "last" / "model.safetensors"))
    b = load_file(str(split / "last" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((split / "last" / "state.json").read_text())["trainer"]["step"] == 14
    # train/loss is logged at the stop as well, so only the validation rows must agree
    assert validation_rows(split) == validation_rows(whole)
    # every 4 steps, at each epoch's end (6, 12) and at the stop, but once a step: 6 tags each
    assert [row[0] for row in validation_rows(whole)[::6]] == ["4", "6", "8", "12", "14"]


def _gradient_worker(prepared: Path, out: Path) -> None:
    """Under torchrun: one step's gradients for each loss, and this process's thread count."""
    for loss in ("pair", "inbatch", "symmetric"):
        grads = one_step_gradients(prepared, out / f"two-{loss}", loss, threads=0)
        if int(os.environ["RANK"]) == 0:
            save_file(grads, str(out / f"grads-{loss}.safetensors"))
    seen = {"threads": torch.get_num_threads(), "cores": len(os.sched_getaffinity(0))}
    (out / f"threads-rank{os.environ['RANK']}.json").write_text(json.dumps(seen))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    _gradient_worker(Path(sys.argv[1]), Path(sys.argv[2]))
