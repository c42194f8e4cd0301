"""A response's input as Open Responses items, for `input_items` (and items
sent to be kept in a conversation).

Items keep what the client sent; those without an `id` get one derived from the
response and their position (stable across reads), a message without a
`status` is `completed`, and a message's string content becomes one text part.
"""

from __future__ import annotations

import uuid
from typing import Any

from .. import _core
from .request import JSONDict


def input_items(request_id: str, body: JSONDict) -> list[JSONDict]:
    """The items of a create body's `input`, in the order sent."""
    given: Any = body.get("input", [])
    if isinstance(given, str):
        given = [{"type": "message", "role": "user", "content": given}]
    return [_item(raw, f"{request_id}_in{position}") for position, raw in enumerate(given)]


def new_items(given: list[JSONDict]) -> list[JSONDict]:
    """Items sent to be kept (in a conversation), each with an id: its own,
    or a new one."""
    return [_item(raw, uuid.uuid4().hex) for raw in given]


def _item(raw: JSONDict, id_suffix: str) -> JSONDict:
    """The item as kept: its id (the kind's prefix and `id_suffix` where it
    has none), a message `completed`, its string content one text part."""
    item = {"type": "message", **raw}
    kind = item["type"]
    item.setdefault("id", f"{_core.id_prefix(kind)}_{id_suffix}")
    if kind == "message":
        item.setdefault("status", "completed")
        if isinstance(item.get("content"), str):
            text_type = "output_text" if item.get("role") == "assistant" else "input_text"
            item["content"] = [{"type": text_type, "text": item["content"]}]
    return item


def page(
    items: list[JSONDict],
    *,
    limit: int = 20,
    order: str = "desc",
    after: str | None = None,
    before: str | None = None,
) -> JSONDict:
    """One page of `items` in OpenAI's list shape: `order` (`asc` or `desc`),
    at most `limit`, starting after the item `after` and ending before `before`."""
    ordered = items if order == "asc" else items[::-1]
    ids = [item["id"] for item in ordered]
    start = ids.index(after) + 1 if after in ids else 0
    end = ids.index(before) if before in ids else len(ordered)
    window = ordered[start:end]
    data = window[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(window) > limit,
    }
