"""The one bounded queue every client stream writes from (relay/stream_queue.py): putting never waits, and a
client that does not read loses its stream — with what was queued freed — never the gateway its memory."""

from __future__ import annotations

import asyncio
import logging

import pytest

from manifold.relay.stream_queue import StreamQueue

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
