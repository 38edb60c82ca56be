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

from manifold.upstream.base import JSON
from manifold.upstream.pool import UpstreamKey

log = logging.getLogger(__name__)
QUEUE_LIMIT = 4096


class UpstreamNotices:
    def __init__(self, limit: int = QUEUE_LIMIT) -> None:
        self._queue: asyncio.Queue[tuple[UpstreamKey, JSON]] = asyncio.Queue(limit)

    def post(self, source: UpstreamKey, message: JSON) -> None:
        """The pool's notification handler: never blocks the upstream's reader."""
        try:
            self._queue.put_nowait((source, message))
        except asyncio.QueueFull:
            log.warning(
                "upstream '%s': too many notifications queued; dropping %s", source.upstream_id, message.get("method")
            )

    async def next(self) -> tuple[UpstreamKey, JSON]:
        return await self._queue.get()
