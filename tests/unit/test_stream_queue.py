"""The one bounded queue every client stream writes from (relay/stream_queue.py): putting never waits, and a
client that does not read loses its stream — with what was queued freed — never the gateway its memory."""

from __future__ import annotations

import asyncio
import logging
import tracemalloc
from typing import Any

import pytest

from manifold.relay.stream_queue import KeepAlive, StreamQueue
from manifold.relay.streamable_http import pump_events

pytestmark = pytest.mark.anyio


async def test_messages_come_out_in_order_and_the_end_after_them() -> None:
    queue = StreamQueue(max_bytes=100, server_id="web")
    assert queue.put(b"one") and queue.put(b"two")
    queue.close()
    assert [await queue.get(), await queue.get(), await queue.get()] == [b"one", b"two", None]
    assert not queue.put(b"late")


async def test_past_the_byte_bound_the_stream_ends_and_its_data_is_freed(caplog: pytest.LogCaptureFixture) -> None:
    queue = StreamQueue(max_bytes=10, server_id="web")
    with caplog.at_level(logging.WARNING):
        assert queue.put(b"secret-123")  # exactly the bound
        assert not queue.put(b"x")  # one byte more: never waits, ends the stream
        assert not queue.put(b"y")
    assert queue.closed and queue.overflowed and len(queue) == 0 and queue.queued_bytes == 0
    assert await queue.get() is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "'web'" in warnings[0] and "secret" not in warnings[0]


async def test_one_message_larger_than_the_bound_alone_is_still_queued() -> None:
    """Was (real-clients probe): a 17 MB tool result on a legacy SSE stream ended a stream that was being read."""
    queue = StreamQueue(max_bytes=10, server_id="web")
    assert queue.put(b"a reply larger than ten bytes")
    assert not queue.put(b"x") and queue.overflowed  # but nothing more while it waits


async def test_past_the_message_bound_too() -> None:
    queue = StreamQueue(max_bytes=1 << 20, server_id="web", max_messages=3)
    assert all(queue.put(b".") for _ in range(3))
    assert not queue.put(b".") and queue.overflowed


async def test_a_waiting_reader_is_woken_and_a_cancelled_get_loses_nothing() -> None:
    queue = StreamQueue(server_id="web")
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    waiting.cancel()
    reader = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put(b"hello")
    assert await asyncio.wait_for(reader, 1) == b"hello"


# ---- the writer of a held stream (relay/streamable_http.py pump_events) ----------------------------------


class Connection:
    """The ASGI side of one held response, as uvicorn's httptools protocol gives it: `receive` waits on an
    event that a disconnect sets; `send` records what was written."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.disconnected = False
        self.sent: list[bytes] = []
        self.ended = False
        self.wrote = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        if not self.disconnected:
            await self.event.wait()
            self.event.clear()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message["body"])
        self.ended = not message.get("more_body", False)
        self.wrote.set()

    def go_away(self) -> None:
        self.disconnected = True
        self.event.set()


async def written(connection: Connection, count: int) -> list[bytes]:
    while len(connection.sent) < count:
        connection.wrote.clear()
        await asyncio.wait_for(connection.wrote.wait(), 2)
    return connection.sent


async def test_a_held_stream_writes_messages_in_order_then_its_end() -> None:
    connection, queue = Connection(), StreamQueue(server_id="web")
    queue.put(b'{"n":1}')
    pump = asyncio.ensure_future(pump_events(connection.receive, connection.send, queue, KeepAlive(20)))
    assert await written(connection, 1) == [b'event: message\ndata: {"n":1}\n\n']
    queue.put(b'{"n":2}')
    queue.put(b'{"n":3}')
    await written(connection, 3)
    queue.close()
    await asyncio.wait_for(pump, 2)
    assert connection.sent[1:] == [b'event: message\ndata: {"n":2}\n\n', b'event: message\ndata: {"n":3}\n\n', b""]
    assert connection.ended


async def test_a_quiet_stream_gets_keepalives_and_still_its_messages() -> None:
    connection, queue = Connection(), StreamQueue(server_id="web")
    pump = asyncio.ensure_future(pump_events(connection.receive, connection.send, queue, KeepAlive(0.04)))
    assert await written(connection, 2) == [b": keepalive\n\n"] * 2
    queue.put(b"{}")
    while connection.sent[-1] != b"event: message\ndata: {}\n\n":
        await written(connection, len(connection.sent) + 1)
    connection.go_away()
    await asyncio.wait_for(pump, 2)
    assert not connection.ended  # a client that went away is not written to


async def test_a_client_going_away_ends_its_stream_at_once() -> None:
    connection, queue = Connection(), StreamQueue(server_id="web")
    pump = asyncio.ensure_future(pump_events(connection.receive, connection.send, queue, KeepAlive(20)))
    await asyncio.sleep(0)
    connection.go_away()
    await asyncio.wait_for(pump, 1)  # not after the keep-alive (20 s)
    assert connection.sent == []


async def test_a_real_cancellation_still_ends_the_stream_even_when_a_message_comes_at_once() -> None:
    connection, queue = Connection(), StreamQueue(server_id="web")
    pump = asyncio.ensure_future(pump_events(connection.receive, connection.send, queue, KeepAlive(20)))
    await asyncio.sleep(0)
    queue.put(b"{}")  # the queue interrupts the wait...
    pump.cancel()  # ...and the server shuts down in the same step
    with pytest.raises(asyncio.CancelledError):
        await pump


async def test_a_held_stream_is_one_task_and_small() -> None:
    """Thousands of idle streams are held at once (bench/scale_sessions.py): each is its own task and nothing
    more — no getter or disconnect-watch task, no future per keep-alive round — and under 2 kB, its task and
    frames included."""
    held = 200
    connections = [Connection() for _ in range(held)]
    queues = [StreamQueue(server_id="web") for _ in range(held)]
    keepalive = KeepAlive(20)
    before_tasks = len(asyncio.all_tasks())
    tracemalloc.start()
    try:
        first = tracemalloc.take_snapshot()
        pumps = [
            asyncio.ensure_future(pump_events(c.receive, c.send, q, keepalive))
            for c, q in zip(connections, queues, strict=True)
        ]
        for _ in range(3):
            await asyncio.sleep(0)
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(first, "filename"))
    finally:
        tracemalloc.stop()
    assert len(asyncio.all_tasks()) - before_tasks == held
    per_stream = grown / held
    for connection in connections:
        connection.go_away()
    await asyncio.wait_for(asyncio.gather(*pumps), 2)
    assert len(keepalive) == 0  # every stream that ended left the keep-alive's set
    assert per_stream < 2000, per_stream  # it was 5 kB: three tasks, a future per round, a timer
