"""One JSON request to the chat-completions upstream beside the loop's model
calls (its tokenizer, a compaction's summary), with the upstream's key."""

from __future__ import annotations

import json

from .. import _core
from ..types import UpstreamTarget
from .request import JSONDict


async def post_json(
    target: UpstreamTarget,
    path: str,
    body: JSONDict,
    timeout: float,
    client: _core.HttpClient | None = None,
) -> tuple[int, str]:
    """POSTs `body` to the upstream's `path`: its status and text. Raises
    `TimeoutError` or `ConnectionError` when it cannot be reached."""
    headers = {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}
    url = target.endpoint.rstrip("/") + path
    return await _core.post_json(url, json.dumps(body), headers, timeout, client)
