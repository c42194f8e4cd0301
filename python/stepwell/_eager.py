"""Eager start of the coroutines the Rust core awaits.

A store's or a tool's coroutine often finishes without ever suspending
(`MemoryStore` and `SQLiteStore` never do). As an ordinary asyncio Task it costs
at least one turn of the event loop before the core gets its answer, for every
store call of every step. On Python 3.12 and later the Task is started eagerly
(`eager_start=True`): its first step runs at once, as the task itself (so
`asyncio.current_task()`, `asyncio.timeout` and task groups work there), and a
coroutine that finishes in it answers without a turn of the loop. Earlier
Pythons have no eager tasks, and running the first step outside any task would
break code that needs one, so there the coroutine becomes an ordinary Task.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Coroutine
from typing import Any

EAGER = sys.version_info >= (3, 12)
"""Whether coroutines are started eagerly on this Python."""


def start(context: contextvars.Context, coroutine: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Starts `coroutine` as a task in `context`. Returns `(True, value)` when
    it already finished (eagerly), else `(False, task)`; the exception of a
    first step that failed propagates."""
    if not EAGER:
        return False, context.run(asyncio.ensure_future, coroutine)
    task = asyncio.Task(  # type: ignore[call-arg,unused-ignore]
        coroutine, loop=asyncio.get_running_loop(), context=context, eager_start=True
    )
    if task.done():
        return True, task.result()
    return False, task
