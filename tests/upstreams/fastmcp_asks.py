"""A FastMCP 4.1.2 upstream whose tools ask the client things (elicitation, sampling, roots), as most Python
servers that ask are written. FastMCP makes such requests only on 2025-11-25-era connections: on a 2026-07-28
one `ctx.elicit` fails ("unavailable on 2026-07-28 connections"), so a gateway that spoke only that era to it
broke these tools for every client.

    python tests/upstreams/fastmcp_asks.py [--transport http] --port N      # http://127.0.0.1:N/mcp

Tools: ask_name() → "hello <name>" (form elicitation), sample(prompt) → the model's text, roots() → the
client's root URIs, one a line; late_sample(prompt, delay) waits `delay` seconds ignoring cancellation (as
many servers do) and then asks sampling (FastMCP sends it on its GET stream, naming no call); slow(seconds).

`--refuse-initialize HEADER=VALUE`: an `initialize` carrying that header value is answered with a plain-text
HTTP 400, as a server rejecting a malformed credential header may.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio
import mcp_types
import uvicorn
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


@mcp.tool
async def late_sample(prompt: str, delay: float, ctx: Context) -> str:
    """Wait (not cancellable), then ask the client's model."""
    with anyio.CancelScope(shield=True):
        await anyio.sleep(delay)
        message = mcp_types.SamplingMessage(role="user", content=mcp_types.TextContent(type="text", text=prompt))
        try:
            result = await ctx.session.create_message(messages=[message], max_tokens=20)
        except Exception as exc:  # noqa: BLE001 — the tool says what became of its question
            return f"sampling failed: {exc}"
        return result.content.text if isinstance(result.content, mcp_types.TextContent) else str(result.content)


@mcp.tool
async def slow(seconds: float) -> str:
    """Take a while."""
    await anyio.sleep(seconds)
    return "slept"


def refusing_initialize(app: Any, header: bytes, value: bytes) -> Any:
    async def gate(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or dict(scope["headers"]).get(header) != value:
            return await app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if b'"initialize"' in body:
            await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"malformed " + header})
            return None
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await app(scope, replay, send)

    return gate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["http"], default="http")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--refuse-initialize", metavar="HEADER=VALUE")
    args = parser.parse_args()
    if not args.refuse_initialize:
        mcp.run(transport="http", host="127.0.0.1", port=args.port, show_banner=False, log_level="warning")
        return
    header, _, value = args.refuse_initialize.partition("=")
    uvicorn.run(refusing_initialize(mcp.http_app(path="/mcp"), header.lower().encode(), value.encode()),
                host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
