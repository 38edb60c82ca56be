"""Hostile over the wire: a raw streamable-HTTP MCP upstream (2025-11-25, asyncio sockets, no SDK) that answers
`tools/call` in the ways a broken or malicious server can, chosen by the tool's name. For the gateway's
hostile-upstream tests (tests/integration/test_hostile_upstream.py): every one of them must fail only its own
call, with a message naming the upstream, in bounded memory and time.

    python tests/upstreams/hostile_http.py --port 8126                    # http://127.0.0.1:8126/mcp
    python tests/upstreams/hostile_http.py --transport sse --port 8126    # http://127.0.0.1:8126/sse (2024-11-05)

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
  endless_ack     sends one `ping` first, and answers the POST carrying the gateway's reply to it with an endless
                  body (Content-Length 1 TB); then the call's own reply
  list_changed_flood  an event stream of 5,000 `notifications/tools/list_changed`, then the reply
  odd_method      an event stream with a notification and a request whose `method` is an array, then the reply
  prompts_changed one `notifications/prompts/list_changed` on an event stream, then the reply
  endless_head    a response head that never ends: header after header (or one endless header value)
  bad_head        a response head that is not HTTP (a header line without a colon)
  log_flood       an event stream of 50,000 `notifications/message` (logging) about the call, then the reply
  bad_content     a result whose `content` is a string, not a list
  bad_item        a result whose content item is a text item with a number for its text
  bare_item       a result whose content item is a bare string
  bad_structured  a result whose `structuredContent` is a string
  unknown_item    a result whose content item is of a type MCP does not define
  odd_items       a valid result with unusual items: nulls for optional fields, a resource link, an embedded
                  resource
  abandoned       how many such endless bodies the gateway stopped reading (closed the connection), as text
  headers_error   a JSON-RPC error whose message and data echo the request's head (its headers), as a server
                  in debug mode does
  headers_failed  a tool result with isError whose text echoes the request's head (an SDK's handler exception)

Prompts good_prompt, bad_role (a message whose role is "system") and bare_message (content a bare string);
resources hostile://good and hostile://empty (contents with neither text nor blob).

Over `--transport sse` (the deprecated HTTP+SSE transport) only echo, endless_ack, abandoned and replies exist.
"""

from __future__ import annotations

import argparse
import asyncio
import json

SERVER_INFO = {"name": "hostile-http", "version": "1"}
TOOLS = [
    "echo", "endless_json", "endless_chunked", "hold", "other_id", "text_result", "null_result", "text_error",
    "no_result", "ping_flood", "replies", "endless_ack", "abandoned",
    "list_changed_flood", "odd_method", "prompts_changed", "endless_head", "endless_header", "bad_head", "log_flood",
    "bad_content",
    "bad_item", "bare_item", "bad_structured", "unknown_item", "odd_items", "headers_error",
    "headers_failed",
]  # fmt: skip
MEGABYTE = b"A" * (1024 * 1024)
held_ids: list[object] = []
EXTRA_TOOLS = 0  # --extra-tools: this many more tools in tools/list (named many_0, many_1, ...)
EXTRA_DESCRIPTION = 0  # --description-bytes: each of them with a description this long
GARBLED_HELLO = False  # --garbled-hello: initialize and server/discover answer with fields of the wrong types
REFUSED_HELLO = False  # --refused-hello: initialize answers an error echoing the request's head
GARBLED_TOOLS = False  # --garbled-tools: tools/list also lists tools whose fields have the wrong types (or are
# missing, or no tool at all) and two odd but valid ones: an empty name and a 5,000-character name
replies_received = 0
abandoned = 0
SLOW_ACK_PING = b'{"jsonrpc":"2.0","id":"slow-ack","method":"ping"}'
sse_out: asyncio.StreamWriter | None = None  # the one event stream of --transport sse


# Prompts and resources, each a good one and malformed ones (a message whose role is "system", a message whose
# content is a bare string; resource contents with neither text nor blob).
PROMPT_MESSAGES = {
    "good_prompt": [{"role": "user", "content": {"type": "text", "text": "fine", "annotations": None}}],
    "bad_role": [{"role": "system", "content": {"type": "text", "text": "x"}}],
    "bare_message": [{"role": "user", "content": "x"}],
}
RESOURCE_CONTENTS = {
    "hostile://good": [{"uri": "hostile://good", "text": "fine", "mimeType": None}],
    "hostile://empty": [{"uri": "hostile://empty"}],
}
PROMPTS_AND_RESOURCES = {
    "prompts/list": lambda _: {
        "prompts": [
            {"name": name, "arguments": [{"name": "topic", "description": None, "required": None}], "icons": None}
            for name in PROMPT_MESSAGES
        ]
    },
    "prompts/get": lambda name: {"messages": PROMPT_MESSAGES.get(name, []), "description": None},
    "resources/list": lambda _: {"resources": [{"uri": uri, "name": uri[10:]} for uri in RESOURCE_CONTENTS]},
    "resources/templates/list": lambda _: {"resourceTemplates": []},
    "resources/read": lambda uri: {"contents": RESOURCE_CONTENTS.get(uri, [])},
}


def reply(request_id: object, result: object) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()


def json_response(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def text(value: object) -> dict[str, object]:
    return {"content": [{"type": "text", "text": str(value)}]}


async def endless_body(writer: asyncio.StreamWriter) -> None:
    """An answer that never ends, until the client closes the connection (counted in `abandoned`)."""
    global abandoned
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n")
    try:
        while True:
            writer.write(MEGABYTE)
            await writer.drain()
    except ConnectionError:
        abandoned += 1
        raise


async def answer_call(name: str, request_id: object, writer: asyncio.StreamWriter, head: str = "") -> bool:
    """Write the answer to one tools/call; False when the connection must close afterwards."""
    if name == "echo":
        writer.write(json_response(reply(request_id, text("fine"))))
    elif name == "abandoned":
        writer.write(json_response(reply(request_id, text(abandoned))))
    elif name == "endless_ack":
        final = b"data: " + reply(request_id, text("pinged")) + b"\n\n"
        writer.write(SSE_HEAD + chunk(b"data: " + SLOW_ACK_PING + b"\n\n") + chunk(final) + b"0\r\n\r\n")
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
        meant = text("meant for someone else")
        writer.write(json_response(reply(victim, meant)))
    elif name == "replies":
        writer.write(json_response(reply(request_id, {"content": [{"type": "text", "text": str(replies_received)}]})))
    elif name == "list_changed_flood":
        change = b'data: {"jsonrpc":"2.0","method":"notifications/tools/list_changed"}\n\n'
        final = b"data: " + reply(request_id, text("flooded")) + b"\n\n"
        writer.write(SSE_HEAD + chunk(change * 5000) + chunk(final) + b"0\r\n\r\n")
    elif name == "odd_method":
        odd = b'data: {"jsonrpc":"2.0","method":["x"]}\n\ndata: {"jsonrpc":"2.0","id":"q","method":{"a":1}}\n\n'
        final = b"data: " + reply(request_id, text("odd")) + b"\n\n"
        writer.write(SSE_HEAD + chunk(odd) + chunk(final) + b"0\r\n\r\n")
    elif name == "prompts_changed":
        change = b'data: {"jsonrpc":"2.0","method":"notifications/prompts/list_changed"}\n\n'
        final = b"data: " + reply(request_id, text("changed")) + b"\n\n"
        writer.write(SSE_HEAD + chunk(change) + chunk(final) + b"0\r\n\r\n")
    elif name == "bad_head":
        writer.write(b"HTTP/1.1 200 OK\r\nContent Type: no colon, no HTTP\r\n\r\n{}")
        await writer.drain()
        return False
    elif name == "endless_head":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        n = 0
        while True:
            writer.write(b"".join(b"X-Filler-%d: %s\r\n" % (n + i, b"v" * 1000) for i in range(1000)))
            n += 1000
            await writer.drain()
    elif name == "endless_header":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Endless: ")
        while True:
            writer.write(MEGABYTE)
            await writer.drain()
    elif name == "log_flood":
        log = b'data: {"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}\n\n'
        writer.write(SSE_HEAD)
        for _ in range(50):
            writer.write(chunk(log * 1000))
            await writer.drain()
        final = b"data: " + reply(request_id, text("after the logs")) + b"\n\n"
        writer.write(chunk(final) + b"0\r\n\r\n")
    elif name == "bad_content":
        writer.write(json_response(reply(request_id, {"content": "x"})))
    elif name == "bad_item":
        writer.write(json_response(reply(request_id, {"content": [{"type": "text", "text": 5}]})))
    elif name == "bare_item":
        writer.write(json_response(reply(request_id, {"content": ["x"]})))
    elif name == "bad_structured":
        writer.write(json_response(reply(request_id, {"content": [], "structuredContent": "x"})))
    elif name == "unknown_item":
        writer.write(json_response(reply(request_id, {"content": [{"type": "widget", "anything": 1}]})))
    elif name == "odd_items":
        items = [
            {"type": "text", "text": "odd", "annotations": None, "_meta": None},
            {"type": "resource_link", "uri": "file:///a", "name": "a", "description": None},
            {"type": "resource", "resource": {"uri": "file:///b", "text": "b", "mimeType": None}},
        ]
        writer.write(json_response(reply(request_id, {"content": items, "structuredContent": None})))
    elif name == "text_result":
        writer.write(json_response(reply(request_id, "just a string")))
    elif name == "null_result":
        writer.write(json_response(reply(request_id, None)))
    elif name == "headers_error":
        error = {"code": -32000, "message": f"not allowed with {head!r}", "data": {"head": head.split("\r\n")}}
        writer.write(json_response(json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()))
    elif name == "headers_failed":
        failed = {"content": [{"type": "text", "text": f"handler failed: {head}"}], "isError": True}
        writer.write(json_response(reply(request_id, failed)))
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
            if method == "GET" and head.startswith("GET /sse"):
                await legacy_stream(writer)
                return
            if method != "POST":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                continue
            message = json.loads(body)
            if isinstance(message, dict) and "id" in message and "method" not in message:
                replies_received += 1
                if message["id"] == "slow-ack":
                    await endless_body(writer)
            if head.startswith("POST /messages"):
                await legacy_message(message, writer)
                continue
            if not isinstance(message, dict) or "method" not in message or "id" not in message:
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                continue
            request_id, rpc = message["id"], message.get("method")
            if rpc == "initialize" and REFUSED_HELLO:
                error = {"code": -32600, "message": f"who are you? {head}"}
                writer.write(json_response(json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()))
            elif rpc == "initialize":
                capabilities = {"tools": {}, "prompts": {}, "resources": {}}
                result = {"protocolVersion": "2025-11-25", "capabilities": capabilities, "serverInfo": SERVER_INFO}
                if GARBLED_HELLO:
                    result = {"protocolVersion": 7, "capabilities": [1], "serverInfo": "x", "instructions": 7}
                writer.write(json_response(reply(request_id, result), extra="Mcp-Session-Id: hostile-1\r\n"))
            elif rpc == "server/discover" and GARBLED_HELLO:
                result = {"supportedVersions": ["2026-07-28"], "capabilities": [1], "_meta": "x", "instructions": {}}
                writer.write(json_response(reply(request_id, result)))
            elif rpc == "tools/list":
                tools = [{"name": n, "inputSchema": {"type": "object"}} for n in TOOLS]
                tools += [
                    {"name": f"many_{i}", "description": "x" * EXTRA_DESCRIPTION, "inputSchema": {"type": "object"}}
                    for i in range(EXTRA_TOOLS)
                ]
                if GARBLED_TOOLS:
                    tools += [
                        {"name": 5, "inputSchema": {"type": "object"}},
                        {"inputSchema": {"type": "object"}},
                        {"name": "bad_schema", "inputSchema": "x", "description": 7, "title": [], "annotations": "y"},
                        {"name": "", "inputSchema": {"type": "object"}},
                        {"name": "x" * 5000, "inputSchema": {"type": "object"}},
                        {
                            "name": "nulls",
                            "inputSchema": {"type": "object", "properties": {"x": {"default": None}}},
                            "description": None,
                            "title": None,
                            "annotations": {"readOnlyHint": True, "title": None},
                        },
                        "not a tool",
                    ]
                writer.write(json_response(reply(request_id, {"tools": tools})))
            elif rpc == "tools/call":
                if not await answer_call(str((message.get("params") or {}).get("name")), request_id, writer, head):
                    break
            elif rpc in PROMPTS_AND_RESOURCES:
                params = message.get("params") or {}
                result = PROMPTS_AND_RESOURCES[rpc](params.get("name") or params.get("uri"))
                writer.write(json_response(reply(request_id, result)))
            else:
                error = {"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "Method not found"}}
                writer.write(json_response(json.dumps(error).encode()))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def legacy_stream(writer: asyncio.StreamWriter) -> None:
    """GET /sse: the one event stream of the deprecated transport; its first event names where to POST."""
    global sse_out
    sse_out = writer
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nevent: endpoint\ndata: /messages\n\n")
    await writer.drain()
    await asyncio.Event().wait()


def event(message: bytes) -> bytes:
    return b"event: message\ndata: " + message + b"\n\n"


async def legacy_message(message: object, writer: asyncio.StreamWriter) -> None:
    """POST /messages: accepted at once; the answer goes on the event stream."""
    writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    if not isinstance(message, dict) or "method" not in message or "id" not in message or sse_out is None:
        return
    request_id, rpc, name = message["id"], message["method"], (message.get("params") or {}).get("name")
    if rpc == "initialize":
        result = {"protocolVersion": "2024-11-05", "capabilities": {"tools": {}}, "serverInfo": SERVER_INFO}
        sse_out.write(event(reply(request_id, result)))
    elif rpc == "tools/list":
        sse_out.write(
            event(reply(request_id, {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in TOOLS]}))
        )
    elif rpc == "tools/call" and name == "endless_ack":
        sse_out.write(event(SLOW_ACK_PING) + event(reply(request_id, text("pinged"))))
    elif rpc == "tools/call" and name in ("echo", "abandoned", "replies"):
        value = {"echo": "fine", "abandoned": abandoned, "replies": replies_received}[name]
        sse_out.write(event(reply(request_id, text(value))))
    else:
        sse_out.write(
            event(json.dumps({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": "no"}}).encode())
        )
    await sse_out.drain()


async def serve(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["http", "sse"], default="http")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--extra-tools", type=int, default=0)
    parser.add_argument("--description-bytes", type=int, default=0)
    parser.add_argument("--garbled-hello", action="store_true")
    parser.add_argument("--garbled-tools", action="store_true")
    parser.add_argument("--refused-hello", action="store_true")
    args = parser.parse_args()
    global EXTRA_TOOLS, EXTRA_DESCRIPTION, GARBLED_HELLO, GARBLED_TOOLS, REFUSED_HELLO
    GARBLED_TOOLS, REFUSED_HELLO = args.garbled_tools, args.refused_hello
    EXTRA_TOOLS, EXTRA_DESCRIPTION, GARBLED_HELLO = args.extra_tools, args.description_bytes, args.garbled_hello
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
