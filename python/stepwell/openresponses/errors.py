"""What a client is told when a response fails: what went wrong, never how.

Step and loop errors carry the details an operator needs (the upstream's
body, an exception's text) in the step rows and the log; a `Response`'s
`error` carries a stable `code` and a message written for the client.
"""

from __future__ import annotations

import json
from typing import Any

from .request import JSONDict

_TIMEOUTS = {
    "first_chunk_timeout": "the model sent nothing in time",
    "chunk_timeout": "the model's stream stalled",
    "body_timeout": "the model's answer took too long",
    "upload_stall_timeout": "the request to the model stalled",
}
_MODEL_FAILURES = {
    "transport_error": "the model could not be reached",
    "stream_truncated": "the model's stream ended before its answer did",
    "invalid_stream": "the model's stream could not be read",
}
_LOOP_FAILURES = {
    "store_error": "The response could not be stored.",
    "executor_error": "A step of the response could not be run.",
    "max_iterations_exceeded": "The response took more rounds than this server allows.",
    "max_depth_exceeded": "Sub-agents nested deeper than this server allows.",
    "empty_action": "The response had no next step.",
}
_UPSTREAM_MESSAGE_LIMIT = 500


def model_call_error(error: JSONDict | None) -> JSONDict:
    """The client's `{code, message}` for a failed model call step."""
    error = error or {}
    code = str(error.get("code") or "model_call_failed")
    if code == "upstream_error":
        status = error.get("status")
        message = f"The model call failed: the upstream answered {status}."
        detail = _upstream_message(error.get("message"))
        if detail:
            message += f" It said: {detail}"
    elif code in _TIMEOUTS:
        message = f"The model call timed out: {_TIMEOUTS[code]}."
    else:
        message = f"The model call failed: {_MODEL_FAILURES.get(code, 'it did not complete')}."
    return {"code": code, "message": message}


def loop_error(payload: Any) -> JSONDict:
    """The client's `{code, message}` for a loop that stopped with `payload`."""
    payload = payload if isinstance(payload, dict) else {}
    code = str(payload.get("type") or "server_error")
    return {
        "code": code,
        "message": _LOOP_FAILURES.get(code, "The server had an error while running the response."),
    }


def _upstream_message(message: Any) -> str:
    """The message an upstream's JSON error body gives (`{"error": {"message"}}`),
    if it gives one; its body otherwise stays out of the response."""
    text = str(message or "")
    start = text.find("{")
    if start < 0:
        return ""
    try:
        body = json.loads(text[start:])
    except ValueError:
        return ""
    inner = body.get("error") if isinstance(body, dict) else None
    said = inner.get("message") if isinstance(inner, dict) else None
    if not isinstance(said, str):
        return ""
    return said[:_UPSTREAM_MESSAGE_LIMIT]
