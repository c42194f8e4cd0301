"""The routes of the Open Responses API: each reads as the request it answers.

What a response is lives in the store (its request, steps, outcome, event
log and lease); a route asks `Responses` and `Runs`, and keeps nothing of its
own, so any process serving the same store answers alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .. import _core
from ..openresponses import (
    CompactionFailed,
    InvalidRequest,
    NoTokenizer,
    Responses,
    TokenCountFailed,
)
from ..openresponses.items import input_items, page
from ..openresponses.request import UnknownConversation
from .errors import ApiError, not_found
from .event_stream import EventStream
from .log import LogHub, follow
from .metrics import Metrics
from .middleware import read_json, tenant
from .runs import Run, Runs
from .settings import ServerSettings
from .views import step_tree

DONE = "data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SEND_CHARS = 64 * 1024
"""Most characters of a stream handed to the HTTP server at once. It copies
what it is given (encoded, framed as a chunk, buffered while the socket is
full), so a long batch (a long response's last frames each repeat its whole
text) goes out in pieces, not as three copies of itself."""


def send_pieces(batch: str) -> Iterator[str]:
    """`batch` in pieces of at most `SEND_CHARS`, each cut after the last
    frame ending within it (a longer frame is cut anywhere)."""
    start = 0
    while len(batch) - start > SEND_CHARS:
        cut = batch.rfind("\n\n", start, start + SEND_CHARS)
        end = cut + 2 if cut >= start else start + SEND_CHARS
        yield batch[start:end]
        start = end
    yield batch[start:] if start else batch


@dataclass
class Routes:
    """The route handlers, over one `Responses` and the runs of this process."""

    responses: Responses
    runs: Runs
    hub: LogHub
    settings: ServerSettings
    metrics: Metrics
    _forgetting: set[asyncio.Task[None]] = field(default_factory=set)
    """Deletions of `store: false` responses whose client went away first."""

    @property
    def store(self) -> Any:
        return self.responses.store

    # ------------------------------------------------------------ create

    async def create(self, request: Request) -> Response:
        owner, body = await self.create_body(request)
        stream = body.get("stream") is True
        background = body.get("background") is True
        try:
            # Streamed and background responses stream from the model too, so
            # their event log carries every delta.
            model_body = {**body, "stream": True} if stream or background else body
            # A foreground response is kept leased here, where it runs: no
            # other process's sweep can take it first. A background one is
            # queued, for whichever process sweeps first.
            lease = None if background else self.runs.lease
            prepared = await self.responses.prepare(model_body, tenant=owner, lease=lease)
        except InvalidRequest as error:
            raise refused(error) from error
        request_id = prepared.request_id
        key = request.headers.get("idempotency-key")
        if key:
            try:
                holder = await self.store.claim_idempotency_key(owner, key, request_id)
            except Exception:
                await self.store.delete_response(request_id)
                raise
            if holder != request_id:
                # A retry: the first response answers, and this copy goes.
                await self.store.delete_response(request_id)
                return await self.answer_again(holder, prepared.body, stream=stream)
        if background:
            # Queued: whichever process sweeps first runs it (this one is told
            # now), so every `stepwell worker` shares the background work.
            self.runs.wake()
            if stream:
                return self.stream(request_id, -1)
            return JSONResponse({**prepared.initial, "background": True})
        run = await self.runs.start(prepared, background=False)
        unstored = prepared.body.get("store") is False
        if stream:
            client = (request, run) if run is not None else None
            return self.stream(request_id, -1, client, forget=unstored)
        try:
            answer = await self.finished(request_id, run)
        except BaseException:
            if unstored:
                self.forget_later(request_id, run)
            raise
        if unstored:
            await self.forget(request_id, run)
        return JSONResponse(answer)

    async def forget(self, request_id: str, run: Run | None) -> None:
        """Deletes a `store: false` response once its run here ended: its client
        has (or is about to have) its answer, and nothing else keeps it."""
        if run is not None:
            await asyncio.gather(asyncio.shield(run.task), return_exceptions=True)
        await asyncio.shield(self.store.delete_response(request_id))

    def forget_later(self, request_id: str, run: Run | None) -> None:
        """`forget`, for a client that went away first: its run ends by itself
        (it was cancelled), then the response goes."""
        task = asyncio.ensure_future(self.forget(request_id, run))
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)

    async def input_tokens(self, request: Request) -> Response:
        """`POST /v1/responses/input_tokens`: the token count of a create
        body's input, by the upstream's tokenizer; 501 when it has none."""
        owner, body = await self.create_body(request)
        try:
            count = await self.responses.input_tokens(body, tenant=owner)
        except InvalidRequest as error:
            raise refused(error) from error
        except NoTokenizer as error:
            raise ApiError(
                501, f"Input tokens cannot be counted here: {error}.", code="no_tokenizer"
            ) from error
        except TokenCountFailed as error:
            raise ApiError(
                502, f"Input tokens could not be counted: {error}.", code="upstream_error"
            ) from error
        return JSONResponse({"object": "response.input_tokens", "input_tokens": count})

    async def compact(self, request: Request) -> Response:
        """`POST /v1/responses/compact`: the context folded into its user
        messages and one `compaction` item, summarized by the model."""
        owner, body = await self.create_body(request)
        try:
            return JSONResponse(await self.responses.compact(body, tenant=owner))
        except InvalidRequest as error:
            raise refused(error) from error
        except CompactionFailed as error:
            raise ApiError(
                502, f"The context could not be compacted: {error}.", code="upstream_error"
            ) from error

    async def create_body(self, request: Request) -> tuple[str, dict[str, Any]]:
        """The caller's tenant and the JSON object its request carries."""
        owner = tenant(request, self.settings.keys)
        body = await read_json(
            request, max_body=self.settings.max_body, body_timeout=self.settings.body_timeout
        )
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return owner, body

    async def finished(self, request_id: str, run: Run | None) -> Any:
        """The response once it ended: its run's result when it runs here,
        else what its log says when it ends, wherever it runs."""
        if run is not None:
            return await asyncio.shield(run.task)
        async for _ in self.follow(request_id, -1):
            pass
        return await self.responses.current(request_id)

    async def answer_again(self, request_id: str, body: Any, *, stream: bool) -> Response:
        """The answer to a retried create (`body` is the retry's request): the
        first response, streamed again from its event log, or as it stands
        (once it ended, for a foreground one). A key sent with another request
        is a 400; one whose response is still being set up is a 409 the client
        may retry."""
        saved = await self.store.load_request(request_id)
        if saved is None:
            raise _key_in_use()
        if saved["request"] != body:
            raise ApiError(
                400,
                "This Idempotency-Key was already used with a different request body.",
                param="Idempotency-Key",
                code="idempotency_key_reused",
            )
        if stream:
            return self.stream(request_id, -1)
        if saved["request"].get("background"):
            current = await self.responses.current(request_id)
        else:
            current = await self.finished(request_id, self.runs.local.get(request_id))
        if current is None:
            raise _key_in_use()
        return JSONResponse(current)

    # ------------------------------------------------------------ reading

    async def known(self, request: Request) -> tuple[str, str, Any]:
        """The response named in the path, if it is the caller's tenant's:
        `(response_id, request_id, saved)`. Another tenant's is a 404, found
        that way by the store's own query."""
        owner = tenant(request, self.settings.keys)
        response_id = request.path_params["response_id"]
        request_id = _core.request_id_of(response_id)
        saved = await self.store.load_request(request_id, tenant=owner)
        if saved is None:
            raise not_found(response_id)
        return response_id, request_id, saved

    async def retrieve(self, request: Request) -> Response:
        response_id, request_id, _ = await self.known(request)
        query = request.query_params
        if query.get("stream") == "true":
            after = query.get("starting_after", "-1")
            if not _is_integer(after) or not -1 <= int(after) < 2**62:
                raise ApiError(
                    400,
                    "starting_after must be an event's sequence number (an integer from -1).",
                    param="starting_after",
                )
            return self.stream(request_id, int(after))
        current = await self.responses.current(request_id)
        if current is None:
            raise not_found(response_id)
        return JSONResponse(current)

    def follow(self, request_id: str, after: int) -> AsyncIterator[str]:
        return follow(
            self.store,
            self.hub,
            request_id,
            after,
            local=lambda: request_id in self.runs.local,
            ended=lambda: self.runs.stopping,
            # A store that notifies wakes readers itself; the look is a backstop.
            poll=1.0 if getattr(self.store, "notifies", False) else self.settings.poll_interval,
        )

    def stream(
        self,
        request_id: str,
        after: int,
        owner: tuple[Request, Run] | None = None,
        *,
        forget: bool = False,
    ) -> EventStream:
        """The event log after `after`, then live, until its terminal event.
        `owner` is the request and run of a foreground response this stream
        belongs to: a client that goes away before the end cancels it. With
        `forget` (a `store: false` response), it is deleted once it ended,
        before the closing `[DONE]`."""

        async def frames() -> AsyncGenerator[str, None]:
            finished = False
            try:
                async for batch in self.follow(request_id, after):
                    for piece in send_pieces(batch):
                        yield piece
                if forget:
                    await self.forget(request_id, owner[1] if owner else None)
                yield DONE
                finished = True
            finally:
                # Also when the client went away (the stream closes these
                # frames then), even while a slow model writes nothing.
                if owner is not None and not finished:
                    self.runs.stop_run(owner[1], "cancel")
                if forget and not finished:
                    self.forget_later(request_id, owner[1] if owner else None)

        return EventStream(frames(), SSE_HEADERS)

    async def input_items(self, request: Request) -> Response:
        _, request_id, saved = await self.known(request)
        limit, order, after, before = paging(request)
        items = input_items(request_id, saved["request"])
        return JSONResponse(page(items, limit=limit, order=order, after=after, before=before))

    async def steps(self, request: Request) -> Response:
        _, request_id, _ = await self.known(request)
        steps = await self.store.steps(request_id)
        return JSONResponse({"object": "list", "data": step_tree(steps)})

    # ------------------------------------------------------------ changing

    async def cancel(self, request: Request) -> Response:
        _, request_id, saved = await self.known(request)
        outcome = await self.store.outcome(request_id)
        if outcome is not None and outcome[0] == "cancelled":
            return JSONResponse(outcome[1])
        if not saved["request"].get("background"):
            raise ApiError(409, "Only background responses can be cancelled.")
        if outcome is not None:
            raise ApiError(409, f"The response is already {outcome[0]}; it cannot be cancelled.")
        await self.runs.cancel(request_id)
        return JSONResponse(await self.responses.current(request_id))

    async def delete(self, request: Request) -> Response:
        response_id, request_id, _ = await self.known(request)
        run = self.runs.local.get(request_id)
        if run is not None:
            self.runs.stop_run(run, "cancel")
            await asyncio.gather(run.task, return_exceptions=True)
        # A run elsewhere finds its rows gone, loses its lease and stops.
        await self.store.delete_response(request_id)
        return JSONResponse({"id": response_id, "object": "response.deleted", "deleted": True})

    # ------------------------------------------------------------ operations

    async def metrics_text(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "running": len(self.runs.local)})


def _key_in_use() -> ApiError:
    return ApiError(
        409,
        "A request with this Idempotency-Key is still being set up; retry it shortly.",
        code="idempotency_key_in_use",
    )


def refused(error: InvalidRequest) -> ApiError:
    """A refused create body's answer: 404 for a conversation that is not
    found, else 400, naming the parameter."""
    if isinstance(error, UnknownConversation):
        return ApiError(404, str(error), param=error.param)
    return ApiError(400, str(error), param=error.param, code=error.code)


def paging(request: Request) -> tuple[int, str, str | None, str | None]:
    """A list route's ``limit`` (1 to 100, default 20), ``order`` (``asc`` or
    ``desc``, the default), ``after`` and ``before``."""
    query = request.query_params
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "order must be 'asc' or 'desc'", param="order")
    limit_text = query.get("limit", "20")
    limit = int(limit_text) if _is_integer(limit_text) else 0
    if not 1 <= limit <= 100:
        raise ApiError(400, "limit must be an integer from 1 to 100", param="limit")
    return limit, order, query.get("after"), query.get("before")


def _is_integer(text: str) -> bool:
    digits = text.removeprefix("-")
    return 0 < len(digits) <= 19 and digits.isascii() and digits.isdigit()
