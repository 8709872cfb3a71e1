"""Process-wide settings that make CPU training fast without the user doing anything."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed memory for reuse instead of returning it.

    NOTE: by default glibc serves each large block (the activations of a training step)
    with its own mmap and unmaps it when freed, so every step faults the same memory in
    again and much of the step becomes system time. With mmap off for the heap and no
    trimming, a step reuses the pages of the step before. Returns whether it applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, say): nothing to tune
        return False
    applied = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _INT_MAX) == 1
    log.debug("glibc keeps freed memory: %s", applied)
    return applied
