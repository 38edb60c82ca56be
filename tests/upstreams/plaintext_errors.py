"""A 2025-11-25 MCP server that refuses what it does not expect with plain-text HTTP errors, as servers built on
Go's net/http do (`http.Error(w, "Bad Request: Missing session ID", 400)`): a POST without its session id, such
as the `server/discover` probe of a 2026-07-28 client, is a text/plain 400, not a JSON-RPC error.

    python tests/upstreams/plaintext_errors.py --port N        # http://127.0.0.1:N/mcp
    python tests/upstreams/plaintext_errors.py --port N --modern-only refuse|fail

Tools: echo(text). `--modern-only`: a 2026-07-28 server instead (`server/discover`, sessionless requests) that
answers `initialize` with a JSON-RPC "method not found" (`refuse`) or an HTTP 500 (`fail`).
"""

from __future__ import annotations

import argparse
import secrets

from aiohttp import web

SESSIONS: set[str] = set()


MODERN_ONLY: str | None = None


def _answer(request_id: object, message: dict[str, object], method: object, *, modern: bool) -> web.Response:
    complete: dict[str, object] = {"resultType": "complete"} if modern else {}
    if method == "tools/list":
        tool = {"name": "echo", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}}
        result: dict[str, object] = {"tools": [tool], **complete}
    elif method == "tools/call":
        params = message.get("params")
        arguments = params.get("arguments", {}) if isinstance(params, dict) else {}
        result = {"content": [{"type": "text", "text": str(arguments.get("text", ""))}], **complete}
    else:
        return web.json_response({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "no"}})
    return web.json_response({"jsonrpc": "2.0", "id": request_id, "result": result})


async def post(request: web.Request) -> web.Response:
    message = await request.json()
    method, request_id = message.get("method"), message.get("id")
    if MODERN_ONLY is not None:
        if method == "server/discover":
            info = {"io.modelcontextprotocol/serverInfo": {"name": "modern-only", "version": "1"}}
            found = {"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}, "resultType": "complete"}
            found["_meta"] = info
            return web.json_response({"jsonrpc": "2.0", "id": request_id, "result": found})
        if method == "initialize":
            if MODERN_ONLY == "fail":
                return web.Response(status=500, text="Internal Server Error")
            error = {"code": -32601, "message": "Method not found: initialize"}
            return web.json_response({"jsonrpc": "2.0", "id": request_id, "error": error})
        if request_id is None:
            return web.Response(status=202)
        return _answer(request_id, message, method, modern=True)
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
    return _answer(request_id, message, method, modern=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["http"], default="http")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--modern-only", choices=["refuse", "fail"], default=None)
    args = parser.parse_args()
    global MODERN_ONLY
    MODERN_ONLY = args.modern_only
    app = web.Application()
    app.router.add_post("/mcp", post)
    app.router.add_get("/mcp", lambda _request: web.Response(status=405, text="Method Not Allowed"))
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
