"""A FastMCP 4.1.2 upstream for the benchmarks: what most Python MCP servers in the wild are written with.

Beside bench/fast_upstream.py (the SDK's low-level `Server`, JSON replies, uvloop) this is the common case:
`FastMCP` with `@tool` functions, served by its own `http_app()` with FastMCP's defaults (SSE replies to
2025-11-25 clients, JSON to 2026-07-28 ones; structured output wrapped as `{"result": ...}`).

    python bench/fastmcp_upstream.py --port 8123 --tools 50 --name up3   # http://127.0.0.1:8123/mcp

Tools: `noop` (returns an empty string) and `tool_01` ... `tool_NN` padding the list to --tools tools.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastmcp import FastMCP


def build_server(name: str, tool_count: int) -> FastMCP:
    server = FastMCP(name)

    @server.tool
    def noop() -> str:
        """Do nothing (latency measurements)."""
        return ""

    for i in range(1, tool_count):
        tool_name = f"tool_{i:02d}"

        def padding(tool_name: str = tool_name) -> str:
            return tool_name

        server.tool(padding, name=tool_name, description=f"Trivial padding tool {i} of {name}.")
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tools", type=int, default=1, help="how many tools to list (noop included)")
    parser.add_argument("--name", default="fastmcp-upstream")
    args = parser.parse_args(argv)
    app = build_server(args.name, max(1, args.tools)).http_app(path="/mcp")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
