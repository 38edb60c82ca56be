"""A small real MCP server (mcp 2.3.0 `MCPServer`) for the upstream-client tests.

Run: python upstream_min.py --transport stdio|http|sse [--port N]
Tools: echo, add, slow, progress, sample, headers, trace, env, pid, add_tool.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os

import mcp_types as types
from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer("upstream-min")


@mcp.tool()
def echo(text: str) -> str:
    return text


@mcp.tool()
def add(a: int, b: int) -> int:
    return a + b


@mcp.tool()
async def slow(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


@mcp.tool()
async def progress(steps: int, ctx: Context) -> str:
    for i in range(steps):
        await ctx.report_progress(i + 1, steps, f"step {i + 1}")
    return f"{steps} steps"


@mcp.tool()
async def sample(prompt: str, ctx: Context) -> str:
    result = await ctx.session.create_message(
        [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=prompt))],
        max_tokens=10,
        related_request_id=ctx.request_id,
    )
    content = result.content
    return f"sampled: {getattr(content, 'text', content)}"


@mcp.tool()
def headers(ctx: Context) -> str:
    """The HTTP request headers this call arrived with (empty on stdio)."""
    return json.dumps(dict(ctx.headers or {}))


@mcp.tool()
def trace(ctx: Context) -> str:
    """The W3C trace context this call arrived with: {"header": traceparent header, "meta": _meta.traceparent}."""
    meta = ctx.request_context.meta
    fields = meta if isinstance(meta, dict) else (meta.model_dump() if meta is not None else {})
    return json.dumps({"header": (ctx.headers or {}).get("traceparent"), "meta": fields.get("traceparent")})


@mcp.tool()
def env(name: str) -> str:
    """One environment variable of this process ('' when unset)."""
    return os.environ.get(name, "")


@mcp.tool()
def pid() -> int:
    return os.getpid()


@mcp.tool()
async def add_tool(name: str, ctx: Context) -> str:
    mcp.add_tool(lambda: name, name=name, description=f"added at runtime: {name}")
    await ctx.notify_tools_changed()  # 2026-07-28: subscriptions/listen streams
    if ctx.protocol_version and ctx.protocol_version < "2026":
        await ctx.session.send_tool_list_changed()  # handshake era: the standalone GET stream / stdio
    return f"added {name}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["stdio", "http", "sse"], default="stdio")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tag", default="")  # lets a test find its own processes
    args = parser.parse_args()
    if args.transport == "stdio":
        mcp.run("stdio")
    elif args.transport == "http":
        mcp.run("streamable-http", host="127.0.0.1", port=args.port)
    else:
        mcp.run("sse", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
