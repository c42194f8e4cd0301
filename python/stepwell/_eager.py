"""Eager start of the coroutines the Rust core awaits.

A store's or a tool's coroutine often finishes without ever suspending
(`MemoryStore` and `SQLiteStore` never do). Wrapping it in an asyncio Task
costs a Task and at least one turn of the event loop before the core gets its
answer, for every store call of every step. `start` runs the coroutine's first
step at once, in the caller's context: if it finishes, its value is the answer,
with no Task; if it suspends, a Task takes over from where it stopped. Python
3.12 offers the same as eager tasks; this works on 3.10 and 3.11 too.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any


def start(context: contextvars.Context, coroutine: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Runs the first step of `coroutine` in `context`. Returns `(True, value)`
    when it finished, `(False, task)` when it suspended; its exception, if the
    first step raised one, propagates."""
    try:
        awaited = context.run(coroutine.send, None)
    except StopIteration as finished:
        return True, finished.value
    task = context.run(asyncio.ensure_future, _continue(coroutine, awaited))
    return False, task


async def _continue(coroutine: Coroutine[Any, Any, Any], awaited: Any) -> Any:
    """Drives `coroutine` on from a suspension on `awaited` (what asyncio
    coroutines yield: a future, or `None` to give the loop a turn), as a Task
    would: the awaited outcome (its result or exception) goes back into it, and
    a cancellation of this Task is thrown into it."""
    while True:
        try:
            if awaited is None:
                await asyncio.sleep(0)
            else:
                # The coroutine's own `await` marked the future as blocking on
                # it; a Task taking over a yielded future clears the mark before
                # waiting, and so must this (a future refuses a second await
                # while it is set).
                awaited._asyncio_future_blocking = False
                await awaited
        except BaseException as error:
            try:
                awaited = coroutine.throw(error)
            except StopIteration as finished:
                return finished.value
            continue
        try:
            awaited = coroutine.send(None)
        except StopIteration as finished:
            return finished.value
