"""What a held 2025-11-25 session keeps in memory (issue 14 item 5: ≤ 10 kB per session with its GET stream;
bench/scale_sessions.py measures it): a held GET stream keeps none of its request's headers, and sessions
whose clients send equal capabilities and clientInfo share one copy of each — and everything still works."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest

from manifold.config.models import LimitsSettings
from manifold.principal import ANONYMOUS
from manifold.relay.access import AllowAll
from manifold.relay.hub import ALL_LIST_KINDS, Hub, Listener
from manifold.relay.sessions import SessionSeal, SessionStore, SharedObjects
from tests.unit.test_relay_inbound import Relay
from tests.waiting import within

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]


class HeldClient:
    """The client side of one GET stream, in process: what was sent to it, and a `receive` that waits until
    the client goes away."""

    def __init__(self) -> None:
        self.messages: list[JSON] = []
        self.changed = asyncio.Event()
        self.gone = asyncio.Event()

    async def send(self, message: JSON) -> None:
        self.messages.append(message)
        self.changed.set()

    async def receive(self) -> JSON:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])

    async def until_body_has(self, text: bytes) -> None:
        async def seen() -> None:
            while text not in self.body():
                self.changed.clear()
                await self.changed.wait()

        await within(seen(), what=f"{text!r} on the stream")


async def test_a_held_get_stream_keeps_none_of_its_requests_headers_and_still_delivers() -> None:
    relay = Relay()
    sid = await relay.session()
    raw = [
        (b"accept", b"text/event-stream"),
        (b"mcp-session-id", sid.encode()),
        (b"mcp-protocol-version", b"2025-11-25"),
        (b"authorization", b"Bearer mfk_" + b"x" * 40),
    ]
    scope: JSON = {"method": "GET", "headers": raw, "_headers": {k.decode(): v.decode() for k, v in raw}}
    decoded = scope["_headers"]
    client = HeldClient()
    stream = asyncio.ensure_future(relay.http(scope, client.receive, client.send, relay.view, relay.principal, None))
    await client.until_body_has(b": stream open")
    assert client.messages[0]["status"] == 200
    # Held: the raw list (which uvicorn's connection holds too) and the decoded dict are empty, in place.
    assert raw == [] and scope["headers"] == [] and decoded == {} and scope["_headers"] == {}

    session = relay.http.sessions.get(sid, relay.principal.id)
    assert session is not None and session.listener.streaming
    session.listener.push({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    await client.until_body_has(b"notifications/tools/list_changed")

    client.gone.set()  # the client goes away: the stream ends and stops counting against the caller
    await within(stream, what="the stream ending")
    assert not session.listener.streaming
    assert relay.http.sessions.open_streams(relay.principal.id) == 0


async def test_a_refused_get_keeps_its_headers() -> None:
    """Only a stream that is held lets go of them (a refusal is answered at once, nothing to save)."""
    relay = Relay()
    raw = [(b"accept", b"text/event-stream"), (b"mcp-session-id", b"no-such-session")]
    scope: JSON = {"method": "GET", "headers": list(raw), "_headers": {k.decode(): v.decode() for k, v in raw}}
    client = HeldClient()
    await within(relay.http(scope, client.receive, client.send, relay.view, relay.principal, None))
    assert client.messages[0]["status"] == 404
    assert scope["headers"] == raw and scope["_headers"]["mcp-session-id"] == "no-such-session"


def sessions_store(seal: SessionSeal | None = None) -> SessionStore:
    hub = Hub(None, AllowAll())  # type: ignore[arg-type]  # the list cache is never consulted here
    return SessionStore(hub, LimitsSettings(), seal=seal)


def open_session(sessions: SessionStore, principal_id: str, caps: JSON, info: JSON):
    return sessions.create(
        server_id="web",
        principal_id=principal_id,
        protocol_version="2025-11-25",
        client_capabilities=caps,
        client_info=info,
        listener=Listener(view=None, kinds=ALL_LIST_KINDS),  # type: ignore[arg-type]
    )


def capabilities() -> JSON:  # a fresh dict each time, as parsed from each client's initialize
    return {"roots": {"listChanged": True}, "sampling": {}, "elicitation": {"form": {}, "url": {}}}


def test_equal_client_capabilities_and_info_are_held_once() -> None:
    sessions = sessions_store(SessionSeal([b"k" * 32]))
    info = {"name": "ide", "version": "1.2.3"}
    first = open_session(sessions, "user:alice", capabilities(), dict(info))
    second = open_session(sessions, "user:bob", capabilities(), dict(info))
    # Equal values, in another key order, from another principal: the one shared copy.
    reordered = dict(reversed(list(capabilities().items())))
    third = open_session(sessions, "user:bob", reordered, {"version": "1.2.3", "name": "ide"})
    assert first.client_capabilities is second.client_capabilities is third.client_capabilities
    assert first.client_info is second.client_info is third.client_info
    other = open_session(sessions, "user:carol", {"sampling": {}}, {"name": "cli", "version": "9"})
    assert other.client_capabilities == {"sampling": {}} and other.client_info == {"name": "cli", "version": "9"}
    assert other.client_capabilities is not first.client_capabilities
    # The sealed id still carries each session's own values, for a replica that adopts it.
    seal = SessionSeal([b"k" * 32])
    opened = seal.open(third.id)
    assert opened is not None and opened.client_capabilities == capabilities()
    assert opened.client_info == {"name": "ide", "version": "1.2.3"}


async def test_an_adopted_session_shares_them_too() -> None:
    seal = SessionSeal([b"k" * 32])
    here, there = sessions_store(seal), sessions_store(seal)
    created = open_session(here, ANONYMOUS.id, capabilities(), {"name": "ide"})
    local = open_session(there, ANONYMOUS.id, capabilities(), {"name": "ide"})
    view: Any = type("View", (), {"id": "web"})()
    adopted = await there.adopt(created.id, ANONYMOUS, view)
    assert adopted is not None and adopted.id == created.id
    assert adopted.client_capabilities is local.client_capabilities
    assert adopted.client_info is local.client_info
    assert adopted.listener.kinds is ALL_LIST_KINDS


def test_the_shared_copies_are_bounded() -> None:
    shared = SharedObjects(max_entries=3, max_bytes=64)
    for n in range(10):
        shared.get({"name": f"client-{n}"})
    assert len(shared) == 3
    recent = {"name": "client-9"}
    assert shared.get(dict(recent)) is shared.get(dict(recent))
    big = {"blob": base64.b64encode(b"x" * 100).decode()}
    assert len(orjson.dumps(big)) > 64
    assert shared.get(big) is big and shared.get(dict(big)) is not big  # not kept: too big to be worth it
    odd: JSON = {"n": 2**70}  # what cannot be serialised is kept as it is
    assert shared.get(odd) is odd
