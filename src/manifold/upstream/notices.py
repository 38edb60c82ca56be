"""Notifications upstreams send outside any request (list_changed, resources/updated), queued for the one
consumer that fans them out to clients (relay/hub.py).

A queue rather than a callback into the hub: the pool is built before the hub (the hub needs the list
cache, which needs the pool), so the composition root hands the pool `post` and the hub drains the queue.
Bounded: an upstream that floods notifications loses the excess, never the gateway's memory.
"""

from __future__ import annotations

import asyncio
import logging

from manifold.upstream.base import JSON

log = logging.getLogger(__name__)
QUEUE_LIMIT = 4096


class UpstreamNotices:
    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self._queue: asyncio.Queue[tuple[str, JSON]] = asyncio.Queue(limit)

    def post(self, upstream_id: str, message: JSON) -> None:
        """The pool's notification handler: never blocks the upstream's reader."""
        try:
            self._queue.put_nowait((upstream_id, message))
        except asyncio.QueueFull:
            log.warning("upstream '%s': too many notifications queued; dropping %s", upstream_id, message.get("method"))

    async def next(self) -> tuple[str, JSON]:
        return await self._queue.get()
