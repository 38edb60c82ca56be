"""Notifications upstreams send outside any request (list_changed, resources/updated), queued for the one
consumer that fans them out to clients (relay/hub.py).

A queue rather than a callback into the hub: the pool is built before the hub (the hub needs the list
cache, which needs the pool), so the composition root hands the pool `post` and the hub drains the queue.
Bounded: an upstream that floods notifications loses the excess, never the gateway's memory. Each notice
says which session it came on (`UpstreamKey`: the upstream and the credential identity), so a resource update
seen on one user's session reaches only that user's subscribers.
"""

from __future__ import annotations

import asyncio
import logging

from manifold.protocol import LIST_CHANGED
from manifold.upstream.base import JSON
from manifold.upstream.pool import UpstreamKey

log = logging.getLogger(__name__)
QUEUE_LIMIT = 4096


class UpstreamNotices:
    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self._queue: asyncio.Queue[tuple[UpstreamKey, JSON]] = asyncio.Queue(limit)
        # The list_changed notices queued and not yet taken, by session and method: a second one is covered by
        # the first (the fan-out tells clients to list afresh), so an upstream repeating it takes one place.
        self._changes: set[tuple[UpstreamKey, str]] = set()
        self._warned: set[str] = set()  # upstreams told about once: a flood must not flood the log too

    def post(self, source: UpstreamKey, message: JSON) -> None:
        """The pool's notification handler: never blocks the upstream's reader."""
        method = message.get("method")
        change = (source, method) if method in LIST_CHANGED else None
        if change is not None and change in self._changes:
            return
        try:
            self._queue.put_nowait((source, message))
        except asyncio.QueueFull:
            if source.upstream_id not in self._warned and len(self._warned) < QUEUE_LIMIT:
                self._warned.add(source.upstream_id)
                log.warning("upstream '%s': too many notifications queued; dropping the excess", source.upstream_id)
            return
        if change is not None:
            self._changes.add(change)

    async def next(self) -> tuple[UpstreamKey, JSON]:
        source, message = await self._queue.get()
        if self._changes:
            self._changes.discard((source, message.get("method")))
        return source, message
