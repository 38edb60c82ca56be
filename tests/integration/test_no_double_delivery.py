"""A tools/call reaches an upstream at most once (issue 9, defect 5).

The upstream here is a small MCP server (2025-11-25, no session id) on a real socket, run by the test,
that records every tools/call it reads ("receipts") and can misbehave the ways real servers do:
- read a whole request, then close the connection without answering: the request may have been acted on,
  so it must never be sent again; the call fails with an error naming the upstream, the next call works;
- close every kept-alive connection right after answering (a server with a zero keep-alive): the next
  request must not go out on the dead connection, nor be lost; it is sent once, on a new one;
- not listen at all for a while (restarting): connecting is refused, nothing was delivered, and calls work
  again once it is back.
Each runs through the upstream pool with the lean HTTP client (the default for http:// upstreams) and with
aiohttp (`MANIFOLD_LEAN_HTTP=0`), and the first one also through a real gateway process and over stdio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest

from manifold.config.models import UpstreamConfig
from manifold.upstream.base import UpstreamError
from manifold.upstream.http import LEAN_HTTP_ENV
from manifold.upstream.pool import UpstreamPool
from tests.e2e.harness import run_gateway
from tests.upstreams.launch import free_port

pytestmark = pytest.mark.anyio

VERSION = "2025-11-25"
CLIENTS = ["lean", "aiohttp"]


@dataclass
class FaultyUpstream:
    """`drop`: tools/call texts answered by closing the connection once the whole request was read.
    `close_after_reply`: close each connection right after a reply (no `Connection: close` said)."""

    drop: set[str] = field(default_factory=set)
    close_after_reply: bool = False
    receipts: list[str] = field(default_factory=list)
    connections: int = 0
    port: int = 0
    _listener: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def start(self) -> None:
        self._listener = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and close every connection (a process that went away)."""
        assert self._listener is not None
        self._listener.close()
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()  # the socket is closed (its FIN sent), as when a process exits
        await self._listener.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                    request_line, *lines = head.split("\r\n")
                    headers = {
                        name.strip().lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)
                    }
                    body = await reader.readexactly(int(headers.get("content-length") or 0))
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if not request_line.startswith("POST "):  # the standalone GET stream, the closing DELETE
                    writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                    continue
                message = json.loads(body)
                if "id" not in message:
                    writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")
                    continue
                result = self._answer(message)
                if result is None:
                    return  # read it all, answer nothing: the connection closes below
                reply = json.dumps({"jsonrpc": "2.0", "id": message["id"], **result}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(reply), reply)
                )
                await writer.drain()
                if self.close_after_reply:
                    return
        finally:
            self._writers.discard(writer)
            writer.close()

    def _answer(self, message: dict[str, Any]) -> dict[str, Any] | None:
        method = message.get("method")
        if method == "initialize":
            hello = {
                "protocolVersion": VERSION,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "faulty", "version": "1"},
            }
            return {"result": hello}
        if method == "tools/list":
            schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
            return {"result": {"tools": [{"name": "record", "inputSchema": schema}]}}
        if method == "tools/call":
            text = message["params"]["arguments"]["text"]
            self.receipts.append(text)
            if text in self.drop:
                return None
            return {"result": {"content": [{"type": "text", "text": text}], "isError": False}}
        return {"error": {"code": -32601, "message": "Method not found"}}


@asynccontextmanager
async def faulty_upstream(**options: Any) -> AsyncIterator[FaultyUpstream]:
    upstream = FaultyUpstream(**options)
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.stop()


@asynccontextmanager
async def pool_for(url: str, client: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[UpstreamPool]:
    monkeypatch.setenv(LEAN_HTTP_ENV, "1" if client == "lean" else "0")
    pool = UpstreamPool({"up": UpstreamConfig(transport="http", url=url, protocol=VERSION, connect_timeout=2)})
    try:
        yield pool
    finally:
        await pool.aclose()


async def call(pool: UpstreamPool, text: str) -> str:
    reply = await pool.request("up", "tools/call", {"name": "record", "arguments": {"text": text}})
    return reply["result"]["content"][0]["text"]


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_request_the_upstream_read_and_dropped_is_not_sent_again(client, monkeypatch) -> None:
    async with faulty_upstream(drop={"charge-once"}) as upstream, pool_for(upstream.url, client, monkeypatch) as pool:
        assert await call(pool, "before") == "before"
        with pytest.raises(UpstreamError) as caught:
            await call(pool, "charge-once")
        assert str(caught.value).startswith("upstream 'up' ")
        assert upstream.receipts == ["before", "charge-once"], "the dropped call reached the upstream once"
        assert await call(pool, "after") == "after"
        assert upstream.receipts == ["before", "charge-once", "after"]


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_dropped_first_request_on_a_new_connection_is_not_sent_again(client, monkeypatch) -> None:
    async with faulty_upstream(drop={"first"}, close_after_reply=True) as upstream:
        async with pool_for(upstream.url, client, monkeypatch) as pool:
            await pool.session("up")
            with pytest.raises(UpstreamError, match="^upstream 'up' "):
                await call(pool, "first")
            assert upstream.receipts == ["first"]
            assert await call(pool, "second") == "second"
            assert upstream.receipts == ["first", "second"]


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_server_that_closes_idle_connections_gets_each_call_exactly_once(client, monkeypatch) -> None:
    async with faulty_upstream(close_after_reply=True) as upstream, pool_for(upstream.url, client, monkeypatch) as pool:
        texts = [f"call-{i}" for i in range(20)]
        assert [await call(pool, text) for text in texts] == texts
        assert upstream.receipts == texts
        assert upstream.connections >= len(texts)  # each call went out on a fresh connection


@pytest.mark.parametrize("client", CLIENTS)
async def test_refused_while_the_upstream_is_down_then_it_works_once_it_is_back(client, monkeypatch) -> None:
    upstream = FaultyUpstream(port=free_port())
    async with pool_for(upstream.url, client, monkeypatch) as pool:
        with pytest.raises(UpstreamError, match="^upstream 'up' refused the connection"):
            await call(pool, "while-down")
        await upstream.start()
        try:
            assert await eventually(lambda: call(pool, "back")) == "back"
            assert upstream.receipts == ["back"]
            await upstream.stop()  # a live session's upstream goes away: its kept-alive connection closes
            with pytest.raises(UpstreamError, match="^upstream 'up' refused the connection"):
                await call(pool, "down-again")
            await upstream.start()
            assert await eventually(lambda: call(pool, "back-again")) == "back-again"
            assert upstream.receipts == ["back", "back-again"]
        finally:
            await upstream.stop()


async def eventually(attempt: Any, timeout: float = 5.0) -> Any:
    """Retry a call the pool refuses during its reconnect back-off (which never reaches the upstream)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except UpstreamError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.05)


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.parametrize("client", CLIENTS)
async def test_through_the_gateway_a_dropped_call_fails_once_and_the_next_one_works(client) -> None:
    async with faulty_upstream(drop={"charge-once"}) as upstream:
        env = {LEAN_HTTP_ENV: "1" if client == "lean" else "0"}
        config = {"up": {"transport": "http", "url": upstream.url, "protocol": VERSION}}
        async with run_gateway(config, env=env) as gw, gw.client("up") as mcp:
            assert text_of(await mcp.call_tool("record", {"text": "before"})) == "before"
            failed = await mcp.call_tool("record", {"text": "charge-once"})
            assert failed.is_error and "upstream 'up'" in text_of(failed), text_of(failed)
            assert upstream.receipts == ["before", "charge-once"]
            after = await mcp.call_tool("record", {"text": "after"})
            assert not after.is_error and text_of(after) == "after"
            assert upstream.receipts == ["before", "charge-once", "after"]
            assert "Traceback" not in gw.log()


STDIO_UPSTREAM = """
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if "id" not in message:
        continue
    if message["method"] == "initialize":
        reply = {"result": {"protocolVersion": sys.argv[2], "capabilities": {"tools": {}}, "serverInfo": {"name": "s"}}}
    elif message["method"] == "tools/call":
        text = message["params"]["arguments"]["text"]
        with open(sys.argv[1], "a") as receipts:
            receipts.write(text + "\\n")
        if text == "charge-once":
            sys.exit(0)  # read it, then went away without answering
        reply = {"result": {"content": [{"type": "text", "text": text}], "isError": False}}
    else:
        reply = {"error": {"code": -32601, "message": "Method not found"}}
    print(json.dumps({"jsonrpc": "2.0", "id": message["id"], **reply}), flush=True)
"""


async def test_over_stdio_a_request_read_by_a_process_that_exits_is_not_sent_to_the_next_one(tmp_path: Path) -> None:
    receipts = tmp_path / "receipts"
    config = UpstreamConfig(
        transport="stdio", command=sys.executable, args=["-c", STDIO_UPSTREAM, str(receipts), VERSION], protocol=VERSION
    )
    pool = UpstreamPool({"up": config})
    try:
        assert await call(pool, "before") == "before"
        with pytest.raises(UpstreamError, match="^upstream 'up' "):
            await call(pool, "charge-once")
        assert receipts.read_text().split() == ["before", "charge-once"]
        assert await call(pool, "after") == "after"  # a new process
        assert receipts.read_text().split() == ["before", "charge-once", "after"]
    finally:
        await pool.aclose()
