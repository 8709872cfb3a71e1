"""Benchmark `dualenc create` and `dualenc prepare` on a million training pairs.

Each step runs as its own process; the table gives its wall time and its own peak resident
memory. Targets on 2 CPU cores: each step under 3 minutes and under 2 GB.

    python benchmarks/prepare.py [--data SHARED_DATA] [--examples N] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TIME_TARGET_S = 180
RSS_TARGET_BYTES = 2 * 1024**3


def run_step(argv: list[str]) -> tuple[float, int]:
    """Run one command; return its wall seconds and its peak RSS in bytes."""
    started = time.perf_counter()
    process = subprocess.Popen(argv)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed with status {process.returncode}")
    return seconds, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux


def disk_usage(folder: Path) -> tuple[int, int]:
    """Bytes the files of `folder` take on disk, and their apparent size."""
    blocks = apparent = 0
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            blocks += stat.st_blocks * 512
            apparent += stat.st_size
    return blocks, apparent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--examples", type=int, default=1_000_000, help="training pairs")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()

    dialogs = args.data / "ubuntu-irc"
    if not dialogs.is_dir():
        parser.error(f"no ubuntu-irc folder in {args.data} (pass --data)")
    work = args.work or Path(tempfile.mkdtemp(prefix="dualenc-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sets, prepared = work / "sets", work / "prepared"
    dualenc = [sys.executable, "-m", "dualenc"]
    steps = {
        "create": dualenc + ["create", str(dialogs), "--out", str(sets), "--overwrite"]
        + ["--examples", str(args.examples), "--no-progress"],
        "prepare": dualenc + ["prepare", str(sets), "--out", str(prepared), "--overwrite"]
        + ["--no-progress"],
    }
    try:
        results = {name: run_step(argv) for name, argv in steps.items()}
        print_table(results, sets, prepared)
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def print_table(results: dict[str, tuple[float, int]], sets: Path, prepared: Path) -> None:
    print(f"\n{'step':<10}{'wall s':>10}{'peak RSS MB':>14}  target")
    for name, (seconds, rss) in results.items():
        ok = seconds < TIME_TARGET_S and rss < RSS_TARGET_BYTES
        print(f"{name:<10}{seconds:>10.1f}{rss / 1e6:>14.0f}  {'met' if ok else 'MISSED'}")
    for label, folder in (("sets", sets), ("prepared", prepared)):
        on_disk, apparent = disk_usage(folder)
        size = f"{on_disk / 1e6:,.0f} MB on disk ({apparent / 1e6:,.0f} MB apparent)"
        print(f"{label} folder: {size}")


if __name__ == "__main__":
    raise SystemExit(main())
