"""The lean HTTP/1.1 client the upstream transport uses for POSTs to http:// upstreams (upstream/lean_http.py),
against a real socket server that answers the way real servers do, and the ways they fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import pytest

from manifold.upstream.base import UpstreamError, UpstreamSessionLost
from manifold.upstream.lean_http import LeanHttpClient

pytestmark = pytest.mark.anyio


@dataclass
class Server:
    port: int
    connections: int = 0
    heads: list[str] = field(default_factory=list)


async def _answer(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The request body says how to answer."""
    server.connections += 1
    while True:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        server.heads.append(head)
        length = next(
            int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length")
        )
        mode = (await reader.readexactly(length)).decode()
        if mode == "json":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        elif mode == "stream":
            writer.write(
                b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for part in (b"data: a\n", b"\n", b"data: b\n\n"):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        elif mode == "until-close":
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{"a":1}')
            await writer.drain()
            writer.close()
            return
        elif mode == "cut":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
            await writer.drain()
            writer.close()
            return
        elif mode == "drop":
            writer.close()
            return
        elif mode == "json-then-close":  # kept alive by the reply's framing, then closed by the server
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            return
        await writer.drain()


@asynccontextmanager
async def serving() -> AsyncIterator[tuple[Server, LeanHttpClient]]:
    server = Server(0)
    listener = await asyncio.start_server(lambda r, w: _answer(server, r, w), "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    client = LeanHttpClient(
        f"http://127.0.0.1:{server.port}/mcp?q=1",
        connect_timeout=2,
        keepalive_seconds=3.5,
        default_headers={"User-Agent": "manifold/test"},
    )
    try:
        yield server, client
    finally:
        await client.aclose()
        listener.close()


async def test_calls_share_one_kept_alive_connection() -> None:
    async with serving() as (server, client):
        for _ in range(3):
            response = await client.post(b"json", {"Content-Type": "application/json"}, "up")
            assert response.status == 200 and await response.read() == b"{}"
            response.release()
    assert server.connections == 1
    assert server.heads[0].startswith("POST /mcp?q=1 HTTP/1.1\r\n")


async def test_headers_are_sent_once_each_and_nothing_is_added() -> None:
    async with serving() as (server, client):
        response = await client.post(b"json", {"MCP-Protocol-Version": "A", "mcp-protocol-version": "B"}, "up")
        await response.read()
        response.release()
    names = [line.split(":")[0].lower() for line in server.heads[0].split("\r\n")[1:] if line]
    assert sorted(names) == ["content-length", "host", "mcp-protocol-version", "user-agent"]
    assert "mcp-protocol-version: B" in server.heads[0]


async def test_an_event_stream_arrives_chunk_by_chunk_after_an_interim_reply() -> None:
    async with serving() as (server, client):
        response = await client.post(b"stream", {}, "up")
        assert response.status == 200
        assert response.headers.get("content-type") == "text/event-stream"
        body = b"".join([chunk async for chunk in response.content.iter_any()])
        response.release()
        assert body == b"data: a\n\ndata: b\n\n"
        again = await client.post(b"json", {}, "up")  # the connection is reusable after a whole stream
        assert await again.read() == b"{}"
        again.release()
    assert server.connections == 1


async def test_a_body_read_until_the_server_closes() -> None:
    async with serving() as (_, client):
        response = await client.post(b"until-close", {}, "up")
        assert await response.read() == b'{"a":1}'
        response.release()


async def test_a_body_cut_short_is_the_error_aiohttp_raises() -> None:
    """The HTTP transport handles both clients' failures alike, so a short body must look like aiohttp's."""
    async with serving() as (_, client):
        response = await client.post(b"cut", {}, "up")
        with pytest.raises(aiohttp.ClientPayloadError, match="^Response payload is not completed$") as caught:
            await response.read()
        response.close()
    assert "abc" not in str(caught.value)


async def test_a_connection_dropped_after_the_request_was_read_is_an_upstream_error_and_never_resent() -> None:
    async with serving() as (server, client):
        with pytest.raises(UpstreamError) as caught:
            await client.post(b"drop", {}, "up")
        assert not isinstance(caught.value, UpstreamSessionLost)  # the pool must not resend it either
        assert str(caught.value) == "upstream 'up' closed the connection without answering"
        assert len(server.heads) == 1 and server.connections == 1
        again = await client.post(b"json", {}, "up")  # the next request gets a new connection
        assert await again.read() == b"{}"
        again.release()
    assert server.connections == 2


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    async with serving() as (server, client):
        for _ in range(3):
            response = await client.post(b"json-then-close", {}, "up")
            assert await response.read() == b"{}"
            response.release()
    assert len(server.heads) == 3 and server.connections == 3  # each request sent once, on a new connection


async def test_connection_refused_means_the_session_is_lost_not_a_timeout() -> None:
    client = LeanHttpClient("http://127.0.0.1:1/mcp", connect_timeout=2, keepalive_seconds=3.5, default_headers={})
    try:
        with pytest.raises(UpstreamSessionLost) as caught:
            await client.post(b"{}", {}, "up")
    finally:
        await client.aclose()
    assert "refused the connection" in str(caught.value)


def test_only_plain_http_urls_are_taken() -> None:
    assert LeanHttpClient.supports("http://127.0.0.1:8000/mcp")
    assert not LeanHttpClient.supports("https://example.com/mcp")


async def test_base_headers_are_encoded_once_and_a_rebuilt_dict_is_sent_as_it_is_now() -> None:
    """The transport passes its base headers as the same dict until it rebuilds them (a session id learned,
    a version negotiated) and each request's own headers apart; what goes out is always the merge of the
    current two, the request's own winning, case-insensitively."""
    base = {"Content-Type": "application/json", "MCP-Protocol-Version": "A"}
    async with serving() as (server, client):
        for extra in ({"Mcp-Method": "tools/call"}, {"mcp-protocol-version": "B"}, None):
            response = await client.post(b"json", base, "up", extra)
            await response.read()
            response.release()
        base = {**base, "Mcp-Session-Id": "s1"}  # rebuilt: a new dict
        response = await client.post(b"json", base, "up", {"Mcp-Method": "tools/list"})
        await response.read()
        response.release()
    first, second, third, fourth = server.heads
    assert "Mcp-Method: tools/call" in first and "MCP-Protocol-Version: A" in first
    assert "mcp-protocol-version: B" in second and "MCP-Protocol-Version: A" not in second
    assert "Mcp-Method" not in third and "MCP-Protocol-Version: A" in third
    assert "Mcp-Session-Id: s1" in fourth and "Mcp-Method: tools/list" in fourth and "tools/call" not in fourth
