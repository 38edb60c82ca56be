"""A 2025-11-25 MCP server that refuses what it does not expect with plain-text HTTP errors, as servers built on
Go's net/http do (`http.Error(w, "Bad Request: Missing session ID", 400)`): a POST without its session id, such
as the `server/discover` probe of a 2026-07-28 client, is a text/plain 400, not a JSON-RPC error.

    python tests/upstreams/plaintext_errors.py --port N        # http://127.0.0.1:N/mcp

Tools: echo(text).
"""

from __future__ import annotations

import argparse
import secrets

from aiohttp import web

SESSIONS: set[str] = set()


async def post(request: web.Request) -> web.Response:
    message = await request.json()
    method, request_id = message.get("method"), message.get("id")
    if method == "initialize":
        session_id = secrets.token_hex(8)
        SESSIONS.add(session_id)
        hello = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "plain"}}
        return web.json_response(
            {"jsonrpc": "2.0", "id": request_id, "result": hello}, headers={"Mcp-Session-Id": session_id}
        )
    if request.headers.get("Mcp-Session-Id") not in SESSIONS:
        return web.Response(status=400, text="Bad Request: Missing session ID")
    if request_id is None:
        return web.Response(status=202)
    if method == "tools/list":
        tool = {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}
        result: dict[str, object] = {"tools": [tool]}
    elif method == "tools/call":
        text = str((message.get("params") or {}).get("arguments", {}).get("text", ""))
        result = {"content": [{"type": "text", "text": text}]}
    else:
        return web.json_response({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "no"}})
    return web.json_response({"jsonrpc": "2.0", "id": request_id, "result": result})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["http"], default="http")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/mcp", post)
    app.router.add_get("/mcp", lambda _request: web.Response(status=405, text="Method Not Allowed"))
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
