"""The core's tokio runtime: one worker thread, unless `TOKIO_WORKER_THREADS`
asks for another count."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc")

# Makes the core start its runtime (a request to a port that refuses it),
# then prints how many of the process's threads are tokio workers. A worker
# names itself once it runs, so until then it has the main thread's name:
# the names are read until only the main thread has it.
_COUNT_WORKERS = textwrap.dedent(
    """
    import asyncio, os, time
    from stepwell import _core

    async def main():
        try:
            await _core.post_json("http://127.0.0.1:9/", "{}", {}, 5.0)
        except Exception:
            pass

    asyncio.run(main())
    main_name = open(f"/proc/self/task/{os.getpid()}/comm").read().strip()
    deadline = time.monotonic() + 30
    while True:
        tasks = os.listdir("/proc/self/task")
        names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in tasks]
        if names.count(main_name) == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.001)
    print(names.count("tokio-rt-worker"))
    """
)


def _workers(env: dict[str, str]) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _COUNT_WORKERS],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(done.stdout.strip())


def test_the_core_runs_one_tokio_worker_by_default() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TOKIO_WORKER_THREADS"}
    assert _workers(env) == 1


def test_tokio_worker_threads_still_chooses_the_count() -> None:
    assert _workers({**os.environ, "TOKIO_WORKER_THREADS": "3"}) == 3
