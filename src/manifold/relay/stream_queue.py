"""The one queue between the gateway and a client stream it writes to: the 2025-11-25 GET stream, a
2026-07-28 `subscriptions/listen` stream, and the legacy `/sse/{server}` stream (replies included).

Bounded in messages and in bytes (`gateway.limits.queued_bytes_per_stream`). Putting never blocks — a
handler or the notification fan-out never waits for a client that does not read. A client that lets more
pile up than the bounds allow loses the stream, not the gateway its memory: the queue is emptied, the
stream ends (the client reconnects), and one warning names the server, never what was queued.

A held stream is one task and nothing more (thousands are held at once: bench/scale_sessions.py). Its writer
(`relay.streamable_http.pump_events`) waits in the ASGI `receive()` — where the client going away is heard —
and the queue *interrupts* that wait when there is something to write, the way `asyncio.timeout` does: the
writer's task is cancelled once, and the writer takes that cancellation back (`Task.uncancel`) when it was
the queue's, so a real cancellation (shutdown) still goes through. No getter task, no watcher task, no
future per wait.
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
        "quiet_ticks",
        "_waiter",
        "_reader",
        "_interrupting",
    )

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, server_id: str = "", max_messages: int = MAX_MESSAGES
    ) -> None:
        # Made when something is queued and dropped once it is all written: an empty deque holds a block of
        # 64 slots (0.6 kB), and thousands of idle sessions each have a queue.
        self._items: deque[bytes] | None = None
        self._bytes = 0
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.server_id = server_id  # named in the warning when the stream overflows
        self.closed = False  # nothing more is accepted; the reader gets what is left, then the end
        self.overflowed = False
        self.attached = False  # a stream is being written from this queue (relay.hub.Listener.attach)
        self.quiet_ticks = 0  # KeepAlive ticks since the stream last wrote anything
        self._waiter: asyncio.Future[None] | None = None
        self._reader: asyncio.Task[object] | None = None  # a writer waiting elsewhere, to be interrupted
        self._interrupting = False

    def __len__(self) -> int:
        items = self._items
        return 0 if items is None else len(items)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def put(self, payload: bytes) -> bool:
        """Queue one message; never blocks. False when it was not queued: the stream had ended, or this
        message would take it past its bounds (then the stream ends and everything queued is dropped)."""
        if self.closed:
            return False
        items = self._items
        if items is None:
            items = self._items = deque()
        # One message larger than the bound alone is queued all the same when nothing else waits (a reply of
        # up to the upstream's response limit, already in memory): it ended the stream of a client that was
        # reading, and that client's call never got an answer (real-clients probe, a 17 MB result on /sse).
        if len(items) >= self.max_messages or (items and self._bytes + len(payload) > self.max_bytes):
            self._overflow()
            return False
        items.append(payload)
        self._bytes += len(payload)
        self._wake()
        return True

    def holds(self, payload: bytes) -> bool:
        """Whether this very message waits to be written (a scan: for rare messages such as list_changed)."""
        items = self._items
        return items is not None and payload in items

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
        return self.pop()

    def pop(self) -> bytes | None:
        """The next message if one is queued (never waits)."""
        items = self._items
        if not items:
            return None
        payload = items.popleft()
        self._bytes -= len(payload)
        if not items:
            self._items = None
        return payload

    def interrupt_on_wake(self, task: asyncio.Task[object] | None) -> None:
        """While `task` is set, a message or the end interrupts it (cancels it once) instead of waking a
        `get`; None stops that. The task must catch the cancellation and call `interrupted`."""
        self._reader = task
        self._interrupting = False

    def interrupt(self) -> None:
        """Interrupt the registered task's wait (once): there is something to do — or its time is up (the
        KeepAlive's tick)."""
        reader = self._reader
        if reader is not None and not self._interrupting:
            self._interrupting = True
            reader.cancel()

    def interrupted(self, task: asyncio.Task[object], cancelling: int) -> bool:
        """After `task` caught a CancelledError in a wait registered with `interrupt_on_wake`: True when the
        cancellation was this queue's interrupt and nothing else's (then it is taken back); False when it must
        propagate. `cancelling` is `task.cancelling()` from before the wait (as in `asyncio.timeout`)."""
        ours, self._interrupting, self._reader = self._interrupting, False, None
        return ours and task.uncancel() <= cancelling

    def _overflow(self) -> None:
        dropped, size = len(self), self._bytes
        self._items = None
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
        if self._reader is not None:
            self.interrupt()
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class KeepAlive:
    """One timer for all the streams a face holds, instead of one per stream (a timer handle is 0.6 kB).

    It ticks every `seconds / 2` while any stream is held; a stream that wrote nothing for two ticks in a row
    is interrupted to write a keep-alive (`quiet_ticks`): so a stream is never silent for more than `seconds`,
    and a busy one sends none."""

    __slots__ = ("_period", "_queues", "_timer")

    def __init__(self, seconds: float) -> None:
        self._period = seconds / 2
        self._queues: set[StreamQueue] = set()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._queues)

    def add(self, queue: StreamQueue) -> None:
        queue.quiet_ticks = 0
        self._queues.add(queue)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._period, self._tick)

    def discard(self, queue: StreamQueue) -> None:
        self._queues.discard(queue)
        if not self._queues and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        for queue in self._queues:
            queue.quiet_ticks += 1
            if queue.quiet_ticks >= 2:
                queue.interrupt()
        self._timer = asyncio.get_running_loop().call_later(self._period, self._tick) if self._queues else None
