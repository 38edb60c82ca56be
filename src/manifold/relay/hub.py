"""Fan-out of upstream notifications that belong to no request: list_changed and resources/updated.

An upstream says `notifications/tools/list_changed` once; the hub invalidates that upstream's cached
list and tells every connected client whose virtual server includes it — on the 2025-11-25 GET stream
or on a 2026-07-28 `subscriptions/listen` stream. Resource subscriptions are kept per listener as
(upstream, credential identity, original URI): an update is delivered only to the subscribers whose upstream
session it came on, under the URI that listener's server exposes. Every stream writes from one bounded
`StreamQueue` (relay/stream_queue.py).

Upstreams post these notifications to an `UpstreamNotices` queue (upstream/notices.py); `run` drains it for
as long as the gateway serves. A listener hears of an upstream only when its caller may see something of
that upstream (the `Access` seam): nobody learns that lists changed on an upstream they are given nothing of.

A user's own lists change too when they connect or revoke an OAuth upstream (the real tools replace the
`connect_account` tool, or the other way round): `connection_changed` tells that user's streams only.
"""

from __future__ import annotations

import logging
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from manifold import jsoncodec
from manifold.catalog.lists import UpstreamLists
from manifold.catalog.view import VirtualServerView
from manifold.principal import Principal
from manifold.protocol import LIST_CHANGED, META_SUBSCRIPTION_ID, RESOURCES_UPDATED, TOOLS_LIST_CHANGED
from manifold.relay.access import Access
from manifold.relay.stream_queue import DEFAULT_MAX_BYTES, StreamQueue
from manifold.upstream.notices import UpstreamNotices

log = logging.getLogger(__name__)
JSON = dict[str, Any]


# (upstream id, credential identity of the upstream session, the upstream's URI): one resource subscription.
# The identity is `Outbound.identity` (None for the shared session of a none/static upstream): an upstream
# with per-user sessions is subscribed on each subscriber's own session, and an update it sends on one
# user's session reaches only that user's subscribers.
SubscriptionKey = tuple[str, str | None, str]


# What a 2025-11-25 session's or a legacy SSE connection's listener hears: one set for all of them.
ALL_LIST_KINDS: frozenset[str] = frozenset({"tools", "prompts", "resources"})


@dataclass(eq=False, slots=True, weakref_slot=True)  # slots: one per held session (bench/scale_sessions.py)
class Listener:
    """One client's interest in notifications, and the queue of the stream they are written to."""

    view: VirtualServerView
    kinds: AbstractSet[str]  # which list_changed kinds it wants: "tools", "prompts", "resources"
    subscription_id: Any = None  # 2026-07-28: the listen request id, stamped into _meta
    resources: dict[SubscriptionKey, str] = field(default_factory=dict)  # -> the URI as this client knows it
    # Who opened it: when keys or grants change, a stream whose caller may no longer use the server is
    # closed (identity changes apply to open streams too, not only to the next request).
    principal: Principal | None = None
    session_id: str | None = None  # the 2025-11-25 session the stream belongs to, closed with it
    max_bytes: int = DEFAULT_MAX_BYTES  # gateway.limits.queued_bytes_per_stream
    ended: bool = False
    # What waits to be written (serialised). The legacy SSE transport also queues its replies here.
    queue: StreamQueue = field(init=False)

    def __post_init__(self) -> None:
        self.queue = StreamQueue(self.max_bytes, self._server_id())

    def _server_id(self) -> str:
        view = self.view
        return view.id if view is not None else ""

    def push(self, message: JSON) -> None:
        # Never blocks; a client that stopped reading loses its stream, never the gateway its memory.
        self.queue.put(self._payload(message))

    def push_change(self, message: JSON) -> None:
        """A list_changed, unless the same one still waits to be written: the client lists afresh when it reads
        that one, which covers this change too. So an upstream sending thousands at once (or a client reading
        slowly) never overflows the stream with them."""
        payload = self._payload(message)
        if not self.queue.holds(payload):
            self.queue.put(payload)

    def _payload(self, message: JSON) -> bytes:
        if self.subscription_id is not None:
            params = dict(message.get("params") or {})
            meta = dict(params.get("_meta") or {})
            meta[META_SUBSCRIPTION_ID] = self.subscription_id
            params["_meta"] = meta
            message = {**message, "params": params}
        return jsoncodec.dumps(message)

    def attach(self) -> StreamQueue:
        """The queue a newly opened stream writes from. One stream per listener: a stream still writing
        from the current queue is ended; a queue ended by overflow is replaced by a fresh one (the client
        reconnected). A listener that was closed keeps its ended queue, so the new stream ends at once."""
        queue = self.queue
        if not self.ended and (queue.attached or queue.closed):
            queue.close()
            queue = self.queue = StreamQueue(self.max_bytes, self._server_id())
        queue.attached = True
        return queue

    def detach(self, queue: StreamQueue) -> None:
        """The stream writing from `queue` has ended."""
        queue.attached = False

    @property
    def streaming(self) -> bool:
        return self.queue.attached and not self.queue.closed

    def close(self) -> None:
        self.ended = True
        self.queue.close()


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
            source, message = await notices.next()
            try:
                await self.on_upstream_notification(source.upstream_id, message, source.identity)
            except Exception as exc:  # noqa: BLE001 — one malformed notification must not end the fan-out
                log.warning("notification from upstream '%s' not delivered: %s", source.upstream_id, type(exc).__name__)

    def add(self, listener: Listener) -> None:
        self._listeners.add(listener)

    def remove(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def listeners(self) -> list[Listener]:
        return list(self._listeners)

    def subscribers(self, key: SubscriptionKey) -> int:
        return sum(1 for lst in self._listeners if key in lst.resources)

    async def on_upstream_notification(self, upstream_id: str, message: JSON, identity: str | None = None) -> None:
        """`identity`: whose upstream session the notification came on (None: the shared session)."""
        method = message.get("method")
        kind = LIST_CHANGED.get(method or "")
        if kind is not None:
            self._lists.invalidate(upstream_id, kind)
            if kind == "resources":
                self._lists.invalidate(upstream_id, "resource_templates")
            if not self._lists.announce(upstream_id, kind):
                return  # told already, and nobody has listed since
            for lst in list(self._listeners):
                if kind in lst.kinds and upstream_id in lst.view.upstream_ids and self.may_see(lst, upstream_id):
                    lst.push_change({"jsonrpc": "2.0", "method": method, "params": {}})
            return
        if method == RESOURCES_UPDATED:
            # The upstream's _meta (e.g. its listen stream's subscriptionId) is its own business.
            params = {k: v for k, v in (message.get("params") or {}).items() if k != "_meta"}
            uri = params.get("uri")
            if not isinstance(uri, str):
                log.debug("upstream '%s' sent %s without a uri; ignored", upstream_id, method)
                return
            for lst in list(self._listeners):
                exposed = lst.resources.get((upstream_id, identity, uri))
                if exposed is not None:
                    lst.push({"jsonrpc": "2.0", "method": method, "params": {**params, "uri": exposed}})
            return
        log.debug("upstream '%s' sent %s outside any request; ignored", upstream_id, method)

    def connection_changed(self, principal_id: str, upstream_id: str) -> None:
        """A user connected (or revoked) an upstream: their lists of it are different now, nobody else's. Each
        of that user's streams on a server including the upstream hears `tools/list_changed` (if it wants
        tool changes and a grant gives the user something of the upstream)."""
        for lst in list(self._listeners):
            principal = lst.principal
            if (
                principal is not None
                and principal.id == principal_id
                and "tools" in lst.kinds
                and upstream_id in lst.view.upstream_ids
                and self.may_see(lst, upstream_id)
            ):
                lst.push({"jsonrpc": "2.0", "method": TOOLS_LIST_CHANGED, "params": {}})

    def close_all(self, spare: AbstractSet[Listener] = frozenset()) -> None:
        """End every stream but the `spare` ones (legacy SSE streams that still carry replies to come: their
        transport ends them once those are queued, relay/sse.py `LegacySse.stopping`)."""
        for lst in list(self._listeners):
            if lst not in spare:
                lst.close()
        self._listeners.intersection_update(spare)
