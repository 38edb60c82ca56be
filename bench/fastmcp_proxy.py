"""FastMCP 4.1.2's own proxy in front of one upstream, for bench/other_gateways.py: another Python MCP gateway.

`fastmcp.server.create_proxy(<upstream url>)` (4.1.2 has no `FastMCP.as_proxy`; `create_proxy` is the documented
way) with its defaults, served over streamable HTTP by its own `http_app()` under uvicorn, as
bench/fastmcp_upstream.py serves FastMCP:

    python bench/fastmcp_proxy.py --port 8124 --target http://127.0.0.1:8123/mcp   # http://127.0.0.1:8124/mcp

Defaults kept on purpose (what someone running FastMCP's proxy gets): a fresh backend client per request, its
protocol era mirroring the front connection's (a 2025-11-25 client is proxied with a 2025-11-25 handshake, a
2026-07-28 one sessionless), and the front answering 2025-11-25 clients with SSE, 2026-07-28 ones with JSON.

`--shared-session`: the other strategy FastMCP documents, one backend `fastmcp.Client` connected once (in the
server's lifespan) and reused by every request (`FastMCPProxy(client_factory=lambda: client)`, what
`create_proxy(<a connected Client>)` does); its era is its own (`mode="auto"`), not the front's.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastmcp import Client
from fastmcp.server import create_proxy
from fastmcp.server.providers.proxy import FastMCPProxy


def shared_session_proxy(target: str, name: str) -> FastMCPProxy:
    client: Client[Any] = Client(target)

    @asynccontextmanager
    async def lifespan(_server: Any) -> AsyncIterator[dict[str, Any]]:
        async with client:
            yield {}

    return FastMCPProxy(client_factory=lambda: client, name=name, lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--target", required=True, help="the upstream's streamable HTTP URL")
    parser.add_argument("--name", default="fastmcp-proxy")
    parser.add_argument("--shared-session", action="store_true",
                        help="one backend client connected once and reused, instead of one per request")
    args = parser.parse_args(argv)
    proxy = shared_session_proxy(args.target, args.name) if args.shared_session else create_proxy(args.target,
                                                                                                    name=args.name)
    app = proxy.http_app(path="/mcp")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
