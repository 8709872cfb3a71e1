"""The training loop: length-bucketed batches, validation, best and last checkpoints, resume.

Runs unchanged on one CPU, one GPU, or under `torchrun` with DistributedDataParallel:
every process builds the same global batches from (seed, epoch) and trains on its own slice
of each; rank 0 validates and writes checkpoints while the others wait.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from dualenc import __version__
from dualenc.batching import PairBatch, epoch_batches, pair_batch, shard, shard_bounds
from dualenc.checkpoint import (
    load_optimizer_state,
    load_rng_state,
    read_run_config,
    run_config,
    save_checkpoint,
    write_run_files,
)
from dualenc.config import ModelConfig, TrainConfig, validate
from dualenc.distributed import (
    DistContext,
    broadcast_flag,
    gather_keys,
    gather_rng_states,
    gather_with_grad,
    init_distributed,
    mean_over_processes,
    set_rng_states,
)
from dualenc.embeddings import load_pretrained
from dualenc.errors import DualencError
from dualenc.evaluate import bf16_autocast, evaluate_split
from dualenc.lanes import default_lanes
from dualenc.logs import RunLogger
from dualenc.memory import keep_freed_memory
from dualenc.metrics import format_metrics
from dualenc.model import DualEncoder, inbatch_loss, pair_loss
from dualenc.prepare import Prepared, load_prepared

log = logging.getLogger(__name__)

SELECTION_METRIC = "R@1/10"
LOG_EVERY = 50  # steps between train-loss points in the logs


@dataclass
class TrainState:
    """Where training stands; saved with every checkpoint so a run can resume exactly."""

    step: int = 0
    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch already done
    examples: int = 0  # training pairs seen (all processes)
    best_score: float = -math.inf
    best_step: int = 0
    evals_without_gain: int = 0
    stopped_early: bool = False


class WeightAverage:
    """An exponential moving average of a model's weights, held in a copy of the model.

    The decay ramps up as min(decay, (1 + step) / (10 + step)), so the first steps do not
    drag the initial weights along; the average is a function of the steps taken, which is
    what makes a resumed run end where an uninterrupted one does.
    """

    def __init__(self, model: DualEncoder, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        weight = 1.0 - min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), weight)


class _Window:
    """Train loss and throughput over the steps since the last log point."""

    def __init__(self) -> None:
        self.loss_sum, self.steps, self.pairs, self.start = 0.0, 0, 0, time.perf_counter()

    def add(self, loss: float, pairs: int) -> None:
        self.loss_sum += loss
        self.steps += 1
        self.pairs += pairs

    def flush(self) -> tuple[float, float]:
        """(mean loss, pairs per second), then start a new window."""
        mean = self.loss_sum / max(self.steps, 1)
        rate = self.pairs / max(time.perf_counter() - self.start, 1e-9)
        self.__init__()
        return mean, rate


class Objective(nn.Module):
    """The model plus its loss, so that DistributedDataParallel wraps one forward call."""

    def __init__(self, model: DualEncoder, loss: str, ctx: DistContext) -> None:
        super().__init__()
        self.model, self.loss, self.ctx = model, loss, ctx

    def forward(
        self, c_ids: Tensor, c_lens: Tensor, r_ids: Tensor, r_lens: Tensor, labels: Tensor,
        r_keys: Tensor, global_size: int,
    ) -> Tensor:
        """This process's part of the global batch's loss; `global_size` pairs in all."""
        c, r = self.model.encode_pairs(c_ids, c_lens, r_ids, r_lens)  # (b, D), (b, D)
        c, r = c.float(), r.float()
        if self.loss == "pair":
            loss = pair_loss(self.model.pair_logits(c, r), labels)
        else:
            bounds = shard_bounds(global_size, self.ctx.world_size)
            sizes = np.diff(bounds).tolist()
            r_all = gather_with_grad(r, self.ctx, sizes)  # (B, D): negatives of the global batch
            logits = self.model.all_logits(c, r_all)  # (b, B)
            keys_all = gather_keys(r_keys, self.ctx)  # (B,)
            offset = bounds[self.ctx.rank]
            loss = inbatch_loss(logits, offset, r_keys, keys_all)
            if self.loss == "symmetric":  # each response against every context as well
                c_all = gather_with_grad(c, self.ctx, sizes)  # (B, D)
                reverse = self.model.all_logits(c_all, r).t()  # (b, B)
                loss = (loss + inbatch_loss(reverse, offset, r_keys, keys_all)) / 2
        if not self.ctx.enabled:
            return loss
        # NOTE: DDP averages gradients over processes; weighting each process's mean by
        # world * b / B turns that average into the gradient of the global batch's mean.
        return loss * (c.shape[0] * self.ctx.world_size / global_size)


class Trainer:
    """Trains a DualEncoder on a prepared folder into a run folder."""

    def __init__(
        self,
        prepared_dir: str | Path,
        run_dir: str | Path,
        model_config: ModelConfig,
        train_config: TrainConfig,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.prepared_dir, self.run_dir = Path(prepared_dir), Path(run_dir)
        self.cfg = train_config
        self.ctx = init_distributed(train_config.device)
        self.data: Prepared = load_prepared(self.prepared_dir)
        if resume:
            model_config = self._resumed_model_config()
        model_config.vocab_size = len(self.data.vocab)
        validate(model_config, train_config)
        self.model_config = model_config
        self._check_run_dir(resume, overwrite)
        self._set_threads()
        if self.ctx.device.type == "cpu":
            keep_freed_memory()
        torch.manual_seed(train_config.seed)
        self.model = DualEncoder(model_config)
        self.model.lanes = self.lanes
        if train_config.embeddings:
            load_pretrained(self.model, self.data.vocab, train_config.embeddings)
        if self.ctx.enabled:  # the same initial weights, but each process its own dropout
            torch.manual_seed(train_config.seed + self.ctx.rank)
        if train_config.freeze_embeddings:
            self.model.embedding.weight.requires_grad_(False)
        self.model.to(self.ctx.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if train_config.weight_decay:
            self.optimizer: torch.optim.Optimizer = torch.optim.AdamW(
                params, lr=train_config.lr, weight_decay=train_config.weight_decay
            )
        else:
            self.optimizer = torch.optim.Adam(params, lr=train_config.lr)
        self.state = TrainState()
        self.average: WeightAverage | None = None  # kept by rank 0, which validates
        if train_config.ema_decay and self.ctx.is_main:
            self.average = WeightAverage(self.model, train_config.ema_decay)
        if resume:
            self._restore()
        if train_config.hash_words:
            self._hash_tables = self._make_hash_tables()
        objective = Objective(self.model, train_config.loss, self.ctx)
        self.objective: nn.Module = objective
        if self.ctx.enabled:
            device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.objective = DistributedDataParallel(objective, device_ids=device_ids)
        self.logger = RunLogger(self.run_dir, self.state.step) if self.ctx.is_main else None
        self.trace_dir = os.environ.get("DUALENC_TRACE_ROWS")  # see _trace_rows

    def _resumed_model_config(self) -> ModelConfig:
        from dualenc.config import model_config_from_dict

        return model_config_from_dict(read_run_config(self.run_dir)["model"])

    def _make_hash_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        # Each id's bucket id, and which ids --hash-words may replace.
        vocab = self.data.vocab
        if not vocab.num_buckets:
            raise DualencError(
                f"{self.prepared_dir}: --hash-words needs hash buckets in the vocabulary; "
                "prepare again with --hash-buckets above 0"
            )
        ids = torch.arange(len(vocab))
        eligible = (ids >= self.cfg.hash_words_from) & (ids < vocab.first_bucket)
        buckets = torch.tensor(vocab.bucket_ids())
        return buckets.to(self.ctx.device), eligible.to(self.ctx.device)

    def _check_run_dir(self, resume: bool, overwrite: bool) -> None:
        has_run = (self.run_dir / "config.json").exists()
        if resume and not (self.run_dir / "last" / "state.json").exists():
            raise DualencError(f"--resume: {self.run_dir} has no last checkpoint to resume")
        if has_run and not resume and not overwrite:
            raise DualencError(
                f"{self.run_dir} already holds a run (pass --resume to continue it, "
                "or --overwrite to start again)"
            )
        self.ctx.barrier()  # every process has looked at the folder before rank 0 writes it
        if self.ctx.is_main and not resume:
            context_len = self.data.max_context_len  # what ranking new text will keep
            if self.cfg.context_window:
                context_len = min(context_len, self.cfg.context_window)
            lengths = (context_len, self.data.max_response_len)
            config = run_config(
                self.model_config, self.cfg, self.prepared_dir.resolve(), lengths, __version__
            )
            for stale in ("best", "last", "tensorboard"):  # an overwritten run leaves nothing
                shutil.rmtree(self.run_dir / stale, ignore_errors=True)
            (self.run_dir / "metrics.csv").unlink(missing_ok=True)
            write_run_files(self.run_dir, self.prepared_dir, config)
        self.ctx.barrier()

    def _set_threads(self) -> None:
        threads = self.cfg.threads or len(os.sched_getaffinity(0))
        if self.ctx.enabled and self.ctx.device.type == "cpu" and not self.cfg.threads:
            threads = max(1, threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        self.lanes = 1
        if self.ctx.device.type == "cpu":
            self.lanes = self.cfg.lanes or default_lanes(self.model_config.cell, threads)
        # Lanes run single-threaded kernels side by side; without them the kernels share out
        # their work over all the threads.
        torch.set_num_threads(1 if self.lanes > 1 else threads)

    def _restore(self) -> None:
        folder = self.run_dir / "last"
        from safetensors.torch import load_file

        from dualenc.fileio import read_json

        averaged = (folder / "trained.safetensors").exists()
        trained = "trained.safetensors" if averaged else "model.safetensors"
        self.model.load_state_dict(load_file(str(folder / trained)))
        self.model.to(self.ctx.device)
        if self.average is not None:
            if not averaged:
                raise DualencError(f"--resume: {folder} holds no averaged weights")
            weights = load_file(str(folder / "model.safetensors"), device=str(self.ctx.device))
            self.average.model.load_state_dict(weights)
        load_optimizer_state(folder, self.optimizer)
        saved = read_json(folder / "state.json")
        self.state = TrainState(**saved["trainer"])
        set_rng_states(load_rng_state(folder), self.ctx)
        log.info("resumed at step %d (epoch %d)", self.state.step, self.state.epoch)

    # ---- the loop -------------------------------------------------------------------------

    def training_rows(self) -> np.ndarray:
        labels = self.data.train.label
        if self.cfg.loss != "pair":  # negatives come from the batch; labelled ones are unused
            return np.flatnonzero(labels == 1)
        return np.arange(len(labels))

    def fit(self) -> dict[str, Any]:
        """Train until the epochs, --max-steps or early stopping end it; returns the summary."""
        rows = self.training_rows()
        lengths = np.asarray(self.data.train.context.lengths)
        stop = self.state.stopped_early or self._reached_max_steps()
        while not stop and self.state.epoch < self.cfg.epochs:
            batches = epoch_batches(
                lengths, rows, self.cfg.batch_size, self.cfg.bucket_batches,
                self.cfg.seed, self.state.epoch,
            )
            batches = [b for b in batches if len(b) >= self.ctx.world_size]  # no empty slices
            stop = self._train_epoch(batches)
            if self.state.batch_in_epoch >= len(batches):
                self.state.epoch += 1
                self.state.batch_in_epoch = 0
                stop = self._validate_and_save() or stop
        if self.ctx.is_main and self.data.valid is None:
            self._save("best")
        summary = self._summary()
        if self.logger:
            self.logger.close()
        self.ctx.close()
        return summary

    def _train_epoch(self, batches: list[np.ndarray]) -> bool:
        """Train on this epoch's remaining batches; True when training should stop."""
        self.objective.train()
        bar = tqdm(
            total=len(batches), initial=self.state.batch_in_epoch, unit="batch",
            desc=f"epoch {self.state.epoch + 1}/{self.cfg.epochs}",
            disable=not (self.cfg.progress and self.ctx.is_main), dynamic_ncols=True,
        )
        window = _Window()
        for index in range(self.state.batch_in_epoch, len(batches)):
            global_batch = batches[index]
            loss = self._step(global_batch)
            self.state.step += 1
            self.state.batch_in_epoch = index + 1
            self.state.examples += len(global_batch)
            window.add(loss, len(global_batch))
            bar.update(1)
            end_of_epoch = index + 1 == len(batches)  # fit validates there, once
            if window.steps == LOG_EVERY or end_of_epoch or self._reached_max_steps():
                mean_loss, rate = window.flush()
                mean_loss = mean_over_processes(mean_loss, self.ctx)
                bar.set_postfix(loss=f"{mean_loss:.4f}", pairs_s=f"{rate:.0f}")
                if self.logger:
                    self.logger.scalar("train/loss", mean_loss, self.state)
                    self.logger.scalar("train/pairs_per_second", rate, self.state)
            if self._reached_max_steps():
                bar.close()
                if not end_of_epoch:
                    self._validate_and_save()
                return True
            due = self.cfg.eval_every and self.state.step % self.cfg.eval_every == 0
            if due and not end_of_epoch:
                if self._validate_and_save():
                    bar.close()
                    return True
                self.objective.train()
        bar.close()
        return False

    def _step(self, global_batch: np.ndarray) -> float:
        rows = shard(global_batch, self.ctx.rank, self.ctx.world_size)
        self._trace_rows(rows)
        train = self.data.train
        batch: PairBatch = pair_batch(
            train.context, train.response, train.label, rows, self.cfg.context_window
        )
        batch = batch.to(self.ctx.device)
        if self.cfg.word_dropout:
            batch = batch.drop_words(self.cfg.word_dropout, self.data.vocab.unk_id)
        if self.cfg.hash_words:
            batch = batch.hash_words(*self._hash_tables, self.cfg.hash_words)
        with bf16_autocast(self.ctx.device, self.cfg.bf16):
            loss = self.objective(
                batch.context_ids, batch.context_lens, batch.response_ids, batch.response_lens,
                batch.labels, batch.response_keys, len(global_batch),
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm)
        self.optimizer.step()
        if self.average is not None:
            self.average.update(self.model, self.state.step)
        return float(loss.detach())

    def _trace_rows(self, rows: np.ndarray) -> None:
        """With DUALENC_TRACE_ROWS=DIR, each process appends a line `step row row ...` per step
        to DIR/rows-rankR.txt: the training rows it took (how the tests check the shards)."""
        if not self.trace_dir:
            return
        folder = Path(self.trace_dir)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"rows-rank{self.ctx.rank}.txt", "a", encoding="utf-8") as f:
            f.write(" ".join(str(i) for i in [self.state.step + 1, *rows.tolist()]) + "\n")

    def _reached_max_steps(self) -> bool:
        return bool(self.cfg.max_steps) and self.state.step >= self.cfg.max_steps

    # ---- validation and checkpoints -------------------------------------------------------

    def _validate_and_save(self) -> bool:
        """Validate (rank 0), keep the best checkpoint, save the last; True to stop early."""
        stop = False
        rng = gather_rng_states(self.ctx)  # every process's, for an exact resume
        if self.ctx.is_main:
            stop = self._validate()
            self._save("last", rng=rng)
        self.ctx.barrier()
        return broadcast_flag(stop, self.ctx)

    def _validate(self) -> bool:
        if self.data.valid is None:
            return False
        values = evaluate_split(
            self.ranking_model, self.data.valid, self.cfg.eval_batch_size, self.cfg.loss,
            self.ctx.device, self.cfg.bf16, self.cfg.context_window,
        )
        self.logger.validation(values, self.state)
        log.info(
            "epoch %d | step %d | %s",
            self.state.epoch, self.state.step,
            format_metrics(values, ["loss", "R@1/2", "R@1/10", "R@2/10", "R@5/10", "MRR"]),
        )
        score = values.get(SELECTION_METRIC, values["MRR"])
        if score > self.state.best_score:
            self.state.best_score, self.state.best_step = score, self.state.step
            self.state.evals_without_gain = 0
            self._save("best", values)
            return False
        self.state.evals_without_gain += 1
        patience = self.cfg.patience
        if patience and self.state.evals_without_gain >= patience:
            log.info("early stop: %d validations without a better %s", patience, SELECTION_METRIC)
            self.state.stopped_early = True
            return True
        return False

    def _save(
        self, which: str, values: dict[str, float] | None = None,
        rng: dict[str, Tensor] | None = None,
    ) -> None:
        state = {"trainer": asdict(self.state), "metrics": values or {}}
        if which == "last":
            trained = self.model if self.average is not None else None
            save_checkpoint(
                self.run_dir / "last", self.ranking_model, state, self.optimizer, rng, trained
            )
        else:
            save_checkpoint(self.run_dir / which, self.ranking_model, state)

    @property
    def ranking_model(self) -> DualEncoder:
        """The weights validated and saved: the moving average when there is one."""
        return self.average.model if self.average is not None else self.model

    def _summary(self) -> dict[str, Any]:
        return {
            "steps": self.state.step,
            "epochs": self.state.epoch,
            "examples": self.state.examples,
            "best_step": self.state.best_step,
            "best_" + SELECTION_METRIC: self.state.best_score,
            "stopped_early": self.state.stopped_early,
        }


def train(
    prepared_dir: str | Path,
    run_dir: str | Path,
    model_config: ModelConfig,
    train_config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train a model; see Trainer."""
    trainer = Trainer(prepared_dir, run_dir, model_config, train_config, resume, overwrite)
    return trainer.fit()
