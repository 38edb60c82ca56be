"""A FastMCP 4.1.2 upstream whose tools ask the client things (elicitation, sampling, roots), as most Python
servers that ask are written. FastMCP makes such requests only on 2025-11-25-era connections: on a 2026-07-28
one `ctx.elicit` fails ("unavailable on 2026-07-28 connections"), so a gateway that spoke only that era to it
broke these tools for every client.

    python tests/upstreams/fastmcp_asks.py [--transport http] --port N      # http://127.0.0.1:N/mcp

Tools: ask_name() → "hello <name>" (form elicitation), sample(prompt) → the model's text, roots() → the
client's root URIs, one a line.
"""

from __future__ import annotations

import argparse

import mcp_types
from fastmcp import Context, FastMCP

mcp = FastMCP("asks")


@mcp.tool
async def ask_name(ctx: Context) -> str:
    """Ask the user their name."""
    answer = await ctx.elicit("Your name?", str)
    return f"hello {answer.data}" if answer.action == "accept" else answer.action


@mcp.tool
async def sample(prompt: str, ctx: Context) -> str:
    """Ask the client's model."""
    message = mcp_types.SamplingMessage(role="user", content=mcp_types.TextContent(type="text", text=prompt))
    result = await ctx.session.create_message(messages=[message], max_tokens=20)
    return result.content.text if isinstance(result.content, mcp_types.TextContent) else str(result.content)


@mcp.tool
async def roots(ctx: Context) -> str:
    """The client's roots."""
    listed = await ctx.session.list_roots()
    return "\n".join(str(root.uri) for root in listed.roots)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["http"], default="http")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    mcp.run(transport="http", host="127.0.0.1", port=args.port, show_banner=False, log_level="warning")


if __name__ == "__main__":
    main()
