"""`Responses`: create, stream and resume Open Responses over a store and tools."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .. import _core
from .._core import HttpClient, ResponsesStream
from .._loop import run_response_loop
from ..errors import LeaseLost, LoopError, LoopFailed, StoreError
from ..protocols import ResponseStore, ToolExecutor
from ..stores import BatchedWrites, IllegalTransition, WithTransition
from ..types import LoopConfig, RequestContext, UpstreamTarget

if TYPE_CHECKING:
    from ..tools.mcp import McpTools
from .assemble import output_items, response_object, usage
from .compaction import (
    COMPACT_FIELDS,
    Compacting,
    CompactionKey,
    compact_threshold,
    kept_user_messages,
    summarize,
)
from .errors import loop_error
from .mcp import McpCalls, RequestMcp, kept_routes, mcp_entries, without_secrets
from .request import InvalidRequest, JSONDict
from .tokens import count_tokens
from .transition import Agent, ResponsesTransition, stored
from .validation import validate

_DEFAULT_CONFIG = LoopConfig()
log = logging.getLogger("stepwell")


class Responses:
    """Runs Open Responses requests to completion.

    ``store`` keeps the steps and requests (``MemoryStore`` or ``SQLiteStore``);
    ``tools`` serves the server-side tools (anything it does not serve is a
    client-side tool, returned to the caller); ``target`` is the
    chat-completions upstream. ``compaction_key`` seals the `compaction`
    items `compact` makes (a random one when not given: such items then open
    only in this process). ``mcp`` holds the MCP servers the operator
    declares (and the URLs it allows) for requests' `mcp` tools; without
    it, a request naming an MCP server is refused.
    """

    def __init__(
        self,
        store: ResponseStore,
        tools: ToolExecutor,
        target: UpstreamTarget,
        *,
        agents: Iterable[Agent] = (),
        client: HttpClient | None = None,
        config: LoopConfig = _DEFAULT_CONFIG,
        compaction_key: bytes | None = None,
        mcp: McpTools | None = None,
    ) -> None:
        self.store = store
        self.mcp = mcp
        self.compaction = CompactionKey(compaction_key)
        self.tools = tools
        self.target = target
        # A Toolbox carries its agents; the transition must know them too.
        self.agents = tuple(agents) or tuple(getattr(tools, "agents", ()))
        self.client = client
        self.config = config

    async def _setup(
        self,
        body: JSONDict,
        request_id: str,
        created_at: int,
        tenant: str,
        earlier: Mapping[str, tuple[JSONDict, JSONDict]] | None = None,
        kept_mcp: JSONDict | None = None,
    ) -> Prepared:
        """This request's view of the store (its own transition, nothing written on
        the shared store) and the response as it stands before any step (what
        `response.created` announces). Its MCP servers' tools are listed here,
        unless `kept_mcp` holds the listing made when it was created."""
        served = await self.tools.tools(RequestContext(model=body["model"], tenant=tenant))
        entries = mcp_entries(body, self.mcp, tenant)
        mcp = None
        if entries:
            listings = (kept_mcp or {}).get("listings") or {}
            mcp = RequestMcp(entries, listings, self.mcp)
        transition = ResponsesTransition(
            self.store,
            served=served,
            agents=self.agents,
            tenant=tenant,
            earlier=earlier,
            compaction=self.compaction,
            mcp=mcp,
        )
        if mcp is not None:
            if kept_mcp is None:
                reused = await transition.mcp_listings(body)
                transition.prelude = await mcp.list_tools(request_id, reused)
            else:
                transition.prelude = list(kept_mcp.get("items") or [])
        context, tools = await transition.context(body)
        transition.remember_context(request_id, context, tools)
        # Kept with the request: a later turn carries them over from here.
        carried = [t for t in tools if t.get("type", "function") == "function"]
        initial = response_object(
            body,
            request_id,
            status="in_progress",
            output=[],
            usage_block=None,
            created_at=created_at,
            tools=tools,
        )
        return Prepared(
            request_id, body, transition, initial, tenant=tenant, mcp=mcp, carried_tools=carried
        )

    async def prepare(
        self,
        body: Any,
        *,
        request_id: str | None = None,
        tenant: str = "",
        earlier: Mapping[str, tuple[JSONDict, JSONDict]] | None = None,
        lease: tuple[str, float] | None = None,
    ) -> Prepared:
        """Checks and converts a create body and keeps its request, owned by
        `tenant`; raises `InvalidRequest` (keeping nothing) for a bad one. `drive`
        runs it. `earlier` holds responses it may continue that the store does
        not keep (see `ResponsesTransition`). With `lease` (`owner, ttl`), the
        response is kept leased to `owner` (its token in `Prepared.fence`), so
        no other process takes it before it runs."""
        body = validate(body)
        # An id of its own is new to the store: the response has no step yet.
        fresh = request_id is None
        # Random hex as uuid4's, without building a UUID for it.
        request_id = request_id or secrets.token_hex(16)
        created_at = int(time.time())
        # Setting up converts the whole input, so a request refused there is
        # refused before anything of it is kept.
        run = await self._setup(body, request_id, created_at, tenant, earlier)
        # An MCP server's headers stay in this process: never in the store.
        kept = stored(without_secrets(body), created_at, tenant, run.initial)
        kept["carried_tools"] = run.carried_tools
        if run.mcp is not None:
            kept["mcp"] = run.kept_mcp()
        if lease is None:
            await self.store.save_request(request_id, kept, tenant=tenant)
            fence = None
        else:
            fence = await self.store.save_request(request_id, kept, tenant=tenant, lease=lease)
        run.transition.remember_request(request_id, kept)
        return replace(run, fence=fence, fresh=fresh)

    async def input_tokens(self, body: Any, *, tenant: str = "") -> int:
        """How many tokens the input of a create with `body` comes to (its
        context, instructions and tools: what the first model call sends),
        counted by the upstream's tokenizer; nothing is kept. Raises
        `InvalidRequest` for a bad body, `NoTokenizer` when the upstream
        cannot count, `TokenCountFailed` when its tokenizer fails."""
        run = await self._setup(validate(body), "input_tokens", int(time.time()), tenant)
        await run.close()
        model_call = await run.transition.first_model_call(run.body)
        return await count_tokens(self.target, model_call, self.client)

    async def compact(self, body: Any, *, tenant: str = "") -> JSONDict:
        """Folds the context a create with `body` (`model`, `input`,
        `previous_response_id`, `instructions`, `prompt_cache_key`) would send
        into its user messages and one `compaction` item, the rest summarized
        by the model; nothing is kept. Raises `InvalidRequest` for a bad body,
        `CompactionFailed` when the model's summary could not be had."""
        if isinstance(body, dict):
            for name in body:
                if name not in COMPACT_FIELDS:
                    raise InvalidRequest(
                        f"Unknown parameter: '{name}'.", name, code="unknown_parameter"
                    )
        now = int(time.time())
        run = await self._setup(validate(body), "compact", now, tenant)
        await run.close()
        model_call = await run.transition.first_model_call(run.body)
        summary, usage = await summarize(self.target, model_call, self.client)
        compaction = {
            "type": "compaction",
            "id": f"cmp_{uuid.uuid4().hex}",
            "encrypted_content": self.compaction.seal(summary),
        }
        kept = [
            {**item, "id": f"msg_{uuid.uuid4().hex}", "status": "completed"}
            for item in kept_user_messages(model_call["messages"])
        ]
        return {
            "id": _core.response_id(uuid.uuid4().hex),
            "object": "response.compaction",
            "created_at": now,
            "output": [*kept, compaction],
            "usage": usage,
        }

    async def current(self, request_id: str) -> JSONDict | None:
        """The response as it stands, read from the store: its outcome once it
        ended; before, the response as announced, with the output of the steps
        completed so far (`None` for an unknown one)."""
        outcome = await self.store.outcome(request_id)
        if outcome is not None:
            return outcome[1]  # type: ignore[no-any-return]
        saved = await self.store.load_request(request_id)
        if saved is None:
            return None
        announced = saved.get("announced") or response_object(
            saved["request"],
            request_id,
            status="in_progress",
            output=[],
            usage_block=None,
            created_at=saved["created_at"],
            tools=saved["request"].get("tools") or [],
        )
        steps = [s for s in await self.store.steps(request_id) if s.scope_parent is None]
        listed = (saved.get("mcp") or {}).get("items") or []
        output = [*listed, *output_items(request_id, steps, kept_routes(saved))]
        return {**announced, "output": output, "usage": usage(steps)}

    async def drive(
        self,
        run: Prepared,
        *,
        on_frames: Callable[[str], object] | None = None,
        fence: int | None = None,
        batched: BatchedWrites | None = None,
    ) -> JSONDict:
        """Runs a prepared response to its end and returns the outcome the store
        keeps (the first recorded: another worker may have finished it first).

        With `on_frames`, the Open Responses stream is handed to it as it is made,
        a batch of SSE frames per call, numbered consecutively from 0
        (`response.created` first); the closing `[DONE]` is not among them.
        With `fence` (the token of the lease this run holds), every write the
        run makes carries it, and the run records nothing once it is lost.
        With `batched`, the run's outcome is handed to its `keep_outcome` (the
        server keeps it with the events that end the response) and returned
        as the run made it, not read back from the store; so are its steps'
        completions, when it takes them.
        """
        sink = None
        if on_frames is not None:
            sink = ResponsesStream(run.request_id, on_frames, run.routes())
            on_frames(sink.start(run.initial))
            if run.transition.prelude:
                on_frames(sink.announce(run.transition.prelude))
        return await self._run(run, sink, fence, batched)

    async def _run(
        self, run: Prepared, sink: Any, fence: int | None, batched: BatchedWrites | None
    ) -> JSONDict:
        request_id, body, initial = run.request_id, run.body, run.initial
        tools = self.tools
        if compact_threshold(body) is not None:
            tools = Compacting(tools, self.target, self.compaction, self.client)
        if run.mcp is not None:
            tools = McpCalls(tools, run.mcp)
        store = WithTransition(self.store, run.transition, fence, batched)
        if run.fresh:
            store.has_no_steps(request_id)
        try:
            result = await run_response_loop(
                store,
                tools,
                RequestContext(model=body["model"], tenant=run.tenant),
                self.target,
                request_id=request_id,
                sink=sink,
                config=self.config,
                client=self.client,
            )
        except LoopFailed as failed:
            if isinstance(failed.payload, dict) and failed.payload.get("object") == "response":
                result = failed.payload
            else:
                result = await self._failed(run, failed, fence, batched)
        except StoreError as error:
            result = {**initial, "status": "failed", "error": loop_error(error.payload)}
            if isinstance(error.__cause__, (IllegalTransition, LeaseLost)):
                # The store refused a write: another worker is driving this
                # response and will record its outcome; this one records nothing.
                log.info("response %s: another worker drives it now", request_id)
            else:
                result = await self._failed(run, error, fence, batched)
        except LoopError as error:
            result = await self._failed(run, error, fence, batched)
        except Exception as error:
            # Whatever else stops the run still ends the response: accepted
            # means it ends, never a row left in progress.
            result = await self._failed(run, error, fence, batched)
        finally:
            await run.close()
        if batched is not None:
            return result  # type: ignore[no-any-return]
        kept = await self.store.outcome(request_id)
        return kept[1] if kept else result  # type: ignore[no-any-return]

    async def _failed(
        self,
        run: Prepared,
        error: Exception,
        fence: int | None,
        batched: BatchedWrites | None,
    ) -> JSONDict:
        """Records that the run stopped on `error`: the details to the log, and to
        the response a message written for its client."""
        payload = error.payload if isinstance(error, LoopError) else None
        log.warning("response %s stopped: %r", run.request_id, error)
        result = {**run.initial, "status": "failed", "error": loop_error(payload)}
        if batched is not None:
            batched.keep_outcome(run.request_id, "failed", result)
            return result
        try:
            if fence is None:
                await self.store.set_outcome(run.request_id, "failed", result)
            else:
                await self.store.set_outcome(run.request_id, "failed", result, fence=fence)
        except LeaseLost:
            log.info("response %s: another worker drives it now", run.request_id)
        except Exception:
            log.exception("response %s: its failure could not be recorded", run.request_id)
        return result

    async def create(self, body: Any, *, request_id: str | None = None) -> JSONDict:
        """Runs the request to its end and returns the `Response`; one made
        with `store: false` is forgotten then (see `forget_unstored`)."""
        run = await self.prepare(body, request_id=request_id)
        try:
            return await self.drive(run)
        finally:
            await self.forget_unstored(run.request_id, run.body)

    async def forget_unstored(self, request_id: str, body: JSONDict) -> None:
        """Deletes a response made with `store: false` (its request, steps,
        outcome and event log): once it ended, it is not kept, and cannot be
        retrieved or continued."""
        if body.get("store") is False:
            await asyncio.shield(self.store.delete_response(request_id))

    async def resume(
        self,
        request_id: str,
        *,
        fence: int | None = None,
        on_frames: Callable[[str], object] | None = None,
        next_sequence: int = 0,
        next_output_index: int = 0,
        batched: BatchedWrites | None = None,
    ) -> JSONDict:
        """Drives a response whose worker stopped to its end (completed steps are
        kept); a response that already ended is returned as it stands.

        With `on_frames`, the stream of what the response still does is handed
        to it, continuing one begun before: its frames are numbered from
        `next_sequence` and its items from `next_output_index` (from 0, the
        stream starts with `response.created`). `fence` and `batched` are as
        for `drive`."""
        saved = await self.store.load_request(request_id)
        if saved is None:
            raise KeyError(f"no response {request_id!r}")
        finished = await self.store.outcome(request_id)
        if finished is not None:
            # Terminal already: returned as it stands, not run or rewritten again.
            return finished[1]  # type: ignore[no-any-return]
        tenant = saved.get("tenant", "")
        run = await self._setup(
            saved["request"], request_id, saved["created_at"], tenant,
            kept_mcp=saved.get("mcp") or {},
        )  # fmt: skip
        sink = None
        if on_frames is not None:
            sink = ResponsesStream(request_id, on_frames, run.routes())
            if next_sequence == 0:
                on_frames(sink.start(run.initial))
                if run.transition.prelude:
                    on_frames(sink.announce(run.transition.prelude))
            else:
                sink.resume(run.initial, next_sequence, next_output_index)
        return await self._run(run, sink, fence, batched)

    async def stream(self, body: Any, *, request_id: str | None = None) -> AsyncIterator[str]:
        """Runs the request, yielding the Open Responses SSE stream frame by frame.

        The model calls stream whatever `body["stream"]` says, so text arrives live.
        """
        run = await self.prepare({**validate(body), "stream": True}, request_id=request_id)
        frames: asyncio.Queue[str] = asyncio.Queue()
        task = asyncio.ensure_future(self.drive(run, on_frames=frames.put_nowait))
        try:
            while not (task.done() and frames.empty()):
                getter = asyncio.ensure_future(frames.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            task.result()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await self.forget_unstored(run.request_id, run.body)
        yield ResponsesStream.done()


@dataclass(frozen=True)
class Prepared:
    """A request checked and kept, ready to `drive`: its id, body, its
    transition, and the response as `response.created` announces it."""

    request_id: str
    body: JSONDict
    transition: ResponsesTransition
    initial: JSONDict
    fence: int | None = None
    """The token of the lease the response was kept under, if it was."""
    tenant: str = ""
    """The tenant the response belongs to."""
    mcp: RequestMcp | None = None
    """The MCP servers the request names, while it runs here."""
    carried_tools: list[JSONDict] = field(default_factory=list)
    """The function tools the response has (its own, or carried over from
    the response it continues), for a later turn to carry over."""
    fresh: bool = False
    """Kept just now under an id made for it: it has no step yet, and its
    run need not read its chain to know it."""

    async def close(self) -> None:
        """Closes the sessions the request opened with its own MCP servers."""
        if self.mcp is not None:
            await self.mcp.aclose()

    def routes(self) -> dict[str, tuple[str, str, bool]] | None:
        """The functions MCP servers serve in this response, for its stream."""
        return self.mcp.routes if self.mcp is not None else None

    def kept_mcp(self) -> JSONDict:
        """What is kept of the request's MCP servers: the listing items made,
        the tools offered (listed or reused) and their routes."""
        assert self.mcp is not None
        return {
            "items": self.transition.prelude,
            "listings": self.mcp.listings,
            "routes": {name: list(route) for name, route in self.mcp.routes.items()},
        }
