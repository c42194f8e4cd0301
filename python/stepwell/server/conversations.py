"""The conversations API, in OpenAI's shapes: a conversation keeps items
across responses, per tenant.

- ``POST /v1/conversations`` (``items``, at most 20, and ``metadata``);
  ``GET``, ``POST`` (new ``metadata``) and ``DELETE`` ``/v1/conversations/{id}``.
- ``POST /v1/conversations/{id}/items`` (at most 20), ``GET`` (``limit``,
  ``order``, ``after``, ``before``), and ``GET``/``DELETE`` of one item.

A response created with ``conversation`` starts from the conversation's
items, and its input and output are added to it when it completes (see
`ResponsesTransition`). Another tenant's conversation is not found, as an
unknown one is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..openresponses import InvalidRequest, input_messages, validate
from ..openresponses.items import new_items, page
from .errors import ApiError
from .middleware import read_json, tenant
from .routes import paging
from .settings import ServerSettings

MAX_ITEMS = 20
"""Items one request may add, as at OpenAI."""


@dataclass
class Conversations:
    """The conversation routes, over the store of the responses they feed."""

    store: Any
    settings: ServerSettings

    async def create(self, request: Request) -> Response:
        body = await self._body(request, allowed={"items", "metadata"})
        metadata = _checked_metadata(body.get("metadata"))
        items = _checked_items(body.get("items") or [])
        conversation_id = f"conv_{uuid.uuid4().hex}"
        await self.store.save_conversation(
            conversation_id, metadata, tenant=tenant(request, self.settings.keys)
        )
        if items:
            await self.store.add_conversation_items(conversation_id, items)
        return JSONResponse(_shown(await self.store.load_conversation(conversation_id)))

    async def retrieve(self, request: Request) -> Response:
        return JSONResponse(_shown(await self._known(request)))

    async def update(self, request: Request) -> Response:
        kept = await self._known(request)
        body = await self._body(request, allowed={"metadata"})
        if "metadata" not in body:
            raise ApiError(400, "Missing required parameter: 'metadata'.", param="metadata")
        metadata = _checked_metadata(body["metadata"])
        await self.store.update_conversation(kept["id"], metadata)
        return JSONResponse(_shown({**kept, "metadata": metadata}))

    async def delete(self, request: Request) -> Response:
        kept = await self._known(request)
        await self.store.delete_conversation(kept["id"])
        return JSONResponse({"id": kept["id"], "object": "conversation.deleted", "deleted": True})

    async def add_items(self, request: Request) -> Response:
        kept = await self._known(request)
        body = await self._body(request, allowed={"items"})
        if not body.get("items"):
            raise ApiError(400, "Missing required parameter: 'items'.", param="items")
        items = _checked_items(body["items"])
        await self.store.add_conversation_items(kept["id"], items)
        return JSONResponse(page(items, limit=len(items), order="asc"))

    async def list_items(self, request: Request) -> Response:
        kept = await self._known(request)
        if "include" in request.query_params:
            raise ApiError(
                400, "include is not supported on conversation items here.", param="include"
            )
        limit, order, after, before = paging(request)
        items = await self.store.conversation_items(kept["id"])
        return JSONResponse(page(items, limit=limit, order=order, after=after, before=before))

    async def retrieve_item(self, request: Request) -> Response:
        return JSONResponse(await self._known_item(request))

    async def delete_item(self, request: Request) -> Response:
        kept = await self._known(request)
        item = await self._known_item(request)
        await self.store.delete_conversation_item(kept["id"], item["id"])
        return JSONResponse(_shown(kept))

    # ------------------------------------------------------------ helpers

    async def _known(self, request: Request) -> Any:
        """The conversation named in the path, if it is the caller's tenant's."""
        conversation_id = request.path_params["conversation_id"]
        kept = await self.store.load_conversation(
            conversation_id, tenant=tenant(request, self.settings.keys)
        )
        if kept is None:
            raise ApiError(
                404, f"Conversation with id '{conversation_id}' not found.", param="conversation_id"
            )
        return kept

    async def _known_item(self, request: Request) -> Any:
        kept = await self._known(request)
        item_id = request.path_params["item_id"]
        for item in await self.store.conversation_items(kept["id"]):
            if item["id"] == item_id:
                return item
        raise ApiError(404, f"Item with id '{item_id}' not found.", param="item_id")

    async def _body(self, request: Request, *, allowed: set[str]) -> dict[str, Any]:
        body = await read_json(
            request, max_body=self.settings.max_body, body_timeout=self.settings.body_timeout
        )
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        for name in body:
            if name not in allowed:
                raise ApiError(
                    400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter"
                )
        return body


def _shown(kept: Any) -> dict[str, Any]:
    """A conversation as the API shows it."""
    return {
        "id": kept["id"],
        "object": "conversation",
        "created_at": kept["created_at"],
        "metadata": kept["metadata"],
    }


def _checked_metadata(metadata: Any) -> dict[str, Any]:
    """Metadata under the rules of a create body's (checked by the same schema)."""
    if metadata is None:
        return {}
    try:
        validate({"model": "m", "input": [], "metadata": metadata})
    except InvalidRequest as error:
        raise ApiError(400, str(error), param="metadata") from error
    return dict(metadata)


def _checked_items(items: Any) -> list[dict[str, Any]]:
    """Items to add, checked as a create body's input is (and convertible to
    a model's messages), each given an id; at most `MAX_ITEMS`."""
    if not isinstance(items, list):
        raise ApiError(400, "'items' must be an array of items.", param="items")
    if len(items) > MAX_ITEMS:
        raise ApiError(400, f"At most {MAX_ITEMS} items can be added at once.", param="items")
    try:
        checked = validate({"model": "m", "input": items})["input"]
        input_messages(checked, "items")
    except InvalidRequest as error:
        param = (error.param or "items").replace("input", "items", 1)
        message = str(error).replace("'input", "'items")
        raise ApiError(400, message, param=param, code=error.code) from error
    return new_items(checked)
