"""Retention: ended responses are deleted once they are old enough, and their
event logs (kept for replay) sooner, in bounded batches (each its own
transaction), so a store holds what its operator keeps and no more. A response
that a kept one continues through `previous_response_id` is kept with it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("stepwell.server")

_EVERY = 60.0  # seconds between two rounds, at most


async def prune_all(store: Any, older_than: float, *, batch: int = 500) -> int:
    """Deletes every response that ended more than `older_than` seconds ago
    (but those kept responses continue), `batch` at a time; how many went."""
    total = 0
    while deleted := await store.prune(older_than, batch=batch):
        total += deleted
    return total


async def prune_all_events(store: Any, older_than: float, *, batch: int = 500) -> int:
    """Deletes the event log of every response that ended more than
    `older_than` seconds ago, `batch` logs at a time; how many went."""
    total = 0
    while deleted := await store.prune_events(older_than, batch=batch):
        total += deleted
    return total


async def keep_pruning(
    store: Any, *, retention: float | None = None, replay_window: float | None = None
) -> None:
    """Prunes responses older than `retention` and event logs older than
    `replay_window` now, then again every minute (or a quarter of the replay
    window, when shorter), until cancelled."""
    every = _EVERY if replay_window is None else min(_EVERY, max(replay_window / 4, 0.05))
    while True:
        try:
            if retention is not None and (deleted := await prune_all(store, retention)):
                log.info("retention: deleted %d responses", deleted)
            if replay_window is not None:
                await prune_all_events(store, replay_window)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("retention failed, trying again: %r", error)
        await asyncio.sleep(every)
