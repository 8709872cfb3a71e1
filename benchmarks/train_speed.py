"""Training speed: the project's training step against the same model fed padded batches.

Builds training pairs with `dualenc create` from the real IRC dialogs (so lengths are
real), prepares them, then times, each in its own process (so peak RSS is its own):

  project   length-bucketed batches, sequences encoded in length groups, the groups spread
            over one single-threaded lane a thread for the fused LSTM (the trainer's
            defaults; the peephole cell keeps one lane)
  padded    random batches with every context and response padded to 160 tokens (the
            peephole cell runs all 160 steps of every sequence, as a plain port does)

for the fused LSTM and for the peephole cell, with the reference model (100-d embeddings,
200 units) and batch 256, in fp32 and, where the CPU has bf16 arithmetic, under bf16
autocast (`dualenc train --bf16`). It prints pairs per second, the time an epoch of
1,000,000 pairs would take, peak RSS, and the useful arithmetic rate: floating-point
operations on real (non-padding) tokens per second, beside the measured fp32 (and bf16)
matrix-multiply peaks of this machine.

Pairs per second are the median over timed windows, after a warm-up, of real tokens per
second, divided by the mean real tokens of a training pair. Length-bucketed windows of a
few batches can be longer or shorter than the epoch's average: counted in pairs, the
same code measured 2,277 or 2,099 pairs/s depending on which batches the windows fell on.

Useful work per real token of a one-layer LSTM, forward and backward: 3 x 2 x 4H(E + H)
(the input and recurrent products; backward costs twice the forward). Element-wise work
is left out.

`--lanes 1` times the project's feed with the threads inside each kernel instead.

    python benchmarks/train_speed.py [--threads 2] [--lanes N] [--windows 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
E, H, BATCH = 100, 200, 256


def flops_per_token(embed: int = E, hidden: int = H) -> float:
    return 3 * 2 * 4 * hidden * (embed + hidden)


def matmul_peak(threads: int, dtype: str = "fp32", size: int = 2048, repeats: int = 10) -> float:
    """Measured matrix-multiply rate in FLOP/s (best of `repeats`), fp32 or bf16."""
    import torch

    torch.set_num_threads(threads)
    kind = torch.float32 if dtype == "fp32" else torch.bfloat16
    a, b = torch.randn(size, size, dtype=kind), torch.randn(size, size, dtype=kind)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def has_bf16() -> bool:
    import torch

    from dualenc.evaluate import has_native_bf16

    return has_native_bf16(torch.device("cpu"))


def time_config(
    prepared: Path, cell: str, feed: str, precision: str, args: argparse.Namespace
) -> dict:
    """One configuration, measured in this process."""
    import numpy as np
    import torch

    from dualenc.batching import epoch_batches, pair_batch
    from dualenc.config import ModelConfig
    from dualenc.evaluate import bf16_autocast
    from dualenc.lanes import default_lanes
    from dualenc.memory import keep_freed_memory
    from dualenc.model import DualEncoder, pair_loss
    from dualenc.prepare import load_prepared

    lanes = (args.lanes or default_lanes(cell, args.threads)) if feed == "project" else 1
    torch.set_num_threads(1 if lanes > 1 else args.threads)  # as the trainer sets them
    if args.allocator == "trainer":  # as `dualenc train` sets it, for both feeds alike
        keep_freed_memory()
    torch.manual_seed(0)
    data = load_prepared(prepared)
    train = data.train
    model = DualEncoder(ModelConfig(vocab_size=len(data.vocab), cell=cell))
    model.lanes = lanes
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rows = np.arange(len(train.label))
    lengths = np.asarray(train.context.lengths)
    # an epoch's pairs average this many real tokens; timed windows of bucketed batches
    # need not, so pairs per second are measured as real tokens per second over it
    tokens_per_pair = (lengths.sum(dtype=np.int64)
                       + np.asarray(train.response.lengths).sum(dtype=np.int64)) / len(rows)
    if feed == "project":
        batches = epoch_batches(lengths, rows, BATCH, 50, 1234, 0)
    else:
        model.group_size = 10**9  # one encoder call a side, padded to 160
        order = np.random.default_rng(0).permutation(rows)
        batches = [order[i : i + BATCH] for i in range(0, len(order) - BATCH + 1, BATCH)]

    def step(rows: np.ndarray) -> int:
        batch = pair_batch(train.context, train.response, train.label, rows)
        c_ids, r_ids = batch.context_ids, batch.response_ids
        c_lens, r_lens = batch.context_lens, batch.response_lens
        if feed == "padded":
            c_ids = torch.nn.functional.pad(c_ids, (0, 160 - c_ids.shape[1]))
            r_ids = torch.nn.functional.pad(r_ids, (0, 160 - r_ids.shape[1]))
            if cell == "peephole":  # the packed cell would skip the padding by itself
                c_lens, r_lens = torch.full_like(c_lens, 160), torch.full_like(r_lens, 160)
        with bf16_autocast(torch.device("cpu"), precision == "bf16"):
            logits = model(c_ids, c_lens, r_ids, r_lens)
        loss = pair_loss(logits.float(), batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        return batch.tokens

    cursor = 0
    for _ in range(args.warmup):
        step(batches[cursor])
        cursor += 1
    rates, token_rates = [], []
    for _ in range(args.windows):
        start, pairs, tokens = time.perf_counter(), 0, 0
        for _ in range(args.steps_per_window):
            tokens += step(batches[cursor % len(batches)])
            pairs += len(batches[cursor % len(batches)])
            cursor += 1
        seconds = time.perf_counter() - start
        rates.append(pairs / seconds)
        token_rates.append(tokens / seconds)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "cell": cell,
        "feed": feed,
        "precision": precision,
        "lanes": lanes,
        "pairs_per_s": statistics.median(token_rates) / tokens_per_pair,
        "window_pairs_per_s": statistics.median(rates),
        "tokens_per_s": statistics.median(token_rates),
        "peak_rss_mb": peak_kb / 1024,
    }


def build_prepared(work: Path, examples: int) -> Path:
    dualenc = [sys.executable, "-m", "dualenc"]
    sets, prepared = work / "sets", work / "prepared"
    subprocess.run(
        [*dualenc, "create", str(SHARED / "ubuntu-irc"), "--out", str(sets),
         "--examples", str(examples), "--no-progress"],
        check=True,
    )
    subprocess.run([*dualenc, "prepare", str(sets), "--out", str(prepared), "--no-progress"],
                   check=True)
    return prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lanes", type=int, default=0,
                        help="lanes of the project's feed (default 0: as the trainer)")
    parser.add_argument("--examples", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=60,
                        help="untimed steps first: they build the kernels of new shapes")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--steps-per-window", type=int, default=6)
    parser.add_argument("--cells", nargs="+", default=["lstm", "peephole"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        help="bf16 is skipped on a CPU without bf16 arithmetic")
    parser.add_argument("--allocator", choices=["trainer", "default"], default="trainer",
                        help="glibc thresholds as the trainer sets them, or glibc's defaults")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(time_config(Path(args.one[0]), *args.one[1:], args)))
        return
    precisions = [p for p in args.precisions if p == "fp32" or has_bf16()]
    # the padded feed is the baseline of the speed-up, in each precision
    plan = [(cell, feed, precision) for precision in precisions for cell in args.cells
            for feed in ("project", "padded")]

    with tempfile.TemporaryDirectory() as tmp:
        prepared = build_prepared(Path(tmp), args.examples)
        results = []
        for cell, feed, precision in plan:
            command = [sys.executable, __file__, "--one", str(prepared), cell, feed, precision,
                       "--threads", str(args.threads), "--lanes", str(args.lanes),
                       "--warmup", str(args.warmup),
                       "--windows", str(args.windows),
                       "--steps-per-window", str(args.steps_per_window),
                       "--allocator", args.allocator]
            out = subprocess.run(command, check=True, capture_output=True, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"measured {cell} {feed} {precision}", file=sys.stderr, flush=True)
    peaks = {p: matmul_peak(args.threads, p) for p in precisions}
    print_table(results, peaks, args.threads)


def print_table(results: list[dict], peaks: dict[str, float], threads: int) -> None:
    per_token = flops_per_token()
    fp32 = peaks["fp32"]
    named = "; ".join(f"{p} {v / 1e9:.0f}" for p, v in peaks.items())
    print(f"\n{threads} threads; matrix-multiply peak in GFLOP/s: {named}\n")
    print("| cell | feed | precision | lanes | pairs/s | 1M-pair epoch | peak RSS "
          "| useful GFLOP/s | of fp32 peak |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        useful = r["tokens_per_s"] * per_token
        epoch_min = 1_000_000 / r["pairs_per_s"] / 60
        print(f"| {r['cell']} | {r['feed']} | {r['precision']} | {r['lanes']} | "
              f"{r['pairs_per_s']:.0f} | "
              f"{epoch_min:.0f} min | {r['peak_rss_mb']:.0f} MB | {useful / 1e9:.0f} | "
              f"{useful / fp32:.0%} |")
    by = {(r["cell"], r["feed"], r["precision"]): r["pairs_per_s"] for r in results}
    print()
    for precision in peaks:
        for cell in dict.fromkeys(r["cell"] for r in results):
            project, padded = (by.get((cell, feed, precision)) for feed in ("project", "padded"))
            if project and padded:
                print(f"{cell}: project / padded ({precision}) = {project / padded:.1f}x")
    for precision in peaks:
        lstm, peephole = (by.get((c, "project", precision)) for c in ("lstm", "peephole"))
        if lstm and peephole:
            print(f"peephole costs {lstm / peephole:.2f}x the fused LSTM per pair ({precision})")


if __name__ == "__main__":
    main()
