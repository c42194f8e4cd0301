"""`stepwell serve` and `stepwell worker` fix glibc's threshold for blocks
mapped on their own: a big block freed goes back to the system, rather than
staying with the process once blocks that size have been freed before."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
from stepwell.server.allocator import return_large_blocks

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's allocator"
)

# Frees three 8 MiB blocks (each touched, so resident) and prints how much of
# them the process still holds.
FREES = """
import re, sys
from stepwell.server.allocator import return_large_blocks

def rss():
    status = open("/proc/self/status").read()
    return int(re.search(r"VmRSS:\\s+(\\d+)", status).group(1)) / 1024

if sys.argv[1] == "fixed":
    assert return_large_blocks()
before = rss()
for _ in range(3):
    block = bytearray(8 * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    del block
print(rss() - before)
"""


# Frees 16 MiB of small blocks (the frames of a commit, say), each touched,
# and prints how much of them the process still holds.
SMALL_FREES = FREES.replace(
    """for _ in range(3):
    block = bytearray(8 * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    del block""",
    """blocks = [bytearray(b"x" * 40_000) for _ in range(400)]
del blocks""",
)


def held_after_freeing(mode: str, script: str = FREES) -> float:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    }
    done = subprocess.run(
        [sys.executable, "-c", script, mode], capture_output=True, text=True, env=env, check=True
    )
    return float(done.stdout)


def test_a_big_block_freed_goes_back_to_the_system() -> None:
    assert held_after_freeing("fixed") < 1
    # glibc's default: the first block freed raises the threshold to its
    # size, the next ones come from the heap and stay with the process.
    assert held_after_freeing("default") > 4


def test_the_heaps_top_is_kept_rather_than_given_back_and_taken_again() -> None:
    assert SMALL_FREES != FREES
    assert held_after_freeing("fixed", SMALL_FREES) > 12
    # glibc's default gives the top of the heap back as soon as it is free.
    assert held_after_freeing("default", SMALL_FREES) < 4


def test_an_operators_own_threshold_stands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert return_large_blocks() is False
