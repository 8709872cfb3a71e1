"""glibc allocator settings for training on a CPU.

A training step allocates and frees activations of tens of megabytes. With glibc's
defaults, blocks above its mmap threshold (adaptive, at most 32 MB) are mapped and unmapped
on every step and the heap top is trimmed back to the system, so the pages are faulted in
again, and much of a step becomes system time. Raising the mmap threshold to 64 MB and the
trim threshold to 256 MB keeps those blocks in the process: on the reference model 9% more
pairs a second, with peak RSS still under 2 GB (see benchmarks/train_speed.py). Keeping
everything (no mmap, no trimming) is faster still but grows RSS past 2 GB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

MMAP_THRESHOLD = 64 << 20  # blocks below this come from the heap
TRIM_THRESHOLD = 256 << 20  # free heap top kept before it is returned to the system
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, from glibc's malloc.h


def keep_freed_memory() -> bool:
    """Apply the thresholds above where the C library is glibc; True if they were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    log.debug("glibc mmap threshold %d, trim threshold %d: %s", MMAP_THRESHOLD,
              TRIM_THRESHOLD, "set" if done else "refused")
    return done
