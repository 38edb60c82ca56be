"""Many fast MCP upstreams in ONE process, for the scale benchmarks (bench/scale_tools.py).

Each upstream is mcp 2.3.0's low-level `Server` (like bench/fast_upstream.py: JSON replies, uvloop,
httptools) on its own port, so the gateway sees `--count` separate upstreams while the machine runs one
Python process instead of fifty:

    python bench/many_tools_upstream.py --ports 8201,8202,8203 --tools 200
    # http://127.0.0.1:8201/mcp ... each listing 200 tools

Tools of upstream `uNN`: `noop`, `add_tool` and `uNN_tool_003` ... padding the list to --tools tools, each
with a small input schema (one string property), so a listing is about the size of a real one.

`POST /static-list` answers every request with the same bytes: a JSON-RPC tools/list result (id 1) of this
upstream's tools as they were at start, serialised once. It is the same-size reference that costs nothing to
produce: what the transport and the client cost for an answer of that size (the SDK's own tools/list validates
and serialises every tool on every call, which costs far more than the gateway's cached answer).

`add_tool` (no arguments) adds one more tool to THAT upstream, then announces `notifications/tools/list_changed`
to its `subscriptions/listen` streams (2026-07-28, what the gateway holds) and its handshake-era connections,
and answers `{"name": <the new tool>, "announced_at": <time.monotonic() just before announcing>}`.
CLOCK_MONOTONIC is one clock for every process of the machine, so the caller can time the gateway's
catalog rebuild from the moment the announcement left.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
import weakref
from collections.abc import Generator
from typing import Any

import mcp_types as types
import uvicorn
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp.shared.subscriptions import ToolsListChanged
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
SMALL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string", "description": "Any text; ignored."}},
}


def static_list_route(listing: types.ListToolsResult) -> Route:
    payload = json.dumps({"jsonrpc": "2.0", "id": 1,
                          "result": listing.model_dump(mode="json", by_alias=True, exclude_none=True)}).encode()

    async def static_list(request: Request) -> Response:
        await request.body()
        return Response(payload, media_type="application/json")

    return Route("/static-list", static_list, methods=["POST"])


def build_server(name: str, tool_count: int) -> tuple[Server, types.ListToolsResult]:
    """The upstream, and its tool list as it is at start."""
    bus = InMemorySubscriptionBus()
    handshake: weakref.WeakValueDictionary[int, ServerSession] = weakref.WeakValueDictionary()
    tools = [
        types.Tool(name="noop", description="Do nothing (latency measurements).", input_schema=EMPTY_SCHEMA),
        types.Tool(name="add_tool", description="Add a tool and announce list_changed.", input_schema=EMPTY_SCHEMA),
    ]
    tools += [
        types.Tool(name=f"{name}_tool_{i:03d}", description=f"Padding tool {i} of upstream {name}.",
                   input_schema=SMALL_SCHEMA)
        for i in range(len(tools) + 1, tool_count + 1)
    ]
    state = {"listing": types.ListToolsResult(tools=list(tools)), "names": {t.name for t in tools}}

    def text(value: str, error: bool = False) -> types.CallToolResult:
        return types.CallToolResult(content=[types.TextContent(type="text", text=value)], is_error=error)

    async def list_tools(ctx, params) -> types.ListToolsResult:  # noqa: ANN001 - SDK handler signature
        if not str(getattr(ctx.session, "protocol_version", "")).startswith("2026"):
            handshake[id(ctx.session)] = ctx.session
        return state["listing"]

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:  # noqa: ANN001
        if params.name == "add_tool":
            tools.append(types.Tool(name=f"{name}_added_{len(tools) + 1:05d}", description="Added at run time.",
                                    input_schema=EMPTY_SCHEMA))
            state["listing"] = types.ListToolsResult(tools=list(tools))
            state["names"] = {t.name for t in tools}
            announced_at = time.monotonic()
            await bus.publish(ToolsListChanged())
            for session in list(handshake.values()):
                try:
                    await session.send_tool_list_changed()
                except Exception:  # noqa: BLE001 - a connection that went away is not this call's failure
                    pass
            return text(json.dumps({"name": tools[-1].name, "announced_at": announced_at}))
        if params.name not in state["names"]:
            return text(f"unknown tool {params.name}", error=True)
        return text("" if params.name == "noop" else params.name)

    server = Server(name, version="1.0.0", on_list_tools=list_tools, on_call_tool=call_tool,
                    on_subscriptions_listen=ListenHandler(bus))
    default_options = server.create_initialization_options
    server.create_initialization_options = lambda *a, **k: default_options(  # type: ignore[method-assign]
        NotificationOptions(tools_changed=True)
    )
    return server, state["listing"]


class _Server(uvicorn.Server):
    """One of many servers in this process: SIGTERM/SIGINT are handled once for all of them (in `serve`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(ports: list[int], tool_count: int) -> None:
    servers: list[uvicorn.Server] = []
    for index, port in enumerate(ports):
        server, listing = build_server(f"u{index + 1:02d}", tool_count)
        app = server.streamable_http_app(json_response=True, custom_starlette_routes=[static_list_route(listing)])
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", loop="none",
                                http="httptools", access_log=False, lifespan="on")
        servers.append(_Server(config))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: [setattr(s, "should_exit", True) for s in servers])
    await asyncio.gather(*(s.serve() for s in servers))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--ports", required=True, help="comma-separated ports, one upstream each")
    parser.add_argument("--tools", type=int, default=200, help="tools each upstream lists (noop and add_tool included)")
    args = parser.parse_args(argv)
    import uvloop

    uvloop.run(serve([int(p) for p in args.ports.split(",")], max(2, args.tools)))


if __name__ == "__main__":
    main()
