"""`dualenc train PREPARED --out RUN`: train a Dual Encoder, validate, keep the best."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from dualenc.config import CELLS, DEVICES, LOSSES, M_INITS, ModelConfig, TrainConfig
from dualenc.errors import DualencError
from dualenc.fileio import read_json

log = logging.getLogger(__name__)

# Recipes chosen by measurement; the dataclass defaults stay the reference recipe.
PRESETS: dict[str, dict[str, Any]] = {
    "reference": {},
    "small-data": {
        "loss": "symmetric",
        "m_init": "identity",
        "embeddings": "glove-6b-50d",
        "embed_dim": 50,
        "dropout": 0.3,
        "cell": "lstm",
        "bidirectional": True,
        "hidden_dim": 400,
        "pooling": "max",
        "ema_decay": 0.99,
        "epochs": 20,
        "eval_every": 100,
        "patience": 6,
        "context_window": 60,
    },
}

# Where the command differs from the dataclass defaults: how to compute, never what.
COMMAND_DEFAULTS: dict[str, Any] = {
    "bf16": "auto",  # bf16 autocast where the device computes in bf16 natively
}

# flag -> (dest field, type, help); every field of ModelConfig and TrainConfig that a user sets
MODEL_FLAGS = {
    "--embed-dim": ("embed_dim", int, "word embedding size (default 100)"),
    "--hidden-dim": ("hidden_dim", int, "recurrent units per direction (default 200)"),
    "--cell": ("cell", str, f"recurrent cell: {', '.join(CELLS)} (default lstm)"),
    "--forget-bias": ("forget_bias", float, "initial forget-gate bias (default 2.0)"),
    "--pooling": ("pooling", str, "encoding: last (the reference), max or mean over time "
                  "(default last)"),
    "--m-init": ("m_init", str, f"initial M: {', '.join(M_INITS)} (default normal)"),
    "--dropout": ("dropout", float, "dropout on embeddings and encodings (default 0)"),
}
TRAIN_FLAGS = {
    "--epochs": ("epochs", int, "passes over the training pairs (default 10)"),
    "--batch-size": ("batch_size", int, "pairs per step, the global batch (default 256)"),
    "--lr": ("lr", float, "Adam learning rate (default 1e-3)"),
    "--weight-decay": ("weight_decay", float, "AdamW weight decay (default 0: plain Adam)"),
    "--clip-norm": ("clip_norm", float, "global gradient-norm clip (default 10)"),
    "--word-dropout": ("word_dropout", float, "replace this share of training tokens with "
                       "<unk> (default 0)"),
    "--hash-words": ("hash_words", float, "in each batch, replace this share of the word "
                     "types past the --hash-words-from most frequent by their hash buckets, "
                     "so the model learns to match words it has no id for (default 0)"),
    "--hash-words-from": ("hash_words_from", int, "vocabulary rank from which words may be "
                          "hashed (default 1000)"),
    "--ema-decay": ("ema_decay", float, "validate, keep and rank with an exponential moving "
                    "average of the weights with this decay, e.g. 0.99 (default 0: off)"),
    "--loss": ("loss", str, f"{', '.join(LOSSES)}: sigmoid on labelled pairs, in-batch "
               "softmax over responses, or that both ways (default pair)"),
    "--max-steps": ("max_steps", int, "stop after N steps (default 0: no limit)"),
    "--eval-every": ("eval_every", int, "also validate every N steps (default 0: per epoch)"),
    "--patience": ("patience", int, "stop after N validations without a better R@1/10 "
                   "(default 3; 0 never stops early)"),
    "--context-window": ("context_window", int, "train and rank on the last N context tokens "
                         "(default 0: all that prepare kept)"),
    "--eval-batch-size": ("eval_batch_size", int, "contexts per validation batch (default 64)"),
    "--seed": ("seed", int, "seed of initialisation, batching and dropout (default 1234)"),
    "--threads": ("threads", int, "CPU threads (default 0: one per available core)"),
    "--lanes": ("lanes", int, "on a CPU, encode length groups in this many threads side "
                "by side, each single-threaded (default 0: one per thread, one for the "
                "peephole cell; 1: off)"),
    "--device": ("device", str, f"{', '.join(DEVICES)} (default auto)"),
    "--embeddings": ("embeddings", str, "pretrained vectors: a GloVe text file, or "
                     "glove-6b-50d for the packaged GloVe 6B 50-d (sets --embed-dim to match)"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a dual encoder on a prepared folder",
        description="Train a Dual Encoder on PREPARED into the run folder RUN. Flags override "
        "a --preset, which overrides a --config file; with --resume, the run's own settings "
        "are the base and the flags given override them (e.g. a larger --max-steps).",
    )
    p.add_argument("prepared", type=Path, help="a folder written by `dualenc prepare`")
    p.add_argument("--out", type=Path, required=True, help="the run folder to write")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a named recipe (see the README)")
    p.add_argument("--config", type=Path, help="a JSON file of settings (field names as keys)")
    p.add_argument("--resume", action="store_true", help="continue RUN from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in RUN")
    for flag, (dest, kind, text) in {**MODEL_FLAGS, **TRAIN_FLAGS}.items():
        p.add_argument(flag, dest=dest, type=kind, default=None, help=text)
    switches = {
        "bidirectional": "add a backward pass",
        "bf16": "bf16 autocast (default: where the device computes in bf16 natively)",
        "freeze-embeddings": "keep pretrained embeddings fixed",
    }
    for name, text in switches.items():  # --no-NAME undoes what a preset or --config set
        p.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None,
                       help=text)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                   help="no progress bar")
    p.set_defaults(func=run)


def _explicit(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    names |= {f.name for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge, lowest first: the command's own defaults, saved run (on resume), --config file,
    --preset, explicit flags."""
    settings: dict[str, Any] = dict(COMMAND_DEFAULTS)
    if args.resume:
        from dualenc.checkpoint import read_run_config

        saved = read_run_config(args.out)
        settings.update(saved["model"])
        settings.update(saved["train"])
    if args.config:
        settings.update(read_json(args.config))
    if args.preset:
        settings.update(PRESETS[args.preset])
    settings.update(_explicit(args))
    if settings.get("embeddings") and "embed_dim" not in _explicit(args):
        from dualenc.embeddings import glove_dim

        settings["embed_dim"] = glove_dim(settings["embeddings"])
    return settings


def resolve_auto(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings with `"bf16": "auto"` (the command's default) made true or false for the
    device that will train, so that the run's saved config says what was done."""
    if settings.get("bf16") != "auto":
        return settings
    from dualenc.distributed import resolve_device
    from dualenc.evaluate import has_native_bf16

    device = resolve_device(settings.get("device", "auto"))
    return {**settings, "bf16": has_native_bf16(device)}


def split_settings(settings: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """A ModelConfig and a TrainConfig from one flat dict; unknown keys are an error."""
    model_names = {f.name for f in dataclasses.fields(ModelConfig)}
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - model_names - train_names)
    if unknown:
        raise DualencError(f"unknown settings: {', '.join(unknown)}")
    model = ModelConfig(**{k: v for k, v in settings.items() if k in model_names})
    train = TrainConfig(**{k: v for k, v in settings.items() if k in train_names})
    return model, train


def run(args: argparse.Namespace) -> int:
    from dualenc.train import train

    model_config, train_config = split_settings(resolve_auto(resolve_settings(args)))
    summary = train(
        args.prepared, args.out, model_config, train_config, args.resume, args.overwrite
    )
    log.info("done: %s", json.dumps(summary))
    return 0
