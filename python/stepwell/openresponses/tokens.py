"""Counting a request's input tokens with the upstream's own tokenizer.

Chat-completions has no token-counting route; servers such as vLLM and
SGLang offer ``POST /tokenize`` beside it, which renders the messages (and
tools) through the model's chat template as a model call would and answers
``{"count": N, ...}``. An upstream without it cannot count: `NoTokenizer`.
"""

from __future__ import annotations

import json

from .. import _core
from ..errors import StepwellError
from ..types import UpstreamTarget
from .request import JSONDict
from .upstream import post_json

TOKENIZE_PATH = "/tokenize"
_TIMEOUT = 30.0


class NoTokenizer(StepwellError):
    """The upstream offers no tokenizer route: input tokens cannot be counted."""


class TokenCountFailed(StepwellError):
    """The upstream's tokenizer could not be reached, or did not answer a count."""


async def count_tokens(
    target: UpstreamTarget, model_call: JSONDict, client: _core.HttpClient | None = None
) -> int:
    """The tokens of a chat-completions body's prompt: its messages and tools,
    as the upstream's tokenizer renders them for `model_call["model"]`."""
    body: JSONDict = {
        "model": model_call["model"],
        "messages": model_call["messages"],
        "add_generation_prompt": True,
    }
    if model_call.get("tools"):
        body["tools"] = model_call["tools"]
    try:
        status, text = await post_json(target, TOKENIZE_PATH, body, _TIMEOUT, client)
    except (TimeoutError, ConnectionError):
        # Where the upstream is stays with the operator: not in the message.
        raise TokenCountFailed("the upstream's tokenizer could not be reached") from None
    if status in (404, 405, 501):
        raise NoTokenizer(
            f"the upstream offers no tokenizer ({TOKENIZE_PATH} answered {status}), "
            "so input tokens cannot be counted"
        )
    try:
        count = json.loads(text)["count"] if 200 <= status < 300 else None
    except (ValueError, KeyError, TypeError):
        count = None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise TokenCountFailed(f"the upstream's tokenizer answered {status} without a count")
    return count
