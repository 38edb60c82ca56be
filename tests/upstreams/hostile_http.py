"""Hostile over the wire: a raw streamable-HTTP MCP upstream (2025-11-25, asyncio sockets, no SDK) that answers
`tools/call` in the ways a broken or malicious server can, chosen by the tool's name. For the gateway's
hostile-upstream tests (tests/integration/test_hostile_upstream.py): every one of them must fail only its own
call, with a message naming the upstream, in bounded memory and time.

    python tests/upstreams/hostile_http.py --port 8126     # http://127.0.0.1:8126/mcp

Tools (each `tools/call` by name; arguments are ignored):
  echo            a well-formed result (the control case)
  endless_json    200 application/json, Content-Length 1 TB, then JSON bytes as fast as the socket takes them
  endless_chunked 200 application/json, chunked, a JSON string that never ends
  hold            an event stream that sends one log message and then stays open (in flight, never answered)
  other_id        the reply carries the id of the request `hold` left in flight (another caller's)
  text_result     `result` is a string, not an object
  null_result     `result` is null
  text_error      `error` is a string, not an object
  no_result       the reply has neither `result` nor `error`
  ping_flood      an event stream of 50,000 `ping` requests, then the reply
  replies         how many replies (to its pings) the server has received so far, as text
"""

from __future__ import annotations

import argparse
import asyncio
import json

SERVER_INFO = {"name": "hostile-http", "version": "1"}
TOOLS = [
    "echo", "endless_json", "endless_chunked", "hold", "other_id", "text_result", "null_result", "text_error",
    "no_result", "ping_flood", "replies"
]  # fmt: skip
MEGABYTE = b"A" * (1024 * 1024)
held_ids: list[object] = []
replies_received = 0


def reply(request_id: object, result: object) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()


def json_response(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def answer_call(name: str, request_id: object, writer: asyncio.StreamWriter) -> bool:
    """Write the answer to one tools/call; False when the connection must close afterwards."""
    if name == "echo":
        writer.write(json_response(reply(request_id, {"content": [{"type": "text", "text": "fine"}]})))
    elif name == "endless_json":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n")
        writer.write(b'{"jsonrpc":"2.0","id":%d,"result":{"content":[{"type":"text","text":"' % request_id)
        while True:
            writer.write(MEGABYTE)
            await writer.drain()
    elif name == "endless_chunked":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(chunk(b'{"jsonrpc":"2.0","id":%d,"result":{"content":[{"type":"text","text":"' % request_id))
        while True:
            writer.write(chunk(MEGABYTE))
            await writer.drain()
    elif name == "hold":
        held_ids.append(request_id)
        log = {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "holding"}}
        writer.write(SSE_HEAD + chunk(b"data: " + json.dumps(log).encode() + b"\n\n"))
        await writer.drain()
        await asyncio.Event().wait()  # until the client goes away (the task is cancelled with the connection)
    elif name == "other_id":
        victim = held_ids[-1] if held_ids else 424242
        text = {"content": [{"type": "text", "text": "meant for someone else"}]}
        writer.write(json_response(reply(victim, text)))
    elif name == "replies":
        writer.write(json_response(reply(request_id, {"content": [{"type": "text", "text": str(replies_received)}]})))
    elif name == "text_result":
        writer.write(json_response(reply(request_id, "just a string")))
    elif name == "null_result":
        writer.write(json_response(reply(request_id, None)))
    elif name == "text_error":
        writer.write(json_response(json.dumps({"jsonrpc": "2.0", "id": request_id, "error": "boom"}).encode()))
    elif name == "no_result":
        writer.write(json_response(json.dumps({"jsonrpc": "2.0", "id": request_id}).encode()))
    elif name == "ping_flood":
        writer.write(SSE_HEAD)
        batch = b"".join(b'data: {"jsonrpc":"2.0","id":"p%d","method":"ping"}\n\n' % n for n in range(1000))
        for _ in range(50):
            writer.write(chunk(batch))
            await writer.drain()
        final = b"data: " + reply(request_id, {"content": [{"type": "text", "text": "after the flood"}]}) + b"\n\n"
        writer.write(chunk(final) + b"0\r\n\r\n")
    else:
        error = {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": f"unknown tool {name}"}}
        writer.write(json_response(json.dumps(error).encode()))
    await writer.drain()
    return True


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    global replies_received
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            method = head.split(" ", 1)[0]
            length = 0
            for line in head.split("\r\n")[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if method != "POST":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                continue
            message = json.loads(body)
            if isinstance(message, dict) and "id" in message and "method" not in message:
                replies_received += 1
            if not isinstance(message, dict) or "method" not in message or "id" not in message:
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                continue
            request_id, rpc = message["id"], message.get("method")
            if rpc == "initialize":
                result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": SERVER_INFO}
                writer.write(json_response(reply(request_id, result), extra="Mcp-Session-Id: hostile-1\r\n"))
            elif rpc == "tools/list":
                tools = [{"name": n, "inputSchema": {"type": "object"}} for n in TOOLS]
                writer.write(json_response(reply(request_id, {"tools": tools})))
            elif rpc == "tools/call":
                if not await answer_call(str((message.get("params") or {}).get("name")), request_id, writer):
                    break
            else:
                error = {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "Method not found"}}
                writer.write(json_response(json.dumps(error).encode()))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["http"], default="http")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
