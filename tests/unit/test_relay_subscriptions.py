"""Resource subscriptions are kept per (upstream, credential identity, URI) (issue 9, defect 12): with an
upstream that holds one session per user, each subscriber's own session is subscribed, and an update the
upstream sends on one user's session reaches only that user — in process, over a real `Gateway` and `Hub`,
a stand-in pool that records which session (identity) each subscription went to, and a credential resolver
that gives every caller their own identity, as `oauth`/`forwarded`/`passthrough` upstreams do."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from manifold.catalog.lists import UpstreamLists
from manifold.catalog.view import VirtualServerView
from manifold.config.models import MemberConfig, UpstreamConfig, VirtualServerConfig
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.protocol import RESOURCES_SUBSCRIBE, RESOURCES_UNSUBSCRIBE, RESOURCES_UPDATED, Era
from manifold.relay.access import AllowAll, NoAudit
from manifold.relay.call import Call
from manifold.relay.handlers import Gateway
from manifold.relay.hub import Hub, Listener
from manifold.upstream.credential import SHARED, Outbound

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]
URI = "test://doc"  # as the upstream knows it
EXPOSED = "test+docs://doc"  # as the gateway's clients know it (the member in the scheme)


@dataclass
class RecordingSession:
    identity: str | None
    log: list[tuple[str, str | None, str]]

    async def subscribe_resource(self, uri: str) -> JSON:
        self.log.append(("subscribe", self.identity, uri))
        return {"result": {}}

    async def unsubscribe_resource(self, uri: str) -> JSON:
        self.log.append(("unsubscribe", self.identity, uri))
        return {"result": {}}


@dataclass
class PerUserPool:
    """An upstream whose sessions are per credential identity (the pool's UpstreamKey)."""

    log: list[tuple[str, str | None, str]] = field(default_factory=list)

    def config(self, upstream_id: str) -> UpstreamConfig:
        return UpstreamConfig.model_validate(
            {"transport": "http", "url": "http://docs.test/mcp", "auth": {"mode": "forwarded", "allow": ["x-user"]}}
        )

    async def session(self, upstream_id: str, outbound: Outbound = SHARED) -> RecordingSession:
        return RecordingSession(outbound.identity, self.log)

    def speaks_both(self, upstream_id: str) -> bool:
        return False  # one era: every client through the one session

    async def request(self, upstream_id: str, method: str, params: JSON | None = None, **_: Any) -> JSON:
        return {"result": {"resources": []}}


class OwnIdentity:
    """Every caller's requests carry their own credential: one upstream session per principal."""

    async def resolve(self, upstream_id: str, config: UpstreamConfig, ctx: Any) -> Outbound:
        return Outbound(headers={"x-user": ctx.principal.id}, identity=ctx.principal.id)


def setup() -> tuple[Gateway, Hub, VirtualServerView, PerUserPool]:
    pool = PerUserPool()
    lists = UpstreamLists(pool, ttl_seconds=3600)  # type: ignore[arg-type]
    view = VirtualServerView("docs", VirtualServerConfig(members=[MemberConfig(upstream="docs")]), lists, "__")
    hub = Hub(lists, AllowAll())
    gateway = Gateway(pool, hub, AllowAll(), NoAudit(), OwnIdentity())  # type: ignore[arg-type]
    return gateway, hub, view, pool


def client(gateway: Gateway, hub: Hub, view: VirtualServerView, user: str) -> Call:
    principal = Principal(kind=PrincipalKind.USER, name=user, credential=Credential(CredentialKind.API_KEY))
    listener = Listener(view=view, kinds={"resources"}, principal=principal)
    hub.add(listener)
    return Call(view=view, era=Era.HANDSHAKE, client_capabilities={}, listener=listener, principal=principal)


def received(call: Call) -> list[JSON]:
    assert call.listener is not None
    queue = call.listener.queue
    return [orjson.loads(queue._items[i]) for i in range(len(queue))]


async def test_each_users_session_is_subscribed_and_hears_only_its_own_updates() -> None:
    gateway, hub, view, pool = setup()
    alice, bob, bob_again = (client(gateway, hub, view, u) for u in ("alice", "bob", "bob"))
    for call in (alice, bob, bob_again):
        assert await gateway.handle(call, RESOURCES_SUBSCRIBE, {"uri": EXPOSED}) == {"result": {}}
    # One upstream subscription per user session (bob's second client shares bob's).
    assert pool.log == [("subscribe", "user:alice", URI), ("subscribe", "user:bob", URI)]

    await hub.on_upstream_notification("docs", {"method": RESOURCES_UPDATED, "params": {"uri": URI}}, "user:alice")
    assert [m["params"]["uri"] for m in received(alice)] == [EXPOSED]
    assert received(bob) == [] and received(bob_again) == []  # alice's update is not bob's

    await hub.on_upstream_notification("docs", {"method": RESOURCES_UPDATED, "params": {"uri": URI}}, "user:bob")
    assert len(received(alice)) == 1 and len(received(bob)) == 1 and len(received(bob_again)) == 1

    # Unsubscribing: bob's session stays subscribed while one of his clients still wants it; alice's is
    # unsubscribed on her own session.
    await gateway.handle(bob, RESOURCES_UNSUBSCRIBE, {"uri": EXPOSED})
    await gateway.handle(alice, RESOURCES_UNSUBSCRIBE, {"uri": EXPOSED})
    assert pool.log[2:] == [("unsubscribe", "user:alice", URI)]
    await gateway.handle(bob_again, RESOURCES_UNSUBSCRIBE, {"uri": EXPOSED})
    assert pool.log[3:] == [("unsubscribe", "user:bob", URI)]


async def test_a_list_change_heard_twice_before_anyone_lists_reaches_each_client_once() -> None:
    """Was (real-clients probe): the shared upstream session heard one change on its GET stream and on a POST's
    stream, and each listening client got two list_changed (and listed twice). A change after someone listed
    again is news again."""
    gateway, hub, view, pool = setup()
    alice = client(gateway, hub, view, "alice")
    assert alice.listener is not None
    alice.listener.kinds = {"resources", "tools"}
    changed = {"method": "notifications/tools/list_changed"}
    await hub.on_upstream_notification("docs", changed)
    assert await alice.listener.queue.get() is not None  # written to the client, which lists afresh on reading it
    await hub.on_upstream_notification("docs", changed)  # the same change, heard on the other stream
    assert received(alice) == []
    await view.get("tools")  # the client's new list (a fetch)
    await hub.on_upstream_notification("docs", changed)
    assert [m["method"] for m in received(alice)] == ["notifications/tools/list_changed"]


async def test_a_change_after_someone_listed_is_announced_even_without_a_new_fetch() -> None:
    """Review: the mark was cleared only when a fetch started, so a client that listed and got the earlier list
    (or joined a fetch begun before the change) heard nothing of the next change."""
    _, _, view, _ = setup()
    lists = view._lists
    entry = lists.entry("docs", "tools")
    entry.fetched_at, entry.stale = time.monotonic(), False  # a list fetched earlier, still fresh
    assert lists.announce("docs", "tools") and not lists.announce("docs", "tools")
    assert await lists.get("docs", "tools") is entry  # someone lists: served from the cache, no fetch
    assert lists.announce("docs", "tools")
