"""An MCP server over stdio, for the tests: `echo`, and `die`, which ends the
server's process in the middle of the call."""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

server = MCPServer("stdio-test")


@server.tool()
def echo(text: str) -> str:
    """Says `text` back."""
    return text


@server.tool()
def die() -> str:
    """Ends this server's process before answering."""
    os._exit(3)


if __name__ == "__main__":
    server.run("stdio")
