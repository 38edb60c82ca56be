"""A roots/list on an upstream session of one caller's own (upstream/session.py `use_roots_client`,
`_ask_roots_client`), in process, with the scripted upstream of test_upstream_session.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from manifold.config.models import UpstreamConfig
from manifold.upstream.session import JsonRpcSession
from tests.unit.test_upstream_session import JSON, ScriptedUpstream, Sink
from tests.waiting import within

pytestmark = pytest.mark.anyio
ROOTS: JSON = {"result": {"roots": [{"uri": "file:///work"}]}}


class RootsSink(Sink):
    """A client with roots; records whether each question was asked `shared`."""

    def __init__(self, *, roots: bool = True) -> None:
        super().__init__(answer=ROOTS)
        self.client_capabilities = {"roots": {}} if roots else {}
        self.shared: list[bool] = []

    async def request(self, method: str, params: JSON | None, *, shared: bool = False) -> JSON:
        self.shared.append(shared)
        return await super().request(method, params, shared=shared)


async def asks_roots(upstream: ScriptedUpstream, message: JSON) -> JSON:
    return {"result": {"answer": await upstream.ask("roots/list", {}, message)}}


async def owned(handlers: dict[str, Any], connect_timeout: float) -> tuple[JsonRpcSession, ScriptedUpstream]:
    upstream = ScriptedUpstream(handlers)  # stdio: nothing the server asks names a call
    config = UpstreamConfig(
        transport="stdio", command="scripted", protocol="2025-11-25", connect_timeout=connect_timeout
    )
    session = JsonRpcSession("up", config, upstream, owned=True)
    await session.connect()
    return session, upstream


async def test_a_call_whose_client_has_no_roots_is_not_held_waiting_for_a_client_that_has() -> None:
    """Was (review): a stdio tool asking roots/list during the call of a client without roots (a 2026-07-28
    client, a stateless gateway's) waited connect_timeout for a 2025-11-25 client session of the caller's that
    never came: 10 s added to every such call. It is refused at once, as before."""
    session, _ = await owned({"tools/call": asks_roots}, connect_timeout=30)
    try:
        reply = await within(session.request("tools/call", {"name": "x"}, sink=RootsSink(roots=False)), timeout=5)
        assert reply["result"]["answer"]["error"]["code"] == -32601
    finally:
        await session.aclose()


async def test_a_question_refused_for_want_of_a_client_is_asked_again_once_one_comes() -> None:
    """Was (review): the session was opened by a list (a client lists when it starts), its server's roots/list
    waited connect_timeout for a call of the caller's and was refused, and the server never asked again. The
    client known, once no call is in flight, the server hears that the roots changed (and asks again)."""
    session, upstream = await owned({}, connect_timeout=0.1)
    try:
        answer = await within(upstream.ask("roots/list", {}, {"id": 0}))
        assert answer["error"]["code"] == -32601
        session.use_roots_client(RootsSink(roots=False))  # a client without roots: nothing to ask it
        session.use_roots_client(RootsSink())
        [told] = await upstream.until_notified("notifications/roots/list_changed")
        assert "id" not in told
        session.use_roots_client(RootsSink())  # told once, not at every call
        await asyncio.sleep(0)
        assert len([m for m in upstream.notified if m["method"] == "notifications/roots/list_changed"]) == 1
    finally:
        await session.aclose()


async def test_a_roots_question_naming_no_call_is_not_withdrawn_with_the_call_it_rode_on() -> None:
    """Roots are the client session's: on stdio the server's question right after its handshake, while the call
    that opened the session runs, goes with that call, but is not withdrawn when the call ends first."""
    session, _ = await owned({"tools/call": asks_roots}, connect_timeout=30)
    sink = RootsSink()
    try:
        reply = await within(session.request("tools/call", {"name": "x"}, sink=sink))
        assert reply["result"]["answer"]["result"] == ROOTS["result"]
        assert sink.shared == [True]
    finally:
        await session.aclose()
