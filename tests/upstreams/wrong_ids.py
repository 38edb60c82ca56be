"""Kitchen over streamable HTTP, except that it answers a `tools/call` of its `wrong_id` tool with a reply
whose JSON-RPC id is an array (`[<the request's id>]`): an upstream that breaks the protocol, for the
gateway's fault tests. Every other request reaches kitchen unchanged.

    python tests/upstreams/wrong_ids.py --port 8125     # http://127.0.0.1:8125/mcp
"""

import json
import sys
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kitchen  # noqa: E402


def wrong_ids(app: Any) -> Any:
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if (
            isinstance(request, dict)
            and request.get("method") == "tools/call"
            and (request.get("params") or {}).get("name") == "wrong_id"
        ):
            reply = json.dumps(
                {"jsonrpc": "2.0", "id": [request.get("id")], "result": {"content": [{"type": "text", "text": "?"}]}}
            ).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(reply)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": reply})
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await app(scope, replay, send)

    return wrapped


def main() -> None:
    args, options = kitchen.parse_args([*sys.argv[1:], "--extra-tools", "wrong_id"])
    app = kitchen.build_server(options).streamable_http_app()
    uvicorn.run(wrong_ids(app), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
