"""From an Open Responses create body to the chat-completions request of a model call."""

from __future__ import annotations

from typing import Any

from .. import _core
from ..errors import StepwellError
from ..types import MCP_SEPARATOR

JSONDict = dict[str, Any]


class InvalidRequest(StepwellError, ValueError):
    """The create body is not a valid Open Responses request; ``param`` names
    the offending parameter when there is one, and ``code`` says why in one
    word when a client may want to tell (``unknown_parameter``)."""

    def __init__(self, message: str, param: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class UnknownConversation(InvalidRequest):
    """The request names a conversation this server does not keep (for its
    tenant): answered as a 404."""


def conversation_id(body: JSONDict) -> str | None:
    """The id of the conversation a create body names (a string or `{id}`)."""
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        return str(conversation["id"])
    return conversation if isinstance(conversation, str) else None


_KNOWN_ROLES = {"user", "assistant", "system", "developer"}
_URL_SCHEMES = ("https:", "http:", "data:")


def _url(value: Any, param: str) -> str:
    """A URL a part may name: `https:`, `http:` or `data:` only, so a request
    can never point the upstream at a local file."""
    if not isinstance(value, str) or not value.lower().startswith(_URL_SCHEMES):
        raise InvalidRequest(
            f"Invalid URL for '{param}': only https:, http: and data: URLs are accepted.", param
        )
    return value


def _content(parts: Any, param: str) -> Any:
    """Responses content (a string or parts) as chat content."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise InvalidRequest("message content must be a string or a list of parts", param)
    converted = []
    for index, part in enumerate(parts):
        where = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            converted.append({"type": "text", "text": part.get("text", "")})
        elif kind == "refusal":
            converted.append({"type": "text", "text": part.get("refusal", "")})
        elif kind == "input_image":
            if part.get("image_url") is None:
                raise InvalidRequest("input_image needs an image_url", f"{where}.image_url")
            image: JSONDict = {"url": _url(part["image_url"], f"{where}.image_url")}
            if part.get("detail"):
                image["detail"] = part["detail"]
            converted.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            converted.append({"type": "file", "file": _file(part, where)})
        else:
            raise InvalidRequest(f"unsupported content part {kind!r}", f"{where}.type")
    if all(p["type"] == "text" for p in converted):
        return "".join(p["text"] for p in converted)
    return converted


_FILE_SOURCES = ("file_data", "file_id", "file_url")


def _file(part: JSONDict, param: str) -> JSONDict:
    """An `input_file` part as the `file` of a chat-completions content part."""
    file = {key: part[key] for key in (*_FILE_SOURCES, "filename") if part.get(key)}
    if not any(key in file for key in _FILE_SOURCES):
        raise InvalidRequest("input_file needs file_data, file_id or file_url", param)
    for key, value in file.items():
        if not isinstance(value, str):
            raise InvalidRequest(f"input_file.{key} must be a string", f"{param}.{key}")
    if "file_url" in file:
        _url(file["file_url"], f"{param}.file_url")
    return file


def input_messages(items: Any, param: str = "input") -> list[JSONDict]:
    """Responses input (a string or items) as chat messages; `param` names the
    input in errors."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[JSONDict] = []
    # An MCP call's result, told once the calls beside it are all given: a
    # tool message must follow the assistant message that made the call.
    results: list[JSONDict] = []
    for index, item in enumerate(items):
        where = f"{param}[{index}]"
        if not isinstance(item, dict):
            raise InvalidRequest("each input item must be an object", where)
        kind = item.get("type", "message")
        if kind not in _CALLS:
            messages += results
            results = []
        if kind in _MCP_CALLS:
            name = f"{item.get('server_label')}{MCP_SEPARATOR}{item.get('name')}"
            _add_call(messages, str(item.get("id")), name, str(item.get("arguments") or ""))
            if kind == "mcp_call":
                results.append(
                    {"role": "tool", "tool_call_id": item.get("id"), "content": _mcp_result(item)}
                )
        elif kind == "mcp_approval_response":
            if item.get("approve") is not True:
                reason = f" ({item['reason']})" if item.get("reason") else ""
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": item.get("approval_request_id"),
                        "content": f"The user did not approve this call{reason}; it did not run.",
                    }
                )
        elif kind == "mcp_list_tools":
            continue  # the tools it lists are offered as functions
        elif kind == "message":
            role = item.get("role")
            if role not in _KNOWN_ROLES:
                raise InvalidRequest(f"unsupported message role {role!r}", f"{where}.role")
            chat_role = "system" if role == "developer" else role
            content = _content(item.get("content", ""), f"{where}.content")
            messages.append({"role": chat_role, "content": content})
        elif kind == "function_call":
            arguments = item.get("arguments", "")
            _add_call(messages, item.get("call_id"), item.get("name"), arguments)
        elif kind == "function_call_output":
            output = _tool_output(item.get("output", ""), f"{where}.output")
            messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": output}
            )
        elif kind == "reasoning":
            continue  # reasoning is not sent back to chat-completions upstreams
        else:
            raise InvalidRequest(
                f"Input items of type {kind!r} are not supported by this server.", f"{where}.type"
            )
    return messages + results


_MCP_CALLS = ("mcp_call", "mcp_approval_request")
_CALLS = ("function_call", *_MCP_CALLS)


def _add_call(messages: list[JSONDict], call_id: Any, name: Any, arguments: Any) -> None:
    """A tool call, joined to the assistant message of the calls before it."""
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last and last["role"] == "assistant" and "tool_calls" in last:
        last["tool_calls"].append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _mcp_result(item: JSONDict) -> str:
    """What the model was told of an `mcp_call`."""
    if item.get("output") is not None:
        return str(item["output"])
    error = item.get("error")
    if isinstance(error, dict):
        parts = error.get("content") or []
        texts = [str(p.get("text", "")) for p in parts if isinstance(p, dict)]
        error = "".join(texts) or error.get("message")
    if error is not None:
        return _core.compact_json({"error": error})
    return "The call did not run."


def _tool_output(output: Any, param: str) -> str:
    """A `function_call_output`'s output as a chat tool message's text: a string
    as it is, text parts joined. Chat-completions tool messages carry text only."""
    if isinstance(output, str):
        return output
    texts = []
    for index, part in enumerate(output):
        if not isinstance(part, dict) or part.get("type") != "input_text":
            raise InvalidRequest(
                "Only text parts are supported in a function_call_output here.",
                f"{param}[{index}]",
            )
        texts.append(str(part.get("text", "")))
    return "".join(texts)


def chat_tools(tools: list[JSONDict]) -> list[JSONDict]:
    """Responses function tools as chat-completions tools."""
    converted = []
    for tool in tools:
        function: JSONDict = {"name": tool["name"]}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        converted.append({"type": "function", "function": function})
    return converted


def chat_tool_choice(choice: Any) -> Any:
    """Responses tool_choice as chat-completions tool_choice."""
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        tools = [
            {"type": "function", "function": {"name": tool.get("name")}}
            for tool in choice.get("tools") or []
        ]
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": choice.get("mode") or "auto", "tools": tools},
        }
    return choice


# Sent to the model under the same name; the field is already checked.
_PASSED_AS_IS = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "stop",
    "user",
    "safety_identifier",
    "prompt_cache_key",
    "service_tier",
)

LOGPROBS = "message.output_text.logprobs"
"""The `include` option that asks for the sampled tokens' log probabilities."""


def response_format(text: Any) -> JSONDict | None:
    """The chat-completions `response_format` for a Responses `text.format`
    (`None` for plain text)."""
    fmt = (text or {}).get("format") if isinstance(text, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    schema: JSONDict = {"name": fmt["name"], "schema": fmt["schema"]}
    for key in ("description", "strict"):
        if fmt.get(key) is not None:
            schema[key] = fmt[key]
    return {"type": "json_schema", "json_schema": schema}


def model_request(body: JSONDict, messages: list[JSONDict], tools: list[JSONDict]) -> JSONDict:
    """The chat-completions body of a model call for `body`, over `messages`.

    Every field of a checked create body that concerns the model reaches it
    here, under the name chat-completions gives it; the others are honoured by
    stepwell itself (`max_tool_calls`, `metadata`, `previous_response_id`, ...).
    """
    request: JSONDict = {"model": body["model"], "messages": messages}
    if tools:
        request["tools"] = chat_tools(tools)
        if body.get("tool_choice") is not None:
            request["tool_choice"] = chat_tool_choice(body["tool_choice"])
        if body.get("parallel_tool_calls") is not None:
            request["parallel_tool_calls"] = body["parallel_tool_calls"]
    for name in _PASSED_AS_IS:
        if body.get(name) is not None:
            request[name] = body[name]
    if body.get("max_output_tokens") is not None:
        request["max_tokens"] = body["max_output_tokens"]
    fmt = response_format(body.get("text"))
    if fmt is not None:
        request["response_format"] = fmt
    text = body.get("text")
    if isinstance(text, dict) and text.get("verbosity") is not None:
        request["verbosity"] = text["verbosity"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        request["reasoning_effort"] = reasoning["effort"]
    if body.get("top_logprobs") or LOGPROBS in (body.get("include") or []):
        request["logprobs"] = True
        if body.get("top_logprobs"):
            request["top_logprobs"] = body["top_logprobs"]
    if body.get("stream"):
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return request
