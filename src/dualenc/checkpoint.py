"""Run folders and checkpoints: safetensors for tensors, JSON for everything else.

A run folder is self-describing, so a model loads with no training arguments:

    RUN/config.json          model and training config, the prepared folder it came from
    RUN/vocab.txt            the vocabulary, one token a line (line number = id)
    RUN/tokenizer.json       how text was tokenized, and the maximum lengths
    RUN/best/                the checkpoint with the best validation R@1/10
    RUN/last/                the latest checkpoint, with optimizer and random state
    RUN/metrics.csv          one row per logged value; RUN/tensorboard/ the same curves

A checkpoint folder holds model.safetensors (the weights to rank with: the moving average
when training averages them), state.json and, in last/, optimizer.safetensors with
optimizer.json, rng.safetensors and, under averaging, trained.safetensors (the optimizer's
own weights, which a resumed run continues from). Each folder is written to a temporary
folder and renamed into place.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from dualenc.config import ModelConfig, model_config_from_dict, to_dict
from dualenc.errors import DualencError
from dualenc.features import TextEncoder
from dualenc.fileio import atomic_dir, read_json, write_json
from dualenc.model import DualEncoder
from dualenc.text import Tokenizer, Vocabulary

CHECKPOINTS = ("best", "last")


def write_run_files(run_dir: Path, prepared_dir: Path, config: dict[str, Any]) -> None:
    """The files beside the checkpoints: config, vocabulary, tokenizer."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", config)
    for name in ("vocab.txt", "tokenizer.json"):
        shutil.copyfile(prepared_dir / name, run_dir / name)


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and plain JSON."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        plain["state"][str(index)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                plain["state"][str(index)][key] = value
    return tensors, plain


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict:
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in plain["state"].items()}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    return {"state": state, "param_groups": plain["param_groups"]}


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    state: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    rng: dict[str, torch.Tensor] | None = None,
    trained: torch.nn.Module | None = None,
) -> None:
    """Write one checkpoint folder atomically (replacing an older one). `trained`, when the
    model is a moving average, holds the weights the optimizer works on."""
    with atomic_dir(folder, overwrite=True) as tmp:
        save_file(_cpu_weights(model), str(tmp / "model.safetensors"))
        if trained is not None:
            save_file(_cpu_weights(trained), str(tmp / "trained.safetensors"))
        write_json(tmp / "state.json", state)
        if optimizer is not None:
            tensors, plain = _flatten_optimizer(optimizer.state_dict())
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            write_json(tmp / "optimizer.json", plain)
        if rng:
            save_file(rng, str(tmp / "rng.safetensors"))


def _cpu_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def load_optimizer_state(folder: Path, optimizer: torch.optim.Optimizer) -> None:
    tensors = load_file(str(folder / "optimizer.safetensors"))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, read_json(folder / "optimizer.json")))


def load_rng_state(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / "rng.safetensors"
    return load_file(str(path)) if path.exists() else {}


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise DualencError(f"{run_dir} is not a run folder: {path.name} is missing")
    return read_json(path)


def checkpoint_dir(run_dir: str | Path, which: str = "best") -> Path:
    """The checkpoint folder `which` (best or last) of a run, falling back to last."""
    run_dir = Path(run_dir)
    if which not in CHECKPOINTS:
        raise DualencError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {which!r}")
    for name in (which, "last"):
        if (run_dir / name / "model.safetensors").exists():
            return run_dir / name
    raise DualencError(f"{run_dir} holds no checkpoint (no {which}/model.safetensors)")


def load_model(
    run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu"
) -> tuple[DualEncoder, dict[str, Any]]:
    """A trained model from a run folder, in eval mode, and its checkpoint state."""
    config = read_run_config(run_dir)
    model_config: ModelConfig = model_config_from_dict(config["model"])
    folder = checkpoint_dir(run_dir, which)
    model = DualEncoder(model_config)
    model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(device)))
    model.to(device).eval()
    return model, read_json(folder / "state.json")


def run_config(
    model_config: ModelConfig,
    train_config: Any,
    prepared_dir: Path,
    max_lengths: tuple[int, int],
    version: str,
) -> dict[str, Any]:
    """The content of RUN/config.json."""
    return {
        "model": to_dict(model_config),
        "train": to_dict(train_config),
        "features": {"max_context_len": max_lengths[0], "max_response_len": max_lengths[1]},
        "prepared": str(prepared_dir),
        "dualenc_version": version,
    }


def load_text_encoder(run_dir: str | Path) -> TextEncoder:
    """Text to ids exactly as the run's training data was prepared."""
    run_dir = Path(run_dir)
    features = read_run_config(run_dir)["features"]
    return TextEncoder(
        Tokenizer.load(run_dir / "tokenizer.json"),
        Vocabulary.load(run_dir / "vocab.txt"),
        int(features["max_context_len"]),
        int(features["max_response_len"]),
    )
