"""How a long-running stepwell process has the C allocator give big blocks
back to the system once they are freed."""

from __future__ import annotations

import ctypes
import os

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters
_M_MMAP_THRESHOLD = -3
LARGE_BLOCK = 256 * 1024
"""Blocks at least this large are mapped on their own, and unmapped when freed."""

KEPT_TOP = 32 * 1024 * 1024
"""How much free memory at the top of its heap glibc keeps rather than gives
back. A server's group commit holds the frames of a hundred streams at once
(megabytes of small blocks) and frees them together: given back at once and
taken again at the next commit, the heap cost a page fault for every page
every time (a few percent of a streaming server's time)."""


def return_large_blocks() -> bool:
    """Fixes glibc's threshold for blocks mapped on their own at `LARGE_BLOCK`.

    By default the threshold follows the largest such block freed so far (up
    to 32 MiB): once a long response's last frames (megabytes each, freed a
    moment later) have been freed, blocks that size come from the heap
    instead, and what they took stays with the process after they are freed.
    A fixed threshold keeps every big block mapped, so what a response
    allocates big it gives back (the core maps its own big blocks whatever
    this says). The heap's top keeps up to `KEPT_TOP` free rather than give
    it back and take it again. Returns whether the allocator took the
    setting: `False` where there is no glibc, or when the process was
    started with `MALLOC_MMAP_THRESHOLD_` (the operator's choice stands, as
    a `MALLOC_TRIM_THRESHOLD_` does)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        mallopt(_M_TRIM_THRESHOLD, KEPT_TOP)
    return bool(mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK))
