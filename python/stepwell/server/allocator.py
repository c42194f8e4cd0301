"""How a long-running stepwell process has the C allocator give big blocks
back to the system once they are freed."""

from __future__ import annotations

import ctypes
import os

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_BLOCK = 256 * 1024
"""Blocks at least this large are mapped on their own, and unmapped when freed."""


def return_large_blocks() -> bool:
    """Fixes glibc's threshold for blocks mapped on their own at `LARGE_BLOCK`.

    By default the threshold follows the largest such block freed so far (up
    to 32 MiB): once a long response's last frames (megabytes each, freed a
    moment later) have been freed, blocks that size come from the heap
    instead, and what they took stays with the process after they are freed.
    A fixed threshold keeps every big block mapped, so what a response
    allocates big it gives back (the core maps its own big blocks whatever
    this says). Returns whether the allocator took the setting: `False`
    where there is no glibc, or when the process was started with
    `MALLOC_MMAP_THRESHOLD_` (the operator's choice stands)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK))
