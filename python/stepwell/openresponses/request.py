"""From an Open Responses create body to the chat-completions request of a model call."""

from __future__ import annotations

import json
from typing import Any

JSONDict = dict[str, Any]


class InvalidRequest(ValueError):
    """The create body is not a valid Open Responses request; ``param`` names
    the offending parameter when there is one."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


_KNOWN_ROLES = {"user", "assistant", "system", "developer"}


def validate(body: Any) -> JSONDict:
    """Checks the fields stepwell reads; returns the body unchanged."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    for name in ("stream", "background", "store", "parallel_tool_calls"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise InvalidRequest(f"'{name}' must be a boolean", name)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("'model' is required and must be a non-empty string", "model")
    if "input" not in body and "previous_response_id" not in body:
        raise InvalidRequest("'input' is required", "input")
    if not isinstance(body.get("input", ""), (str, list)):
        raise InvalidRequest("'input' must be a string or a list of items", "input")
    for tool in body.get("tools") or []:
        if not isinstance(tool, dict) or tool.get("type") != "function" or not tool.get("name"):
            raise InvalidRequest("each tool must be {'type': 'function', 'name': ...}", "tools")
    for name in ("temperature", "top_p"):
        if body.get(name) is not None and not isinstance(body[name], (int, float)):
            raise InvalidRequest(f"'{name}' must be a number", name)
    for name in ("max_output_tokens", "max_tool_calls"):
        value = body.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise InvalidRequest(f"'{name}' must be a positive integer", name)
    return body


def _content(parts: Any) -> Any:
    """Responses content (a string or parts) as chat content."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise InvalidRequest("message content must be a string or a list of parts", "input")
    converted = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            converted.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image":
            url = part.get("image_url") or part.get("file_id")
            if not url:
                raise InvalidRequest("input_image needs an image_url", "input")
            image: JSONDict = {"url": url}
            if part.get("detail"):
                image["detail"] = part["detail"]
            converted.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            converted.append({"type": "file", "file": _file(part)})
        else:
            raise InvalidRequest(f"unsupported content part {kind!r}", "input")
    if all(p["type"] == "text" for p in converted):
        return "".join(p["text"] for p in converted)
    return converted


_FILE_SOURCES = ("file_data", "file_id", "file_url")


def _file(part: JSONDict) -> JSONDict:
    """An `input_file` part as the `file` of a chat-completions content part."""
    file = {key: part[key] for key in (*_FILE_SOURCES, "filename") if part.get(key)}
    if not any(key in file for key in _FILE_SOURCES):
        raise InvalidRequest("input_file needs file_data, file_id or file_url", "input")
    for key, value in file.items():
        if not isinstance(value, str):
            raise InvalidRequest(f"input_file.{key} must be a string", "input")
    return file


def input_messages(items: Any) -> list[JSONDict]:
    """Responses input (a string or items) as chat messages."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    messages: list[JSONDict] = []
    for item in items:
        if not isinstance(item, dict):
            raise InvalidRequest("each input item must be an object", "input")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _KNOWN_ROLES:
                raise InvalidRequest(f"unsupported message role {role!r}", "input")
            chat_role = "system" if role == "developer" else role
            messages.append({"role": chat_role, "content": _content(item.get("content", ""))})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output", "")
            if not isinstance(output, str):
                output = json.dumps(output)
            messages.append(
                {"role": "tool", "tool_call_id": item.get("call_id"), "content": output}
            )
        elif kind == "reasoning":
            continue  # reasoning is not sent back to chat-completions upstreams
        else:
            raise InvalidRequest(f"unsupported input item type {kind!r}", "input")
    return messages


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
    return choice


def model_request(body: JSONDict, messages: list[JSONDict], tools: list[JSONDict]) -> JSONDict:
    """The chat-completions body of a model call for `body`, over `messages`."""
    request: JSONDict = {"model": body["model"], "messages": messages}
    if tools:
        request["tools"] = chat_tools(tools)
        if body.get("tool_choice") is not None:
            request["tool_choice"] = chat_tool_choice(body["tool_choice"])
        if body.get("parallel_tool_calls") is not None:
            request["parallel_tool_calls"] = body["parallel_tool_calls"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            request[name] = body[name]
    if body.get("max_output_tokens") is not None:
        request["max_tokens"] = body["max_output_tokens"]
    if body.get("stream"):
        request["stream"] = True
        request["stream_options"] = {"include_usage": True}
    return request
