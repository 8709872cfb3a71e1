"""One scoring path for every ranker: score rows of candidates, add them to RankingMetrics.

`evaluate_file` runs any Scorer (the trained model through a Ranker, or a baseline) over a
1-in-n ranking file; `evaluate_split` runs the model over an already encoded split, which
is what validation during training uses. Both feed the same accumulator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from dualenc.baselines import Scorer
from dualenc.batching import CandidateBatch, eval_batches
from dualenc.corpus.ranking import EvalExample, read_eval_examples
from dualenc.metrics import RankingMetrics
from dualenc.model import DualEncoder


def _chunks(examples: Iterator[EvalExample], size: int) -> Iterator[list[EvalExample]]:
    chunk: list[EvalExample] = []
    for example in examples:
        chunk.append(example)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def evaluate_file(scorer: Scorer, path: str | Path, batch_size: int = 64) -> dict[str, float]:
    """Recall@k and MRR of `scorer` on a 1-in-n ranking file (UDC v2 CSV or Xu format)."""
    metrics = RankingMetrics()
    for chunk in _chunks(read_eval_examples(path), batch_size):
        scores = scorer.score([e.context for e in chunk], [e.candidates for e in chunk])
        metrics.add(scores)
    return metrics.result()


def has_native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively: a CUDA GPU that supports it, or a CPU
    with AVX512-BF16 or AMX as oneDNN uses them. Elsewhere autocast would emulate it."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def bf16_autocast(device: torch.device, enabled: bool):
    """bf16 autocast on `device` when enabled, else a context that does nothing."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def candidate_logits(
    model: DualEncoder, batch: CandidateBatch, device: torch.device
) -> torch.Tensor:
    """Logits of every context against its own candidates: -> (B, K)."""
    c = model.encode(batch.context_ids.to(device), batch.context_lens.to(device))  # (B, D)
    r = model.encode(batch.candidate_ids.to(device), batch.candidate_lens.to(device))  # (B*K, D)
    r = r.view(c.shape[0], batch.num_candidates, -1)  # (B, K, D)
    return model.candidate_logits(c.float(), r.float())  # (B, K)


def validation_loss(logits: torch.Tensor, loss: str) -> torch.Tensor:
    """Summed loss over rows of (B, K) logits, truth in column 0: sigmoid cross-entropy on
    every pair for the pair loss (as the reference reports it), softmax over the K for the
    in-batch losses. Returns (sum, number of items)."""
    if loss == "pair":
        labels = torch.zeros_like(logits)
        labels[:, 0] = 1.0
        return F.binary_cross_entropy_with_logits(logits, labels, reduction="sum"), logits.numel()
    targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, targets, reduction="sum"), logits.shape[0]


@torch.inference_mode()
def evaluate_split(
    model: DualEncoder,
    split,
    batch_size: int = 64,
    loss: str = "pair",
    device: torch.device | str = "cpu",
    bf16: bool = False,
    context_window: int = 0,
) -> dict[str, float]:
    """Recall@k, MRR and validation loss of the model on an encoded evaluation split."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    metrics = RankingMetrics()
    autocast = bf16_autocast(device, bf16)
    batches = eval_batches(
        split.context, split.candidates, split.num_candidates, batch_size, context_window
    )
    for batch in batches:
        with autocast:
            logits = candidate_logits(model, batch, device).float()  # (B, K), bf16 or not
        total, count = validation_loss(logits, loss)
        metrics.add(logits.cpu().numpy())
        metrics.add_loss(float(total), count)
    model.train(was_training)
    return metrics.result()


def results_table(rows: dict[str, dict[str, float]], keys: list[str] | None = None) -> str:
    """A Markdown table: one row per ranker, one column per metric."""
    keys = keys or ["R@1/2", "R@1/10", "R@2/10", "R@5/10", "MRR", "n"]
    lines = ["| ranker | " + " | ".join(keys) + " |", "| --- |" + " ---: |" * len(keys)]
    for name, values in rows.items():
        cells = []
        for key in keys:
            value = values.get(key, float("nan"))
            cells.append(str(int(value)) if key == "n" else f"{value:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
