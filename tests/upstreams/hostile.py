"""Hostile: a real MCP upstream (mcp 2.3.0 `MCPServer`) whose every word is markup, for the web-security tests
(tests/browser/test_websec_pages.py): an upstream is anyone's server, and its tool names, titles, descriptions,
annotations and input schemas reach the console and the person's pages.

Run: python tests/upstreams/hostile.py [--transport stdio|http] [--port N]
Each payload, if ever rendered as markup, adds an element with id `pwned` (a test looks for it in the DOM).
"""

from __future__ import annotations

import argparse
from typing import Annotated

import mcp_types as types
from mcp.server.mcpserver import MCPServer
from pydantic import Field

MARK = '"><img id=pwned src=x><script>window.pwned=1</script><div hx-get="/admin" id=pwned2>'

mcp = MCPServer("hostile" + MARK, instructions="Instructions " + MARK)


def lookup(
    word: Annotated[str, Field(title="Word " + MARK, description="Field " + MARK, examples=[MARK])] = MARK,
) -> str:
    return word


mcp.add_tool(
    lookup,
    name="lookup",
    title="Title " + MARK,
    description="Description " + MARK,
    annotations=types.ToolAnnotations(title="Annotation " + MARK, read_only_hint=True),
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.transport == "stdio":
        mcp.run("stdio")
    else:
        mcp.run("streamable-http", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
