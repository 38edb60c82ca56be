"""An upstream whose tool list depends on who asks, as Zapier's or Pipedream's MCP servers list each user's own
actions, or a multi-tenant server a `forwarded` tenant header's tenant's tools (a raw 2025-11-25 JSON-RPC server
over streamable HTTP, one JSON body per request, no session ids: fast to start, every request visible).

    python tests/upstreams/per_caller.py --port 8123         # http://127.0.0.1:8123/mcp (any path under /mcp)

The caller is the request's `X-Tenant` header, else its `Authorization` bearer, else `anyone`. `tools/list`
answers `common` and `own_<caller>` (caller cut to letters, digits, `-` and `_`), and each list request is
counted per (path after /mcp, caller); `tools/call` answers "<tool> for <caller>" for those two tools only, and
an unknown tool error for any other (another caller's). `resources/list` answers `tenant://<caller>/notes`;
`resources/subscribe` is counted as "subscribe <path> <caller> <uri>". `GET /counts` answers the counts:
{"<path> <caller>": n, ...}.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from typing import Any

from aiohttp import web

COUNTS: Counter[str] = Counter()


def caller_of(request: web.Request) -> str:
    tenant = request.headers.get("X-Tenant")
    if tenant:
        return tenant
    auth = request.headers.get("Authorization", "")
    return auth[len("Bearer ") :] if auth.startswith("Bearer ") else "anyone"


def tools_of(caller: str) -> list[dict[str, Any]]:
    own = "own_" + re.sub(r"[^A-Za-z0-9_-]", "_", caller)[:40]
    schema = {"type": "object", "properties": {}}
    return [
        {"name": "common", "description": "the same for everyone", "inputSchema": schema},
        {"name": own, "description": f"{caller}'s own action", "inputSchema": schema},
    ]


def answer(request: web.Request, message: dict[str, Any]) -> dict[str, Any] | None:
    method = message.get("method")
    if "id" not in message:
        return None  # a notification
    rid = message["id"]
    caller = caller_of(request)
    if method == "initialize":
        result: dict[str, Any] = {
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {"listChanged": True}, "resources": {"subscribe": True}},
            "serverInfo": {"name": "per-caller", "version": "1"},
        }
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        COUNTS[f"{request.path.removeprefix('/mcp')} {caller}"] += 1
        result = {"tools": tools_of(caller)}
    elif method == "resources/list":
        result = {"resources": [{"uri": f"tenant://{caller}/notes", "name": f"{caller}'s notes"}]}
    elif method == "resources/templates/list":
        result = {"resourceTemplates": []}
    elif method in ("resources/subscribe", "resources/unsubscribe"):
        uri = (message.get("params") or {}).get("uri")
        COUNTS[f"{method.split('/')[1]} {request.path.removeprefix('/mcp')} {caller} {uri}"] += 1
        result = {}
    elif method == "tools/call":
        name = (message.get("params") or {}).get("name")
        if name not in {t["name"] for t in tools_of(caller)}:
            return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": f"Unknown tool: {name}"}}
        result = {"content": [{"type": "text", "text": f"{name} for {caller}"}]}
    else:
        return {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"Method not found: {method}"}}
    return {"jsonrpc": "2.0", "id": rid, "result": result}


async def mcp(request: web.Request) -> web.StreamResponse:
    if request.method != "POST":
        return web.Response(status=405)
    message = await request.json()
    reply = answer(request, message)
    if reply is None:
        return web.Response(status=202)
    return web.json_response(reply)


async def counts(request: web.Request) -> web.Response:
    return web.json_response(dict(COUNTS))


def main() -> None:
    parser = argparse.ArgumentParser(description="An upstream whose tool list depends on who asks.")
    parser.add_argument("--transport", choices=["http"], default="http")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_get("/counts", counts)
    app.router.add_route("*", "/mcp", mcp)
    app.router.add_route("*", "/mcp/{rest:.*}", mcp)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
