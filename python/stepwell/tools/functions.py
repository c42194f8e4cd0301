"""`FunctionTools`: Python functions as tools, their JSON Schema read from type
hints and docstrings."""

from __future__ import annotations

import asyncio
import enum
import inspect
import re
import typing
from collections.abc import Callable
from typing import Any, Union

from .._eager import runs_without_task
from ..errors import InvalidToolArguments, ToolError, ToolExecutionError, ToolNotFound
from ..types import RequestContext, ToolKind, ToolSchema

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


def json_schema(annotation: Any) -> dict[str, Any]:
    """The JSON Schema of a type hint (the common shapes; anything else is unconstrained)."""
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Union or type(annotation).__name__ == "UnionType":
        options = [a for a in args if a is not type(None)]
        return json_schema(options[0]) if len(options) == 1 else {}
    if origin in (list, tuple, set, frozenset):
        return {"type": "array", "items": json_schema(args[0])} if args else {"type": "array"}
    if origin is dict or annotation is dict:
        return {"type": "object"}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {"enum": [member.value for member in annotation]}
    if annotation is list:
        return {"type": "array"}
    return {}


def _docstring(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The summary and per-parameter descriptions (Google `Args:` or `:param x:` style)."""
    doc = inspect.getdoc(fn) or ""
    summary = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    params: dict[str, str] = {}
    for match in re.finditer(r":param\s+(\w+):\s*(.+)", doc):
        params[match.group(1)] = match.group(2).strip()
    section = re.search(r"^(?:Args|Arguments|Parameters):\s*\n((?:[ \t]+.+\n?)+)", doc, re.M)
    if section:
        for line in section.group(1).splitlines():
            found = re.match(r"\s+(\w+)(?:\s*\([^)]*\))?:\s*(.+)", line)
            if found:
                params[found.group(1)] = found.group(2).strip()
    return summary, params


class _Function:
    def __init__(self, fn: Callable[..., Any], name: str | None, description: str | None) -> None:
        self.fn = fn
        self.name = name or fn.__name__
        self.signature = inspect.signature(fn)
        hints = typing.get_type_hints(fn)
        summary, described = _docstring(fn)
        properties: dict[str, Any] = {}
        required = []
        for param in self.signature.parameters.values():
            if param.name in ("ctx", "context") and hints.get(param.name) is RequestContext:
                continue
            schema = json_schema(hints.get(param.name, Any))
            if param.name in described:
                schema["description"] = described[param.name]
            properties[param.name] = schema
            if param.default is inspect.Parameter.empty:
                required.append(param.name)
        self.wants_context = "ctx" in self.signature.parameters
        self.schema = ToolSchema(
            self.name,
            ToolKind.HTTP,
            description or summary,
            {"type": "object", "properties": properties, "required": required},
        )


class FunctionTools:
    """A `ToolExecutor` over Python functions.

    Async functions run on the event loop; plain ones run in a worker thread so
    they never block it. A parameter named ``ctx`` annotated ``RequestContext``
    receives the request's context and is left out of the schema.
    """

    def __init__(self, *functions: Callable[..., Any]) -> None:
        self._functions: dict[str, _Function] = {}
        for fn in functions:
            self.register(fn)

    def register(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Any:
        """Registers `fn`; usable as ``@tools.register`` or ``@tools.register(name=...)``."""

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            function = _Function(fn, name, description)
            self._functions[function.name] = function
            return fn

        return add(fn) if fn is not None else add

    def schemas(self) -> list[ToolSchema]:
        """The schemas of every registered function."""
        return [f.schema for f in self._functions.values()]

    @runs_without_task
    async def tools(self, ctx: RequestContext) -> list[ToolSchema]:
        return self.schemas()

    async def execute(
        self, tool_name: str, tool_call_id: str, arguments: Any, ctx: RequestContext
    ) -> Any:
        function = self._functions.get(tool_name)
        if function is None:
            raise ToolNotFound(tool_name)
        if not isinstance(arguments, dict) or "_invalid_arguments" in arguments:
            raise InvalidToolArguments(f"{tool_name}: arguments are not a JSON object")
        kwargs = dict(arguments)
        if function.wants_context:
            kwargs["ctx"] = ctx
        try:
            function.signature.bind(**kwargs)
        except TypeError as error:
            raise InvalidToolArguments(f"{tool_name}: {error}") from error
        try:
            if inspect.iscoroutinefunction(function.fn):
                return await function.fn(**kwargs)
            return await asyncio.to_thread(function.fn, **kwargs)
        except ToolError:
            raise
        except Exception as error:
            raise ToolExecutionError(
                f"{tool_name} failed: {type(error).__name__}: {error}"
            ) from error
