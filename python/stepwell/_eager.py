"""Eager start of the coroutines the Rust core awaits.

A store's or a tool's coroutine often finishes without ever suspending
(`MemoryStore` and `SQLiteStore` never do). As an ordinary asyncio Task it costs
at least one turn of the event loop before the core gets its answer, for every
store call of every step. On Python 3.12 and later the Task is started eagerly
(`eager_start=True`): its first step runs at once, as the task itself (so
`asyncio.current_task()`, `asyncio.timeout` and task groups work there), and a
coroutine that finishes in it answers without a turn of the loop. Earlier
Pythons have no eager tasks, and running the first step outside any task would
break code that needs one (`asyncio.timeout`, task groups, anyio), so there a
coroutine becomes an ordinary Task, unless its function is marked
`runs_without_task`: one that needs no task and runs no code but its own (the
calls of the stores shipped here, and the Open Responses transition over
them when it reaches no MCP server). Its first step then runs at once, and
if it suspends, a task carries it on from there.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
from collections.abc import Callable, Coroutine
from types import CodeType
from typing import Any, TypeVar

EAGER = sys.version_info >= (3, 12)
"""Whether coroutines are started eagerly on this Python."""


def start(context: contextvars.Context, coroutine: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Starts `coroutine` as a task in `context`. Returns `(True, value)` when
    it already finished (eagerly), else `(False, task)`; the exception of a
    first step that failed propagates."""
    if not EAGER:
        if getattr(coroutine, "cr_code", None) not in _WITHOUT_TASK:
            return False, context.run(asyncio.ensure_future, coroutine)
        try:
            yielded = _taken(context.run(coroutine.send, None))
        except StopIteration as finished:
            return True, finished.value
        return False, context.run(asyncio.ensure_future, _carry_on(coroutine, yielded))
    task = asyncio.Task(  # type: ignore[call-arg,unused-ignore]
        coroutine, loop=asyncio.get_running_loop(), context=context, eager_start=True
    )
    if task.done():
        return True, task.result()
    return False, task


F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])
_WITHOUT_TASK: set[CodeType] = set()


def runs_without_task(function: F) -> F:
    """Marks a coroutine function whose first step needs no task: it calls no
    `asyncio.current_task()` (no timeout, no task group) and no code of the
    caller's. Before Python 3.12 the core runs that step at once rather than
    a turn of the event loop later."""
    _WITHOUT_TASK.add(function.__code__)
    return function


def without_task(function: Callable[..., Any] | None) -> bool:
    """Whether `function` (or the method) is marked `runs_without_task`."""
    return getattr(function, "__code__", None) in _WITHOUT_TASK


async def _carry_on(coroutine: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    """Drives a coroutine whose first step ran outside any task on from where
    it suspended (on `yielded`), as a task would: each future it waits on is
    awaited here, and its result or exception sent back in."""
    while True:
        try:
            if yielded is None:  # a bare yield: one turn of the loop
                await asyncio.sleep(0)
                result = None
            else:
                result = await yielded
        except BaseException as error:  # cancellation included: it goes in too
            try:
                yielded = _taken(coroutine.throw(error))
            except StopIteration as finished:
                return finished.value
            continue
        try:
            yielded = _taken(coroutine.send(result))
        except StopIteration as finished:
            return finished.value


def _taken(yielded: Any) -> Any:
    """A future a coroutine suspended on, taken as a task takes it: until that
    is done, no other coroutine may await the future."""
    if getattr(yielded, "_asyncio_future_blocking", False):
        yielded._asyncio_future_blocking = False
    return yielded
