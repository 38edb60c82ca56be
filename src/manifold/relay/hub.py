"""Fan-out of upstream notifications that belong to no request: list_changed and resources/updated.

An upstream says `notifications/tools/list_changed` once; the hub invalidates that upstream's cached
list and tells every connected client whose virtual server includes it — on the 2025-11-25 GET stream
or on a 2026-07-28 `subscriptions/listen` stream. Resource subscriptions are kept per listener as
(upstream, original URI) so an update is delivered under the URI that listener's server exposes.

Upstreams post these notifications to an `UpstreamNotices` queue (upstream/notices.py); `run` drains it for
as long as the gateway serves. A listener hears of an upstream only when its caller may see something of
that upstream (the `Access` seam): nobody learns that lists changed on an upstream they are given nothing of.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from manifold.catalog.lists import UpstreamLists
from manifold.catalog.view import VirtualServerView
from manifold.principal import Principal
from manifold.protocol import LIST_CHANGED, META_SUBSCRIPTION_ID, RESOURCES_UPDATED
from manifold.relay.access import Access
from manifold.upstream.notices import UpstreamNotices

log = logging.getLogger(__name__)
JSON = dict[str, Any]
QUEUE_LIMIT = 256


@dataclass(eq=False)
class Listener:
    """One open notification stream of one client."""

    view: VirtualServerView
    kinds: set[str]  # which list_changed kinds it wants: "tools", "prompts", "resources"
    subscription_id: Any = None  # 2026-07-28: the listen request id, stamped into _meta
    resources: dict[tuple[str, str], str] = field(default_factory=dict)  # (upstream, uri) -> exposed uri
    # Messages to write; None ends the stream. The legacy SSE transport also queues ready-made replies (bytes).
    queue: asyncio.Queue[JSON | bytes | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    # Who opened it: when keys or grants change, a stream whose caller may no longer use the server is
    # closed (identity changes apply to open streams too, not only to the next request).
    principal: Principal | None = None
    session_id: str | None = None  # the 2025-11-25 session the stream belongs to, closed with it

    def push(self, message: JSON) -> None:
        if self.subscription_id is not None:
            params = dict(message.get("params") or {})
            meta = dict(params.get("_meta") or {})
            meta[META_SUBSCRIPTION_ID] = self.subscription_id
            params["_meta"] = meta
            message = {**message, "params": params}
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            # A client that stopped reading loses notifications, never the gateway's memory.
            log.warning("notification stream for server '%s' is full; dropping", self.view.id)

    def close(self) -> None:
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            pass


class Hub:
    def __init__(self, lists: UpstreamLists, access: Access) -> None:
        self._lists = lists
        self._access = access
        self._listeners: set[Listener] = set()

    def may_see(self, listener: Listener, upstream_id: str) -> bool:
        """Whether this listener's caller is given anything of the upstream (grants)."""
        principal = listener.principal
        if principal is None:
            return True
        view = listener.view
        return any(
            self._access.member_visible(principal, view, m.member_id) for m in view.members if m.upstream == upstream_id
        )

    async def run(self, notices: UpstreamNotices) -> None:
        """Fan out what upstreams post, until cancelled (the runtime's lifetime)."""
        while True:
            upstream_id, message = await notices.next()
            try:
                await self.on_upstream_notification(upstream_id, message)
            except Exception as exc:  # noqa: BLE001 — one malformed notification must not end the fan-out
                log.warning("notification from upstream '%s' not delivered: %s", upstream_id, type(exc).__name__)

    def add(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def remove(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def listeners(self) -> list[Listener]:
        return list(self._listeners)

    def subscribers(self, upstream_id: str, uri: str) -> int:
        return sum(1 for lst in self._listeners if (upstream_id, uri) in lst.resources)

    async def on_upstream_notification(self, upstream_id: str, message: JSON) -> None:
        method = message.get("method")
        kind = LIST_CHANGED.get(method or "")
        if kind is not None:
            self._lists.invalidate(upstream_id, kind)
            if kind == "resources":
                self._lists.invalidate(upstream_id, "resource_templates")
            for lst in list(self._listeners):
                if kind in lst.kinds and upstream_id in lst.view.upstream_ids and self.may_see(lst, upstream_id):
                    lst.push({"jsonrpc": "2.0", "method": method, "params": {}})
            return
        if method == RESOURCES_UPDATED:
            # The upstream's _meta (e.g. its listen stream's subscriptionId) is its own business.
            params = {k: v for k, v in (message.get("params") or {}).items() if k != "_meta"}
            uri = params.get("uri")
            if not isinstance(uri, str):
                log.debug("upstream '%s' sent %s without a uri; ignored", upstream_id, method)
                return
            for lst in list(self._listeners):
                exposed = lst.resources.get((upstream_id, uri))
                if exposed is not None:
                    lst.push({"jsonrpc": "2.0", "method": method, "params": {**params, "uri": exposed}})
            return
        log.debug("upstream '%s' sent %s outside any request; ignored", upstream_id, method)

    def close_all(self) -> None:
        for lst in list(self._listeners):
            lst.close()
        self._listeners.clear()
