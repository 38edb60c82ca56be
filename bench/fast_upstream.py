"""A minimal, fast MCP upstream for the benchmarks: mcp 2.3.0's low-level `Server` over streamable HTTP.

The gateway's overhead is measured against this server's own cost, so it should be as small and
steady as the SDK allows: no FastMCP/MCPServer layers, JSON responses (no SSE framing), uvloop and
httptools. It serves both protocol eras, as the SDK's `Server` does.

    python bench/fast_upstream.py --port 8123 --tools 50 --name up3   # http://127.0.0.1:8123/mcp

Tools: `noop` (returns an empty text) and `tool_01` ... `tool_NN` padding the list to --tools tools
(each returns its own name), all with an empty-object input schema.
"""

from __future__ import annotations

import argparse

import mcp_types as types
import uvicorn
from mcp.server.lowlevel.server import Server

EMPTY_SCHEMA = {"type": "object", "properties": {}}


def build_server(name: str, tool_count: int) -> Server:
    tools = [types.Tool(name="noop", description="Do nothing (latency measurements).", input_schema=EMPTY_SCHEMA)]
    tools += [
        types.Tool(name=f"tool_{i:02d}", description=f"Trivial padding tool {i} of {name}.", input_schema=EMPTY_SCHEMA)
        for i in range(1, tool_count)
    ]
    listing = types.ListToolsResult(tools=tools)
    names = {tool.name for tool in tools}

    async def list_tools(ctx, params) -> types.ListToolsResult:  # noqa: ANN001 - SDK handler signature
        return listing

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:  # noqa: ANN001
        if params.name not in names:
            return types.CallToolResult(content=[types.TextContent(type="text", text=f"unknown tool {params.name}")],
                                        is_error=True)
        text = "" if params.name == "noop" else params.name
        return types.CallToolResult(content=[types.TextContent(type="text", text=text)])

    return Server(name, version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tools", type=int, default=1, help="how many tools to list (noop included)")
    parser.add_argument("--name", default="fast-upstream")
    parser.add_argument("--transport", choices=["http"], default="http")  # what tests/upstreams/launch.py passes
    parser.add_argument("--no-otel", action="store_true",
                        help="without the SDK's OpenTelemetryMiddleware (it reads every request's _meta.traceparent)")
    args = parser.parse_args(argv)
    server = build_server(args.name, max(1, args.tools))
    if args.no_otel:
        server.middleware = []  # mcp 2.3.0 ships [OpenTelemetryMiddleware()] here, on by default
    app = server.streamable_http_app(json_response=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", loop="uvloop", http="httptools",
                access_log=False)


if __name__ == "__main__":
    main()
