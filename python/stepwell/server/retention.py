"""Retention: ended responses are deleted once they are old enough, in bounded
batches (each its own transaction), so a store holds what its operator keeps
and no more. A response that a kept one continues through
`previous_response_id` is kept with it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("stepwell.server")


async def prune_all(store: Any, older_than: float, *, batch: int = 500) -> int:
    """Deletes every response that ended more than `older_than` seconds ago
    (but those kept responses continue), `batch` at a time; how many went."""
    total = 0
    while deleted := await store.prune(older_than, batch=batch):
        total += deleted
    return total


async def keep_pruning(store: Any, older_than: float, *, every: float = 60.0) -> None:
    """Prunes now and then every `every` seconds, until cancelled."""
    while True:
        try:
            deleted = await prune_all(store, older_than)
            if deleted:
                log.info("retention: deleted %d responses", deleted)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("retention failed, trying again: %r", error)
        await asyncio.sleep(every)
