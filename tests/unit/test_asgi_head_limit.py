"""limits.request_head_bytes as `manifold serve` applies it (asgi.py `write_combining_http`): the request's
line and headers are measured whole, the read that completes them included. Before, only reads that left the
head incomplete were counted, so a head arriving in one read of up to 64 KiB passed any smaller limit."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn

from manifold.asgi import write_combining_http

pytestmark = pytest.mark.anyio

LIMIT = 2048


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:  # noqa: ANN401
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = scope["path"].encode()
    length = str(len(body)).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serving() -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    http = write_combining_http(max_head_bytes=LIMIT)
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


async def exchange(port: int, *writes: bytes) -> bytes:
    """Send `writes` (each one write) and read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for data in writes:
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(0.05)
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def head(path: str, size: int, *, close: bool = True, body: bytes = b"") -> bytes:
    """A request whose line and headers take exactly `size` bytes."""
    start = f"POST {path} HTTP/1.1\r\nHost: x\r\n" + ("Connection: close\r\n" if close else "")
    start += f"Content-Length: {len(body)}\r\n"
    filler = size - len(start) - len("X-Filler: \r\n\r\n")
    assert filler > 0
    data = (start + "X-Filler: " + "a" * filler + "\r\n\r\n").encode()
    assert len(data) == size
    return data + body


async def test_a_head_over_the_limit_in_one_read_is_refused_with_431(capfd: pytest.CaptureFixture[str]) -> None:
    async with serving() as port:
        refused = await exchange(port, head("/big", LIMIT + 1, body=b"{}"))
    assert refused.startswith(b"HTTP/1.1 431"), refused[:200]  # was 200: the completing read was not counted
    assert b"too big" in refused and b"400" not in refused
    log = capfd.readouterr().err  # uvicorn's logger writes to stderr itself
    assert f"exceed {LIMIT} bytes" in log
    assert "Invalid HTTP request" not in log  # the 431 alone, no 400 after it


async def test_a_head_over_the_limit_split_so_its_last_read_crosses_it_is_refused() -> None:
    data = head("/split", LIMIT + 100)
    async with serving() as port:
        refused = await exchange(port, data[: LIMIT - 10], data[LIMIT - 10 :])
    assert refused.startswith(b"HTTP/1.1 431"), refused[:200]


async def test_a_head_of_exactly_the_limit_is_served_with_its_body() -> None:
    async with serving() as port:
        served = await exchange(port, head("/ok", LIMIT, body=b"x" * (LIMIT * 4)))
    assert served.startswith(b"HTTP/1.1 200"), served[:200]
    assert served.endswith(b"/ok")


async def test_pipelined_requests_in_one_read_are_each_measured_on_their_own() -> None:
    # Together well past the limit, each within it: a read carrying several heads is not one head.
    data = head("/one", LIMIT - 100, close=False) + head("/two", LIMIT - 100, close=False) + head("/three", LIMIT)
    async with serving() as port:
        served = await exchange(port, data)
    assert served.count(b"HTTP/1.1 200") == 3, served[:400]
    assert served.endswith(b"/three")
