"""`stepwell worker`: runs responses from a store shared with `stepwell serve`
processes, serving no HTTP. It takes queued background responses and those
whose process died, under the same leases as a server; on SIGTERM (or SIGINT)
it stops its runs unmarked and gives their leases up, so another process takes
them over at once, and exits 0."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

from .allocator import return_large_blocks
from .log import EventLog, LogHub
from .retention import keep_pruning
from .runs import Runs
from .serve import (
    Settings,
    add_run_arguments,
    build_responses,
    load_settings,
    parse_duration,
    replay_window,
    settle_garbage_collector,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `worker` flags: those of `serve` that concern running responses."""
    add_run_arguments(parser)


def worker(args: argparse.Namespace) -> int:
    """Runs responses until told to stop."""
    settings = load_settings(vars(args), os.environ, args.config, serving=False)
    return asyncio.run(_work(settings))


async def _work(settings: Settings) -> int:
    responses = build_responses(settings)
    hub = LogHub()
    runs = Runs(
        responses,
        EventLog(responses.store, hub),
        hub,
        lease_ttl=settings.lease_ttl,
        max_runs=settings.max_runs,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runs.begin()
    retention = parse_duration(settings.retention) if settings.retention else None
    pruning = asyncio.ensure_future(
        keep_pruning(responses.store, retention=retention, replay_window=replay_window(settings))
    )
    settle_garbage_collector()
    return_large_blocks()
    print(f"stepwell worker running as {runs.owner}", flush=True)
    await stop.wait()
    pruning.cancel()
    await runs.stop()
    close = getattr(responses.store, "close", None)
    if close is not None:
        result = close()
        if asyncio.iscoroutine(result):
            await result
    return 0
