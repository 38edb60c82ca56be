"""The one queue between the gateway and a client stream it writes to: the 2025-11-25 GET stream, a
2026-07-28 `subscriptions/listen` stream, and the legacy `/sse/{server}` stream (replies included).

Bounded in messages and in bytes (`gateway.limits.queued_bytes_per_stream`). Putting never blocks — a
handler or the notification fan-out never waits for a client that does not read. A client that lets more
pile up than the bounds allow loses the stream, not the gateway its memory: the queue is emptied, the
stream ends (the client reconnects), and one warning names the server, never what was queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

log = logging.getLogger(__name__)

# Messages one stream may have waiting, whatever their size (notifications are small; this bounds them).
MAX_MESSAGES = 1024
DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # the default of gateway.limits.queued_bytes_per_stream


class StreamQueue:
    """Serialised messages waiting to be written to one client stream, for one reader."""

    __slots__ = (
        "_items",
        "_bytes",
        "max_bytes",
        "max_messages",
        "server_id",
        "closed",
        "overflowed",
        "attached",
        "_waiter",
    )

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, server_id: str = "", max_messages: int = MAX_MESSAGES
    ) -> None:
        self._items: deque[bytes] = deque()
        self._bytes = 0
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.server_id = server_id  # named in the warning when the stream overflows
        self.closed = False  # nothing more is accepted; the reader gets what is left, then the end
        self.overflowed = False
        self.attached = False  # a stream is being written from this queue (relay.hub.Listener.attach)
        self._waiter: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def put(self, payload: bytes) -> bool:
        """Queue one message; never blocks. False when it was not queued: the stream had ended, or this
        message would take it past its bounds (then the stream ends and everything queued is dropped)."""
        if self.closed:
            return False
        if len(self._items) >= self.max_messages or self._bytes + len(payload) > self.max_bytes:
            self._overflow()
            return False
        self._items.append(payload)
        self._bytes += len(payload)
        self._wake()
        return True

    def close(self) -> None:
        """End the stream once what is queued has been written."""
        self.closed = True
        self._wake()

    async def get(self) -> bytes | None:
        """The next message, or None once the stream has ended. Cancelling a waiting `get` loses nothing."""
        while not self._items:
            if self.closed:
                return None
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        payload = self._items.popleft()
        self._bytes -= len(payload)
        return payload

    def _overflow(self) -> None:
        dropped, size = len(self._items), self._bytes
        self._items.clear()
        self._bytes = 0
        self.closed = self.overflowed = True
        self._wake()
        log.warning(
            "a client stream on server '%s' is not being read: ended it and dropped %d queued messages (%d bytes)",
            self.server_id,
            dropped,
            size,
        )

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
