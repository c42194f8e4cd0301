"""The eager start of coroutines the core awaits (stepwell._eager): what
finishes in its first step answers at once, without a Task; what suspends is
carried on by a Task exactly as asyncio would."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from stepwell._eager import start

who = contextvars.ContextVar("who", default="nobody")


class Boom(RuntimeError):
    pass


async def test_a_coroutine_that_never_suspends_needs_no_task() -> None:
    async def answer() -> int:
        return 42

    tasks_before = len(asyncio.all_tasks())
    assert start(contextvars.copy_context(), answer()) == (True, 42)
    assert len(asyncio.all_tasks()) == tasks_before


async def test_a_first_step_that_raises_raises() -> None:
    async def fails() -> None:
        raise Boom("at once")

    with pytest.raises(Boom, match="at once"):
        start(contextvars.copy_context(), fails())


async def test_a_suspended_coroutine_goes_on_in_a_task_in_its_context() -> None:
    event = asyncio.Event()
    seen = []

    async def waits() -> str:
        seen.append(who.get())
        await event.wait()
        await asyncio.sleep(0)  # a bare yield, too
        seen.append(who.get())
        return "woken"

    context = contextvars.copy_context()
    context.run(who.set, "caller")
    finished, task = start(context, waits())
    assert finished is False
    event.set()
    assert await task == "woken"
    assert seen == ["caller", "caller"]


async def test_an_exception_after_suspending_fails_the_task() -> None:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def fails_later() -> None:
        await future

    _, task = start(contextvars.copy_context(), fails_later())
    future.set_exception(Boom("later"))
    with pytest.raises(Boom, match="later"):
        await task


async def test_cancelling_the_task_cancels_the_coroutine() -> None:
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    _, task = start(contextvars.copy_context(), forever())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
