"""Compaction: a long context folded into one `compaction` item.

`POST /v1/responses/compact` asks the model to summarize the context a
create body would send (earlier responses, instructions, input) and answers
the context's user messages followed by a `compaction` item that stands for
the rest. Sent back as input, the item becomes the summary again.

A create with `context_management` compacts inline: once a model call's
context and answer pass the threshold (by the upstream's usage figures), the
next step is a compaction step, a tool step the `Compacting` executor runs,
whose `compaction` item appears in the output (and the stream) where the
context was folded; later model calls send the system and user messages,
the summary, and what came after it.

The item's `encrypted_content` is the summary, encrypted and authenticated
with the server's key: clients cannot read it, and one they changed (or one
sealed under another key) is refused with a 400. The construction uses the
standard library only: HMAC-SHA256 as a pseudo-random function in counter
mode for the keystream, then HMAC-SHA256 over nonce and ciphertext (encrypt,
then MAC), each under its own key derived from the server's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from .. import _core
from ..errors import StepwellError, ToolExecutionError
from ..protocols import ToolExecutor
from ..types import JSON, UpstreamTarget
from .intercepting import Intercepting
from .request import InvalidRequest, JSONDict
from .upstream import post_json

COMPACT_FIELDS = frozenset(
    {"model", "input", "previous_response_id", "instructions", "prompt_cache_key"}
)
"""What a compaction request may carry."""
_TIMEOUT = 300.0


class CompactionFailed(StepwellError):
    """The model's summary could not be had (the upstream failed or answered
    without one)."""


SUMMARY_PROMPT = (
    "Summarize the conversation so far for your own later use: the user's goals and "
    "constraints, what was decided and done (tool calls and their results included), and "
    "what is still open. Be complete but brief; write only the summary."
)
"""What the model is asked, after the context, to write the summary."""

SUMMARY_PREFIX = "Summary of the conversation before this point:\n"
"""How a compaction item reads to the model when it is sent back."""

_VERSION = "swc1"
_NONCE = 16
_TAG = 32


class CompactionKey:
    """Seals summaries into `encrypted_content` and opens them again. Without
    a `secret`, a random one: items then open only in this process (give
    every process of a deployment the same secret)."""

    def __init__(self, secret: bytes | None = None) -> None:
        root = secret or os.urandom(32)
        self._cipher = hmac.new(root, b"stepwell compaction cipher", hashlib.sha256).digest()
        self._mac = hmac.new(root, b"stepwell compaction mac", hashlib.sha256).digest()

    def seal(self, summary: str) -> str:
        """The `encrypted_content` that stands for `summary`."""
        nonce = os.urandom(_NONCE)
        sealed = self._xor(nonce, summary.encode())
        tag = self._tag(nonce, sealed)
        return f"{_VERSION}.{base64.urlsafe_b64encode(nonce + sealed + tag).decode()}"

    def open(self, content: Any, param: str) -> str:
        """The summary an `encrypted_content` stands for; `InvalidRequest`
        (naming `param`) for one this server did not seal, or one changed."""
        refused = InvalidRequest(
            "This compaction item was not made by this server, or was changed.", param
        )
        if not isinstance(content, str) or not content.startswith(f"{_VERSION}."):
            raise refused
        encoded = content.removeprefix(f"{_VERSION}.")
        try:
            raw = base64.urlsafe_b64decode(encoded)
        except ValueError:
            raise refused from None
        # Only the one encoding seal makes: nothing added, nothing ignored.
        if len(raw) < _NONCE + _TAG or base64.urlsafe_b64encode(raw).decode() != encoded:
            raise refused
        nonce, sealed, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
        if not hmac.compare_digest(tag, self._tag(nonce, sealed)):
            raise refused
        try:
            return self._xor(nonce, sealed).decode()
        except UnicodeDecodeError:
            raise refused from None

    def unfold(self, items: Any, param: str) -> Any:
        """Input items with each `compaction` item replaced by the summary it
        stands for, as a message to the model."""
        if not isinstance(items, list):
            return items
        unfolded = []
        for index, item in enumerate(items):
            if isinstance(item, dict) and item.get("type") == "compaction":
                summary = self.open(item.get("encrypted_content"), f"{param}[{index}]")
                item = {"type": "message", **summary_message(summary)}
            unfolded.append(item)
        return unfolded

    def _tag(self, nonce: bytes, sealed: bytes) -> bytes:
        return hmac.new(self._mac, _VERSION.encode() + nonce + sealed, hashlib.sha256).digest()

    def _xor(self, nonce: bytes, data: bytes) -> bytes:
        stream = bytearray()
        counter = 0
        while len(stream) < len(data):
            block = nonce + counter.to_bytes(8, "big")
            stream += hmac.new(self._cipher, block, hashlib.sha256).digest()
            counter += 1
        return bytes(a ^ b for a, b in zip(data, stream, strict=False))


def compact_threshold(body: JSONDict) -> int | None:
    """The token count past which a create body asks for inline compaction."""
    for entry in body.get("context_management") or []:
        if entry.get("type") == "compaction":
            return int(entry["compact_threshold"])
    return None


def is_summary(message: JSONDict) -> bool:
    """Whether a chat message is a summary that a compaction item stands for."""
    content = message.get("content")
    return message.get("role") == "user" and (
        isinstance(content, str) and content.startswith(SUMMARY_PREFIX)
    )


def summary_message(summary: str) -> JSONDict:
    """The chat message a summary is to the model."""
    return {"role": "user", "content": SUMMARY_PREFIX + summary}


def fold(messages: list[JSONDict]) -> list[JSONDict]:
    """A model call's messages as compaction leaves them: before the last
    summary, only the system and user messages (a summary stands for the
    rest, earlier summaries included); the summary and all after it as they
    are."""
    last = max((i for i, m in enumerate(messages) if is_summary(m)), default=None)
    if last is None:
        return messages
    kept = [
        m for m in messages[:last] if m.get("role") in ("system", "developer")
        or (m.get("role") == "user" and not is_summary(m))
    ]  # fmt: skip
    return kept + messages[last:]


class Compacting(Intercepting):
    """A `ToolExecutor` that runs compaction steps (the tool
    `_core.COMPACTION_TOOL`, whose arguments are the model call to
    summarize) and hands every other call to `tools`. A compaction step's
    result is the sealed summary (`encrypted_content`) and the summary call's
    `usage`; a summary the model did not give fails the step."""

    def __init__(
        self,
        tools: ToolExecutor,
        target: UpstreamTarget,
        key: CompactionKey,
        client: _core.HttpClient | None = None,
    ) -> None:
        super().__init__(tools)
        self._target = target
        self._key = key
        self._client = client

    def handles(self, tool_name: str) -> bool:
        """Whether the call is a compaction step."""
        return tool_name == _core.COMPACTION_TOOL

    async def run(self, tool_name: str, arguments: JSON) -> JSON:
        """Summarizes the model call `arguments` names; the sealed summary."""
        if not isinstance(arguments, dict) or not isinstance(arguments.get("messages"), list):
            raise ToolExecutionError("a compaction step needs the model call it summarizes")
        try:
            summary, usage = await summarize(self._target, arguments, self._client)
        except CompactionFailed as failed:
            raise ToolExecutionError(f"compaction failed: {failed}") from None
        return {"encrypted_content": self._key.seal(summary), "usage": usage}


def kept_user_messages(messages: list[JSONDict]) -> list[JSONDict]:
    """The user's text messages of a model call's context, as input items:
    what a compaction keeps as it was (the rest goes into the summary)."""
    kept = []
    for message in messages:
        content = message.get("content")
        if message.get("role") == "user" and isinstance(content, str) and not is_summary(message):
            kept.append(
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": content}]}
            )  # fmt: skip
    return kept


async def summarize(
    target: UpstreamTarget, model_call: JSONDict, client: _core.HttpClient | None = None
) -> tuple[str, JSONDict]:
    """The model's summary of a model call's context, and the call's usage in
    the Responses shape."""
    body: JSONDict = {
        "model": model_call["model"],
        "messages": [*model_call["messages"], {"role": "user", "content": SUMMARY_PROMPT}],
    }
    if model_call.get("prompt_cache_key"):
        body["prompt_cache_key"] = model_call["prompt_cache_key"]
    try:
        status, text = await post_json(target, target.path, body, _TIMEOUT, client)
    except (TimeoutError, ConnectionError):
        raise CompactionFailed("the model could not be reached") from None
    try:
        answer = json.loads(text) if 200 <= status < 300 else {}
        summary = answer["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        summary = None
    if not isinstance(summary, str) or not summary:
        raise CompactionFailed(f"the model answered {status} without a summary")
    used = answer.get("usage") or {}
    prompt, completion = (
        int(used.get("prompt_tokens") or 0),
        int(used.get("completion_tokens") or 0),
    )
    usage = {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }
    return summary, usage
