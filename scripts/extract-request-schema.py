"""Writes the part of the Open Responses OpenAPI document that the server
validates request bodies against: the create body and every component it
refers to, nothing else.

    python scripts/extract-request-schema.py OPENAPI.json \
        python/stepwell/openresponses/spec/request-schema.json

Run it again, with the new document, when the specification's version moves;
the output names the version it came from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# The bodies stepwell takes, by the component that describes each.
ROOTS = ("CreateResponseBody",)
PREFIX = "#/components/schemas/"

# What stepwell takes beyond the document, each marked `x-stepwell`: three
# chat-completions parameters passed to the model as they are, `conversation`,
# `context_management` and the `json_object` text format. Any other field is refused (`additionalProperties`).
EXTRA_FIELDS = {
    "stop": {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
            {"type": "null"},
        ],
        "description": "Up to 4 sequences where the model stops generating.",
    },
    "seed": {
        "anyOf": [{"type": "integer"}, {"type": "null"}],
        "description": "Asks the model for deterministic sampling.",
    },
    "user": {
        "anyOf": [{"type": "string", "maxLength": 256}, {"type": "null"}],
        "description": "An identifier of the end user (superseded by safety_identifier).",
    },
}
# A conversation of this server's (`/v1/conversations`), by id, as OpenAI takes it.
CONVERSATION = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": 256},
        {
            "type": "object",
            "properties": {"id": {"type": "string", "minLength": 1, "maxLength": 256}},
            "required": ["id"],
            "additionalProperties": False,
        },
        {"type": "null"},
    ],
    "description": "The conversation this response belongs to: its items come first, and "
    "the response's input and output are added to it when it completes.",
    "x-stepwell": "a conversation kept by this server",
}
# Compaction inline, as OpenAI takes it: one entry, the token count past which
# the context is folded into a `compaction` item before the next model call.
CONTEXT_MANAGEMENT = {
    "anyOf": [
        {
            "type": "array",
            "minItems": 1,
            "maxItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "enum": ["compaction"]},
                    "compact_threshold": {"type": "integer", "minimum": 1},
                },
                "required": ["type", "compact_threshold"],
                "additionalProperties": False,
            },
        },
        {"type": "null"},
    ],
    "description": "Compacts the context inline: once a model call's context and answer "
    "pass compact_threshold tokens (by the upstream's usage figures), the context is "
    "summarized into a compaction item before the next model call.",
    "x-stepwell": "compaction by the model, sealed by this server",
}
_TOOL_NAMES = {"type": "array", "items": {"type": "string", "minLength": 1}}
# A Model Context Protocol server's tools, run by this server, as OpenAI takes them.
MCP_TOOL = {
    "type": "object",
    "properties": {
        "type": {"type": "string", "enum": ["mcp"]},
        "server_label": {"type": "string", "minLength": 1, "maxLength": 64,
                         "pattern": "^[a-zA-Z0-9_-]+$"},
        "server_url": {"anyOf": [{"type": "string", "minLength": 1}, {"type": "null"}]},
        "server_description": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "headers": {
            "anyOf": [
                {"type": "object", "additionalProperties": {"type": "string"}},
                {"type": "null"},
            ]
        },
        "authorization": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "allowed_tools": {
            "anyOf": [
                _TOOL_NAMES,
                {
                    "type": "object",
                    "properties": {"tool_names": _TOOL_NAMES},
                    "additionalProperties": False,
                },
                {"type": "null"},
            ]
        },
        "require_approval": {
            "anyOf": [
                {"type": "string", "enum": ["always", "never"]},
                {
                    "type": "object",
                    "properties": {
                        "always": {
                            "type": "object",
                            "properties": {"tool_names": _TOOL_NAMES},
                            "additionalProperties": False,
                        },
                        "never": {
                            "type": "object",
                            "properties": {"tool_names": _TOOL_NAMES},
                            "additionalProperties": False,
                        },
                    },
                    "additionalProperties": False,
                },
                {"type": "null"},
            ]
        },
    },
    "required": ["type", "server_label"],
    "additionalProperties": False,
    "title": "MCP tool",
    "x-stepwell": "an MCP server the operator declared or allows, its calls run by this server",
}
_ID = {"anyOf": [{"type": "string"}, {"type": "null"}]}
_TEXT = {"type": "string"}
_NULLABLE_TEXT = {"anyOf": [{"type": "string"}, {"type": "null"}]}
# The MCP items a client sends back (an earlier output, and its approvals).
MCP_ITEMS = {
    "McpApprovalResponseItemParam": {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": ["mcp_approval_response"]},
            "id": _ID,
            "approval_request_id": _TEXT,
            "approve": {"type": "boolean"},
            "reason": _NULLABLE_TEXT,
        },
        "required": ["type", "approval_request_id", "approve"],
        "title": "MCP approval response",
    },
    "McpApprovalRequestItemParam": {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": ["mcp_approval_request"]},
            "id": _TEXT,
            "server_label": _TEXT,
            "name": _TEXT,
            "arguments": _TEXT,
        },
        "required": ["type", "id", "server_label", "name", "arguments"],
        "title": "MCP approval request",
    },
    "McpCallItemParam": {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": ["mcp_call"]},
            "id": _TEXT,
            "server_label": _TEXT,
            "name": _TEXT,
            "arguments": _TEXT,
            "output": _NULLABLE_TEXT,
        },
        "required": ["type", "id", "server_label", "name", "arguments"],
        "title": "MCP call",
    },
    "McpListToolsItemParam": {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": ["mcp_list_tools"]},
            "id": _TEXT,
            "server_label": _TEXT,
            "tools": {"type": "array", "items": {"type": "object"}},
            "error": _NULLABLE_TEXT,
        },
        "required": ["type", "server_label", "tools"],
        "title": "MCP tool listing",
    },
}
JSON_OBJECT_FORMAT = {
    "properties": {"type": {"enum": ["json_object"], "type": "string"}},
    "required": ["type"],
    "type": "object",
    "x-stepwell": "any JSON object, as chat-completions' response_format json_object",
}


def extend(schemas: dict[str, Any]) -> None:
    """Adds stepwell's extensions to the kept components."""
    body = schemas["CreateResponseBody"]
    for name, schema in EXTRA_FIELDS.items():
        body["properties"][name] = {**schema, "x-stepwell": "passed to the model as is"}
    body["properties"]["conversation"] = CONVERSATION
    body["properties"]["context_management"] = CONTEXT_MANAGEMENT
    body["additionalProperties"] = False
    schemas["JsonObjectResponseFormat"] = JSON_OBJECT_FORMAT
    schemas["McpToolParam"] = MCP_TOOL
    for name, item in MCP_ITEMS.items():
        schemas[name] = {**item, "x-stepwell": "an MCP item of this server's"}
        schemas["ItemParam"]["oneOf"].append({"$ref": PREFIX + name})
    schemas["ResponsesToolParam"]["oneOf"].append({"$ref": PREFIX + "McpToolParam"})
    schemas["TextFormatParam"]["oneOf"].append({"$ref": PREFIX + "JsonObjectResponseFormat"})


def references(node: Any) -> set[str]:
    """The component names `node` refers to with `$ref`, at any depth."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith(PREFIX):
                found.add(ref.removeprefix(PREFIX))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def main(source: str, target: str) -> None:
    spec = json.loads(Path(source).read_text())
    schemas = spec["components"]["schemas"]
    keep: set[str] = set()
    todo = list(ROOTS)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo.extend(references(schemas[name]) - keep)
    kept = {name: schemas[name] for name in sorted(keep)}
    extend(kept)
    subset = {
        "x-source": f"Open Responses OpenAPI document, version {spec['info']['version']}",
        "x-roots": list(ROOTS),
        "components": {"schemas": kept},
    }
    Path(target).write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n")
    print(f"{target}: {len(keep)} schemas from version {spec['info']['version']}")


if __name__ == "__main__":
    main(*sys.argv[1:])
