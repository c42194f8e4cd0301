"""Checking a request body before anything of it is kept.

Three layers, each refusing with an `InvalidRequest` that names the parameter
path (``input[0].content[0].text``):

1. `parse_json`: the bytes are strict JSON (no ``NaN``/``Infinity``, no
   number that overflows a double, no integer longer than 20 digits).
2. `check_values`: every value is one a response can carry back: finite
   numbers, integers within 64 bits, strings without lone surrogates, and
   nesting no deeper than `MAX_DEPTH`.
3. `check_schema`: the body fits the Open Responses schema of the create
   body (shipped in ``spec/request-schema.json``, with the version it came
   from), which also refuses fields the server does not know.

A `null` at the top level of the body means the field was left out, as at
OpenAI; `normalize` drops those and gives input items without a ``type`` the
schema's default (``message``), before the schema is checked.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from importlib import resources
from typing import Any

import jsonschema_rs

from .request import LOGPROBS, InvalidRequest, JSONDict

MAX_DEPTH = 64
"""The deepest nesting of arrays and objects a body may have."""

_INT64 = (-(2**63), 2**63 - 1)
_SURROGATE = re.compile("[\ud800-\udfff]")
# Known OpenAI parameters that this server does not offer, with why.
_UNSUPPORTED = {
    "conversation": "Conversations are not supported by this server yet.",
    "prompt": "Prompt templates are not supported by this server.",
}


def validate(body: Any) -> JSONDict:
    """Checks a create body (values, schema, then the rules below); returns it
    normalized, as it should be kept. Raises `InvalidRequest` naming the
    parameter at fault.

    Beyond the schema: a `model` is required, and `input` unless
    `previous_response_id` is given; `temperature`, `top_p` and the penalties
    are within OpenAI's ranges; metadata keys are at most 64 characters; a
    `json_schema` format has a `name` and a `schema`. Settings this server
    cannot honour are refused, never ignored: `truncation: "auto"`,
    `reasoning.summary`, `include: ["reasoning.encrypted_content"]`,
    `stream_options.include_obfuscation: true`, `background` with
    `store: false`, and log probabilities on a streamed response.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    check_values(body)
    normal = normalize(body)
    check_schema(normal)
    _check_rules(normal)
    return normal


_RANGES = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
}
_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _check_rules(body: JSONDict) -> None:
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("'model' is required and must be a non-empty string", "model")
    if "input" not in body and "previous_response_id" not in body:
        raise InvalidRequest("Missing required parameter: 'input'.", "input")
    if body.get("conversation") is not None and body.get("previous_response_id"):
        raise InvalidRequest(
            "'conversation' and 'previous_response_id' cannot be used together: "
            "a response continues one or the other.",
            "conversation",
        )
    for name, (low, high) in _RANGES.items():
        value = body.get(name)
        if value is not None and not low <= value <= high:
            raise InvalidRequest(
                f"Invalid value for '{name}': it must be from {low} to {high}.", name
            )
    for key in body.get("metadata") or {}:
        if len(key) > 64:
            raise InvalidRequest("Invalid metadata key: longer than 64 characters.", "metadata")
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        if not isinstance(fmt.get("name"), str) or not _NAME.match(fmt["name"]):
            raise InvalidRequest(
                "'text.format.name' is required: 1 to 64 of a-z, A-Z, 0-9, _ and -.",
                "text.format.name",
            )
        if "schema" not in fmt:
            raise InvalidRequest(
                "Missing required parameter: 'text.format.schema'.", "text.format.schema"
            )
    _refuse_what_cannot_be_honoured(body)


def _refuse_what_cannot_be_honoured(body: JSONDict) -> None:
    if body.get("truncation") == "auto":
        raise InvalidRequest(
            "truncation 'auto' is not supported by this server: it never truncates the "
            "input (use 'disabled').",
            "truncation",
        )
    if (body.get("reasoning") or {}).get("summary") is not None:
        raise InvalidRequest(
            "Reasoning summaries are not supported by this server.", "reasoning.summary"
        )
    include = body.get("include") or []
    if "reasoning.encrypted_content" in include:
        raise InvalidRequest(
            "Encrypted reasoning content is not supported by this server.", "include"
        )
    if (body.get("stream_options") or {}).get("include_obfuscation"):
        raise InvalidRequest(
            "Stream obfuscation is not supported by this server (set it to false).",
            "stream_options.include_obfuscation",
        )
    if body.get("store") is False and body.get("background") is True:
        raise InvalidRequest(
            "A background response must be stored: background with store: false is refused.",
            "background",
        )
    if body.get("stream") and (body.get("top_logprobs") or LOGPROBS in include):
        param = "top_logprobs" if body.get("top_logprobs") else "include"
        raise InvalidRequest(
            "Log probabilities are only available on responses that are neither streamed nor "
            "run in the background.",
            param,
        )


def parse_json(data: bytes | str) -> Any:
    """The JSON value of a request body, refusing what JSON's grammar forbids
    (``NaN``, ``Infinity``) and numbers no response could carry back."""
    try:
        return json.loads(data, parse_constant=_constant, parse_int=_integer, parse_float=_float)
    except InvalidRequest:
        raise
    except RecursionError as error:
        raise InvalidRequest(f"The request body is nested more than {MAX_DEPTH} deep.") from error
    except json.JSONDecodeError as error:
        # A position, never the content.
        raise InvalidRequest(
            f"The request body is not valid JSON (line {error.lineno}, column {error.colno})."
        ) from error
    except ValueError as error:  # bytes that are not UTF-8, say
        raise InvalidRequest("The request body is not valid JSON.") from error


def _constant(name: str) -> Any:
    raise InvalidRequest(f"The request body is not valid JSON: {name} is not a JSON number.")


def _integer(text: str) -> int:
    # Checked before conversion: a very long integer costs time to convert and
    # is refused by Python itself past 4,300 digits.
    if len(text.lstrip("-")) > 19:
        raise InvalidRequest("The request body holds an integer outside the 64-bit range.")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidRequest("The request body holds a number too large to represent.")
    return value


def param_path(path: list[str | int] | tuple[str | int, ...]) -> str:
    """``["input", 0, "content"]`` as ``input[0].content``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text


def check_values(body: Any) -> None:
    """Refuses values a response could not carry back: non-finite numbers,
    integers outside 64 bits, lone surrogates, and nesting past `MAX_DEPTH`.
    Walks the body without recursion, so no depth can exhaust the stack."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(body, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise InvalidRequest(
                    f"Invalid string for '{param_path(path)}': it holds a lone surrogate, "
                    "which is not valid Unicode.",
                    param_path(path) or None,
                )
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not _INT64[0] <= value <= _INT64[1]:
                raise InvalidRequest(
                    f"Invalid integer for '{param_path(path)}': outside the 64-bit range.",
                    param_path(path) or None,
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidRequest(
                    f"Invalid number for '{param_path(path)}': it must be finite.",
                    param_path(path) or None,
                )
        elif isinstance(value, (dict, list)):
            if len(path) >= MAX_DEPTH:
                raise InvalidRequest(
                    f"The request body is nested more than {MAX_DEPTH} deep.",
                    param_path(path) or None,
                )
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str) or _SURROGATE.search(key):
                        raise InvalidRequest(
                            f"Invalid key in '{param_path(path) or 'the body'}'.",
                            param_path(path) or None,
                        )
                    stack.append((item, (*path, key)))
            else:
                stack.extend((item, (*path, index)) for index, item in enumerate(value))
        else:
            raise InvalidRequest(
                f"Invalid value for '{param_path(path)}': not a JSON value.",
                param_path(path) or None,
            )


def normalize(body: JSONDict) -> JSONDict:
    """The body with its top-level nulls dropped (a null is a field left out)
    and `type: "message"` on input items that name only a `role`. The body
    given is not changed."""
    normal = {key: value for key, value in body.items() if value is not None}
    given = normal.get("input")
    if isinstance(given, list):
        normal["input"] = [
            {"type": "message", **item}
            if isinstance(item, dict) and "type" not in item and "role" in item
            else item
            for item in given
        ]
    return normal


@cache
def _validator() -> Any:
    text = resources.files(__package__).joinpath("spec/request-schema.json").read_text()
    spec = json.loads(text)
    return jsonschema_rs.Draft202012Validator(
        {"$ref": "#/components/schemas/CreateResponseBody", "components": spec["components"]}
    )


def check_schema(body: JSONDict) -> None:
    """Refuses a body that does not fit the create body's schema, naming the
    first parameter at fault."""
    validator = _validator()
    if validator.is_valid(body):
        return
    error = _closest(next(iter(validator.iter_errors(body))))
    raise _refusal(error)


# ------------------------------------------------------------ error selection


def _closest(error: Any) -> Any:
    """The error that says what is wrong: for a failed `anyOf`/`oneOf`, the
    errors of the branch the value was meant for (the one whose `type` and
    `role` fit, a discriminator in all but name), when there is exactly one."""
    while type(error.kind).__name__ in ("AnyOf", "OneOfNotValid") and error.kind.context:
        branches = [list(branch) for branch in error.kind.context]
        depth = len(error.instance_path)
        # A branch for another JSON type (the `null` of a nullable field) is not it.
        fitting = [b for b in branches if not any(_is_type_mismatch(e, depth) for e in b)]
        if not fitting:
            return _merged_types(error, branches)
        branches = fitting
        for key in ("type", "role"):
            fitting = [b for b in branches if not any(_on_key(e, depth, key) for e in b)]
            if fitting:
                branches = fitting
            elif all(any(_on_key(e, depth, key) for e in b) for b in branches):
                return _merged_enum(error, key, branches)
        if len(branches) != 1 or not branches[0]:
            return error
        error = min(branches[0], key=lambda e: -len(e.instance_path))
    return error


def _is_type_mismatch(error: Any, depth: int) -> bool:
    return len(error.instance_path) == depth and type(error.kind).__name__ == "Type"


def _on_key(error: Any, depth: int, key: str) -> bool:
    path = error.instance_path
    return len(path) == depth + 1 and path[-1] == key


class _Enum:
    """A stand-in error: the value at `path` is none of `options`."""

    def __init__(self, path: list[str | int], options: list[Any]) -> None:
        self.instance_path = path
        self.kind = self
        self.options = options


class _Type:
    """A stand-in error: the value at `path` is of none of `types`."""

    def __init__(self, path: list[str | int], types: list[str]) -> None:
        self.instance_path = path
        self.kind = self
        self.types = types


def _merged_types(error: Any, branches: list[list[Any]]) -> Any:
    types: list[str] = []
    for branch in branches:
        for sub in branch:
            if _is_type_mismatch(sub, len(error.instance_path)):
                types += [t for t in sub.kind.types if t not in types]
    return _Type(list(error.instance_path), types)


def _merged_enum(error: Any, key: str, branches: list[list[Any]]) -> Any:
    options: list[Any] = []
    for branch in branches:
        for sub in branch:
            if _on_key(sub, len(error.instance_path), key):
                for option in _options(sub):
                    if option not in options:
                        options.append(option)
    if not options:
        return error
    return _Enum([*error.instance_path, key], options)


def _options(error: Any) -> list[Any]:
    kind = error.kind
    name = type(kind).__name__
    if name in ("Enum", "_Enum"):
        return list(kind.options)
    if name == "Constant":
        return [kind.expected_value]
    if name in ("AnyOf", "OneOfNotValid"):
        return [o for branch in kind.context for sub in branch for o in _options(sub)]
    return []


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


_LIMITS = {
    "Minimum": "it must be at least {}",
    "ExclusiveMinimum": "it must be above {}",
    "Maximum": "it must be at most {}",
    "ExclusiveMaximum": "it must be below {}",
    "MaxLength": "longer than {} characters",
    "MinLength": "shorter than {} characters",
    "MaxItems": "more than {} items",
    "MinItems": "fewer than {} items",
    "MaxProperties": "more than {} entries",
}


def _refusal(error: Any) -> InvalidRequest:
    """The client's message for a schema error; the value itself is never
    quoted back."""
    path = list(error.instance_path)
    where = param_path(path)
    kind = error.kind
    name = type(kind).__name__
    if name == "AdditionalProperties":
        field = param_path([*path, kind.unexpected[0]])
        message = _UNSUPPORTED.get(field, f"Unknown parameter: '{field}'.")
        return InvalidRequest(message, field, code="unknown_parameter")
    if name == "Required":
        field = param_path([*path, kind.property])
        return InvalidRequest(f"Missing required parameter: '{field}'.", field)
    if name in ("Type", "_Type"):
        expected = " or ".join(_TYPE_NAMES.get(t, t) for t in kind.types)
        message = f"Invalid type for '{where}': expected {expected}."
    elif name in ("Enum", "_Enum", "Constant"):
        listed = ", ".join(repr(o) for o in _options(error)[:12])
        message = f"Invalid value for '{where}': expected one of {listed}."
    elif name in _LIMITS:
        message = f"Invalid value for '{where}': {_LIMITS[name].format(kind.limit)}."
    elif name == "Pattern":
        message = f"Invalid value for '{where}': it must match {kind.pattern}."
    else:
        message = f"Invalid value for '{where}'."
    return InvalidRequest(message, where or None)
