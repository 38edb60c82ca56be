"""uvicorn's per-connection objects as `manifold serve` runs them (asgi.py `write_combining_http`): lighter
events and pipeline, the same behaviour. Thousands of idle 2025-11-25 sessions each hold a connection open
(their GET stream), so what one connection weighs is the gateway's memory per session."""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from manifold.asgi import write_combining_http

pytestmark = pytest.mark.anyio

HELD = 100


class HoldingApp:
    """Answers GET /hold with the head and one chunk of a streamed body, then waits for the client to go
    away; anything else with a small body."""

    def __init__(self) -> None:
        self.holding = 0
        self.gone = 0
        self.changed = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401
        if scope["type"] != "http":
            return
        if scope["path"] != "/hold":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": scope["path"][-2:].encode()})
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})
        self.holding += 1
        self.changed.set()
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone += 1
        self.changed.set()

    async def until(self, check: Any) -> None:  # noqa: ANN401
        async with asyncio.timeout(10):
            while not check():
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def serving(app: HoldingApp, http: type[asyncio.Protocol]) -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, http=http, loop="asyncio", lifespan="off", log_level="warning", timeout_graceful_shutdown=10
    )  # a connection left open cannot hang the run
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def hold(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /hold HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    await reader.readuntil(b": open\n\n")
    return reader, writer


async def server_side_bytes_per_connection(http: type[asyncio.Protocol]) -> float:
    """tracemalloc growth, from the server's code only (uvicorn, the protocol), per held connection."""
    app = HoldingApp()
    async with serving(app, http) as port:
        _, opener = await hold(port)  # the first connection's one-off costs
        tracemalloc.start(30)
        try:
            first = tracemalloc.take_snapshot()
            connections = [await hold(port) for _ in range(HELD)]
            second = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        server_code = [tracemalloc.Filter(True, "*uvicorn*", all_frames=True)]
        grown = sum(
            s.size_diff
            for s in second.filter_traces(server_code).compare_to(first.filter_traces(server_code), "filename")
        )
        # Closed by hand, the first one too: a StreamWriter closes its connection when collected only in later
        # 3.11 releases (pyenv's 3.11.7 does, Debian's 3.11.2 does not: the server's shutdown waited for good).
        for _, writer in [*connections, (None, opener)]:
            writer.close()
        await app.until(lambda: app.gone >= HELD + 1)  # every one of them heard going away
    return grown / HELD


async def test_a_held_connection_weighs_less_than_uvicorns_own() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    stock = await server_side_bytes_per_connection(HttpToolsProtocol)
    ours = await server_side_bytes_per_connection(write_combining_http())
    # uvicorn's own makes three deques per connection (two events' waiters, the pipeline): 2.2 kB of it
    assert stock - ours > 1800, (stock, ours)  # measured: 8.0 kB stock, 4.7 kB ours


async def test_a_client_going_away_is_heard_at_once_and_pipelined_requests_are_answered_in_order() -> None:
    app = HoldingApp()
    async with serving(app, write_combining_http()) as port:
        _, writer = await hold(port)
        await app.until(lambda: app.holding == 1)
        writer.close()
        await app.until(lambda: app.gone == 1)  # no keep-alive or write needed to notice

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"GET /a1 HTTP/1.1\r\nHost: x\r\n\r\nGET /b2 HTTP/1.1\r\nHost: x\r\n\r\nGET /c3 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        bodies = []
        for _ in range(3):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            bodies.append(await asyncio.wait_for(reader.readexactly(2), 5))
        assert bodies == [b"a1", b"b2", b"c3"]
        writer.close()


class ScopeRecorder:
    """Answers every request with a small body, keeping each request's scope."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401
        if scope["type"] != "http":
            return
        self.scopes.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


async def scopes_of_two_connections(http: type[asyncio.Protocol]) -> list[dict[str, Any]]:
    app = ScopeRecorder()
    async with serving(app, http) as port:  # type: ignore[arg-type]
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-One:  spaced \r\n\r\n")
            await asyncio.wait_for(reader.readuntil(b"ok"), 5)
            writer.close()
    return app.scopes


async def test_requests_share_what_never_changes_and_see_the_same_scope_as_uvicorns() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    ours = await scopes_of_two_connections(write_combining_http())
    stock = await scopes_of_two_connections(HttpToolsProtocol)
    # One `asgi` dict and one server address for every request, not a copy per request or connection.
    assert ours[0]["asgi"] is ours[1]["asgi"] and ours[0]["server"] is ours[1]["server"]
    assert ours[0]["state"] is not ours[1]["state"]  # each request's own (ASGI: a copy of the lifespan state)

    def shape(scope: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in scope.items() if k not in ("client", "server")}

    assert [shape(s) for s in ours] == [shape(s) for s in stock]
    assert [s["client"][0] for s in ours] == [s["client"][0] for s in stock] == ["127.0.0.1"] * 2
    assert ours[0]["server"][0] == "127.0.0.1"


async def test_a_wait_interrupted_again_and_again_leaves_nothing_behind() -> None:
    """A held stream's wait in `receive()` is interrupted at every notification and keep-alive (its task
    cancelled, relay/stream_queue.py), for hours: the cancelled waiters must not pile up."""
    from manifold.asgi import _LeanEvent  # pyright: ignore[reportPrivateUsage]

    event = _LeanEvent()
    for _ in range(1000):
        event.waiter().cancel()  # what cancelling the task awaiting it does
    last = event.waiter()
    assert len(event._waiters or ()) <= 2  # pyright: ignore[reportPrivateUsage]
    event.set()
    assert last.done() and last.result() is True and event._waiters is None  # pyright: ignore[reportPrivateUsage]
    event.clear()
    assert not event.is_set()
