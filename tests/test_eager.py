"""The start of coroutines the core awaits (stepwell._eager): on Python 3.12
and later, what finishes in its first step answers at once, as an eager task;
everywhere, what suspends goes on as a task, with `current_task()` (and so
`asyncio.timeout`) working from its first line."""

from __future__ import annotations

import asyncio
import contextvars
from pathlib import Path
from typing import Any

import pytest
from stepwell._eager import EAGER, runs_without_task, start
from stepwell.errors import ToolNotFound
from stepwell.openresponses import ResponsesTransition
from stepwell.stores import MemoryStore, SQLiteStore
from stepwell.stores._transition import WithTransition
from stepwell.tools import FunctionTools, HttpTool, HttpTools
from stepwell.types import AppendSteps, ChainStep, RequestContext, StepDescriptor

who = contextvars.ContextVar("who", default="nobody")


class Boom(RuntimeError):
    pass


async def test_a_coroutine_that_never_suspends() -> None:
    async def answer() -> int:
        return 42

    finished, outcome = start(contextvars.copy_context(), answer())
    if EAGER:
        assert (finished, outcome) == (True, 42)
    else:
        assert finished is False
        assert await outcome == 42


async def test_the_first_step_runs_as_a_task() -> None:
    async def times_out() -> str:
        assert asyncio.current_task() is not None
        # On 3.12 and later wait_for is built on asyncio.timeout, which needs a task.
        await asyncio.wait_for(asyncio.sleep(0), 5)
        return "inside a task"

    finished, outcome = start(contextvars.copy_context(), times_out())
    assert (outcome if finished else await outcome) == "inside a task"


async def test_a_first_step_that_raises_raises() -> None:
    async def fails() -> None:
        raise Boom("at once")

    with pytest.raises(Boom, match="at once"):
        finished, outcome = start(contextvars.copy_context(), fails())
        if not finished:
            await outcome


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


# A function marked `runs_without_task` starts at once on every Python; what
# suspends goes on in a task that carries it, with the same outcomes.


async def test_a_marked_coroutine_that_never_suspends_answers_at_once() -> None:
    @runs_without_task
    async def answer() -> int:
        return 42

    assert start(contextvars.copy_context(), answer()) == (True, 42)


async def test_a_marked_coroutine_that_suspends_is_carried_on_in_its_context() -> None:
    event = asyncio.Event()
    seen = []

    @runs_without_task
    async def waits() -> str:
        seen.append(who.get())
        await event.wait()
        await asyncio.sleep(0)  # a bare yield, too
        seen.append(who.get())
        return "woken"

    context = contextvars.copy_context()
    context.run(who.set, "caller")
    finished, task = start(context, waits())
    assert finished is False and seen == ["caller"]  # its first step already ran
    event.set()
    assert await task == "woken"
    assert seen == ["caller", "caller"]


async def test_a_marked_coroutine_fails_and_is_cancelled_as_a_task_would() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    cancelled = asyncio.Event()

    @runs_without_task
    async def fails_later() -> None:
        await future

    @runs_without_task
    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @runs_without_task
    async def catches() -> str:
        try:
            await future
        except Boom:
            return "caught"
        return "not raised"

    _, failing = start(contextvars.copy_context(), fails_later())
    _, catching = start(contextvars.copy_context(), catches())
    future.set_exception(Boom("later"))
    with pytest.raises(Boom, match="later"):
        await failing
    assert await catching == "caught"

    _, task = start(contextvars.copy_context(), forever())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


async def test_the_responses_transition_over_a_store_shipped_here_starts_at_once(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    try:
        body = {"model": "m", "input": "Hello."}
        await store.save_request("r", {"request": body, "created_at": 1, "tenant": ""})
        over = WithTransition(store, ResponsesTransition(store))
        # Reading the chain and deciding its first step finish in their first
        # step, on every Python: no turn of the event loop before the answer.
        finished, chain = start(contextvars.copy_context(), over.list_chain("r", None))
        assert (finished, chain) == (True, [])
        finished, action = start(contextvars.copy_context(), over.next_action_for("r", None))
        assert finished is True
        assert isinstance(action, AppendSteps) and len(action.steps) == 1
    finally:
        store.close()


class _Unmarked(MemoryStore):
    """A store whose reads may need a task (they are not marked)."""

    async def load_request(self, request_id: str, *, tenant: str | None = None) -> Any:
        return await super().load_request(request_id, tenant=tenant)


async def test_a_transition_that_may_need_a_task_gets_one() -> None:
    body = {"model": "m", "input": "Hello."}

    def decide(chain: list[ChainStep], request_id: str, scope_parent: str | None) -> AppendSteps:
        return AppendSteps([StepDescriptor.tool_call("t")])

    marked, unmarked = MemoryStore(), _Unmarked()
    for store in (marked, unmarked):
        await store.save_request("r", {"request": body, "created_at": 1, "tenant": ""})
    for over in (
        WithTransition(marked, decide),  # says nothing of what it needs
        WithTransition(unmarked, ResponsesTransition(unmarked)),  # its store's reads are not marked
    ):
        finished, outcome = start(contextvars.copy_context(), over.next_action_for("r", None))
        if not EAGER:
            assert finished is False  # a task: the first step may need one
        action = outcome if finished else await outcome
        assert isinstance(action, AppendSteps)
    # One reaching an MCP server runs code of the SDK's, which needs a task.
    assert ResponsesTransition(marked).needs_no_task is True
    assert ResponsesTransition(marked, mcp=object()).needs_no_task is False  # type: ignore[arg-type]


async def test_the_tool_listings_shipped_here_answer_at_once() -> None:
    def add(a: int, b: int) -> int:
        """Adds."""
        return a + b

    endpoint = HttpTool(name="lookup", url="http://127.0.0.1:9/lookup", description="Looks up.")
    ctx = RequestContext(model="m")
    for executor in (FunctionTools(add), HttpTools([endpoint])):
        finished, schemas = start(contextvars.copy_context(), executor.tools(ctx))
        assert finished is True
        assert [s.name for s in schemas] in (["add"], ["lookup"])
    # An HTTP call's first step needs no task either: a tool it does not
    # have is refused from there, as a task would have raised it.
    with pytest.raises(ToolNotFound):
        start(contextvars.copy_context(), HttpTools([endpoint]).execute("nope", "c", {}, ctx))
