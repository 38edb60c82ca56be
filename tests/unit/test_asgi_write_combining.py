"""The gateway's HTTP responses leave in one write: uvicorn writes the head on `http.response.start` and the
body on the next message, which made every JSON answer two TCP segments (two wake-ups of the client)."""

from __future__ import annotations

import asyncio
import socket

import httpx2
import pytest
import uvicorn

from manifold.asgi import _WriteCombining, send_body, write_combining_http

pytestmark = pytest.mark.anyio


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1) if name == "peername" else default


async def test_writes_of_one_step_leave_as_one() -> None:
    real = RecordingTransport()
    combined = _WriteCombining(real)
    combined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    combined.write(b"{}")
    assert real.writes == []  # held until the step ends
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


async def test_close_sends_what_is_held_first() -> None:
    real = RecordingTransport()
    combined = _WriteCombining(real)
    combined.write(b"bye")
    combined.close()
    assert real.writes == [b"bye"] and real.closed
    await asyncio.sleep(0)
    assert real.writes == [b"bye"]  # nothing twice, nothing after close


async def test_nothing_is_written_to_a_closed_connection() -> None:
    real = RecordingTransport()
    combined = _WriteCombining(real)
    combined.write(b"late")
    real.closed = True  # the peer went away before the step ended
    await asyncio.sleep(0)
    assert real.writes == []
    assert combined.get_extra_info("peername") == ("127.0.0.1", 1)


async def test_a_served_json_answer_is_one_segment() -> None:
    """Through a real uvicorn server with the protocol `manifold serve` uses: the client receives head and
    body of a JSON answer in one read, and the answer is intact (keep-alive, a second request works)."""

    async def app(scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return
        await receive()
        await send_body(send, 200, b'{"jsonrpc":"2.0","id":1,"result":{}}')

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        http=write_combining_http(),
        loop="asyncio",
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=10,
    )  # a connection left open cannot hang the run
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            first = await reader.read(65536)  # one read: whatever the first segment carried
            head, _, body = first.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert body == b'{"jsonrpc":"2.0","id":1,"result":{}}'
        writer.close()
        async with httpx2.AsyncClient() as client:
            response = await client.post(f"http://127.0.0.1:{port}/", content=b"{}")
            assert response.json() == {"jsonrpc": "2.0", "id": 1, "result": {}}
    finally:
        server.should_exit = True
        await serving
