"""Model and training configuration: dataclasses whose defaults are the reference recipe.

The defaults reproduce Lowe et al. 2015 as trained by the reference TensorFlow notebook:
100-d embeddings, one LSTM of 200 units shared by context and response, peepholes,
forget bias 2.0, score sigmoid(c·M·r + b), Adam 1e-3, batch 256, global-norm clip 10.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dualenc.errors import DualencError

CELLS = ("lstm", "peephole", "gru")
LOSSES = ("pair", "inbatch", "symmetric")
M_INITS = ("normal", "identity")
POOLINGS = ("last", "max", "mean")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ModelConfig:
    """The shape of a DualEncoder; saved beside every checkpoint as JSON."""

    vocab_size: int = 0  # set from the prepared vocabulary
    embed_dim: int = 100  # word embedding size (50 when GloVe 6B 50-d is used)
    hidden_dim: int = 200  # recurrent units per direction
    cell: str = "lstm"  # lstm (fused), peephole (LSTM with peepholes) or gru
    bidirectional: bool = False  # concatenate a backward pass: encodings of 2 * hidden_dim
    pooling: str = "last"  # the encoding: last hidden state at the true length, or max/mean
    forget_bias: float = 2.0  # initial forget-gate bias of LSTM cells
    m_init: str = "normal"  # M from a truncated normal (std 1, cut at 2) or the identity
    dropout: float = 0.0  # dropout on embeddings and encodings while training
    pad_id: int = 0

    @property
    def encoding_dim(self) -> int:
        return self.hidden_dim * (2 if self.bidirectional else 1)

    def problems(self) -> list[str]:
        """Every invalid value, as messages."""
        found = []
        if self.vocab_size < 2:
            found.append(f"vocab_size must be at least 2, got {self.vocab_size}")
        if self.embed_dim < 1 or self.hidden_dim < 1:
            found.append("embed_dim and hidden_dim must be positive")
        if self.cell not in CELLS:
            found.append(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.pooling not in POOLINGS:
            found.append(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        if self.pooling != "last" and self.cell == "peephole":
            found.append("max and mean pooling need a fused cell (lstm or gru)")
        if self.m_init not in M_INITS:
            found.append(f"m_init must be one of {', '.join(M_INITS)}, got {self.m_init!r}")
        if not 0.0 <= self.dropout < 1.0:
            found.append(f"dropout must be in [0, 1), got {self.dropout}")
        return found


@dataclass
class TrainConfig:
    """How a model is trained; saved in every checkpoint."""

    epochs: int = 10  # passes over the training pairs
    batch_size: int = 256  # pairs per optimizer step (the global batch under torchrun)
    lr: float = 1e-3  # Adam learning rate
    weight_decay: float = 0.0  # decoupled weight decay (AdamW) when above zero
    clip_norm: float = 10.0  # global gradient-norm clipping
    ema_decay: float = 0.0  # validate and keep a moving average of the weights (0: off)
    word_dropout: float = 0.0  # share of training tokens replaced by <unk>
    # share of the word types past the hash_words_from most frequent replaced, in each
    # batch, by their hash buckets (needs a prepared folder with hash buckets)
    hash_words: float = 0.0
    hash_words_from: int = 1000
    # pair: sigmoid cross-entropy on labelled pairs; inbatch: softmax of each context over the
    # batch's responses; symmetric: that and each response over the batch's contexts, averaged
    loss: str = "pair"
    max_steps: int = 0  # stop after this many steps (0: no limit)
    eval_every: int = 0  # validate every N steps as well as after each epoch (0: epochs only)
    patience: int = 3  # stop after this many validations without a better R@1/10 (0: never)
    eval_batch_size: int = 64  # contexts per validation batch
    context_window: int = 0  # train and rank on the last N context tokens only (0: all)
    bucket_batches: int = 50  # batches per sorting window of the length bucketing
    seed: int = 1234  # fixes initialisation, batching and dropout
    threads: int = 0  # CPU threads (0: one per available core)
    # on a CPU, threads that encode length groups side by side, each single-threaded, while
    # everything else runs on one (0: one per thread; 1: all threads inside each kernel)
    lanes: int = 0
    device: str = "auto"  # auto, cpu or cuda
    bf16: bool = False  # bf16 autocast for the encoder
    embeddings: str = ""  # GloVe text file, or "glove-6b-50d" for the embedded vectors
    freeze_embeddings: bool = False  # keep pretrained embeddings fixed
    progress: bool = True  # show a progress bar
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with the run

    def problems(self) -> list[str]:
        """Every invalid value, as messages."""
        found = []
        for name in ("epochs", "batch_size", "eval_batch_size", "bucket_batches"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "clip_norm"):
            if getattr(self, name) <= 0:
                found.append(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("max_steps", "eval_every", "patience", "threads", "weight_decay",
                     "context_window", "lanes"):
            if getattr(self, name) < 0:
                found.append(f"{name} must not be negative, got {getattr(self, name)}")
        if not isinstance(self.bf16, bool):  # the command's "auto" is resolved before this
            found.append(f"bf16 must be true or false, got {self.bf16!r}")
        if not 0 <= self.word_dropout < 1:
            found.append(f"word_dropout must be in [0, 1), got {self.word_dropout}")
        if not 0 <= self.hash_words <= 1:
            found.append(f"hash_words must be in [0, 1], got {self.hash_words}")
        if self.hash_words_from < 2:
            found.append(f"hash_words_from must be at least 2, got {self.hash_words_from}")
        if not 0 <= self.ema_decay < 1:
            found.append(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.loss not in LOSSES:
            found.append(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.device not in DEVICES:
            found.append(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.loss != "pair" and self.batch_size < 2:
            found.append("the in-batch loss needs a batch of at least 2")
        return found


def validate(*configs: ModelConfig | TrainConfig) -> None:
    """Raise one error that lists every invalid value of the given configs."""
    found = [p for config in configs for p in config.problems()]
    if found:
        raise DualencError("invalid configuration:\n  " + "\n  ".join(found))


def to_dict(config: ModelConfig | TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def model_config_from_dict(values: dict[str, Any]) -> ModelConfig:
    """A ModelConfig from saved JSON, ignoring keys this version does not know."""
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in values.items() if k in names})


def train_config_from_dict(values: dict[str, Any]) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in values.items() if k in names})
