"""One POSTed request's response channel (relay/response_channel.py) and the era touch-ups on a result
(relay/era_adapt.py), in process: the ASGI `send` is a list of what would have gone to the client."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from manifold.protocol import META_SERVER_INFO, METHOD_NOT_FOUND, Era
from manifold.relay.era_adapt import adapt_to_era
from manifold.relay.hub import Listener
from manifold.relay.response_channel import ResponseChannel
from manifold.relay.sessions import ClientSession, PendingReplies

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]
GATEWAY = {"name": "manifold/vs", "version": "1"}


class Wire:
    """What the client receives."""

    def __init__(self) -> None:
        self.messages: list[JSON] = []
        self.written = asyncio.Event()

    async def send(self, message: JSON) -> None:
        self.messages.append(message)
        self.written.set()

    def headers(self) -> dict[bytes, bytes]:
        return dict(self.messages[0]["headers"])

    def events(self) -> list[JSON]:
        """The SSE events' payloads, in order."""
        out = []
        for m in self.messages[1:]:
            for line in m["body"].split(b"\n"):
                if line.startswith(b"data: "):
                    out.append(orjson.loads(line[len(b"data: ") :]))
        return out


def session(log_level: str | None = None, caps: JSON | None = None) -> ClientSession:
    return ClientSession(
        id="s1",
        server_id="vs",
        principal_id="alice",
        protocol_version="2025-11-25",
        client_capabilities=caps or {},
        client_info={},
        listener=Listener(view=None, kinds=set()),  # its view is never consulted here
        log_level=log_level,
    )


def channel(
    wire: Wire, era: Era = Era.HANDSHAKE, client: ClientSession | None = None, pending: PendingReplies | None = None
) -> ResponseChannel:
    client = client or session()
    return ResponseChannel(
        wire.send,
        7,
        sse_ok=True,
        session=client,
        caps=client.client_capabilities,
        era=era,
        pending=pending or PendingReplies(),
        principal_id="alice",
    )


def progress(n: int) -> JSON:
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "p", "progress": n}}


def log_message(level: str) -> JSON:
    return {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": level, "data": level}}


async def test_a_reply_with_nothing_before_it_is_one_json_body() -> None:
    wire = Wire()
    await channel(wire).finish(b'{"jsonrpc":"2.0","id":7,"result":{}}')
    assert wire.headers()[b"content-type"] == b"application/json"
    assert wire.headers()[b"content-length"] == b"36"
    assert wire.messages[1]["body"] == b'{"jsonrpc":"2.0","id":7,"result":{}}'


async def test_side_traffic_switches_the_response_to_an_event_stream_ending_with_the_reply() -> None:
    wire = Wire()
    ch = channel(wire)
    await ch.notify(progress(1))
    await ch.notify(progress(2))
    await ch.finish(b'{"jsonrpc":"2.0","id":7,"result":{}}')
    assert wire.headers()[b"content-type"] == b"text/event-stream"
    assert [e.get("params", {}).get("progress") for e in wire.events()] == [1, 2, None]
    assert wire.messages[-1]["more_body"] is False


async def test_log_messages_below_the_clients_level_are_not_sent() -> None:
    wire = Wire()
    ch = channel(wire, client=session(log_level="warning"))
    for level in ("debug", "info", "warning", "error"):
        await ch.notify(log_message(level))
    await ch.written()  # events are written by the channel's own task
    assert [e["params"]["level"] for e in wire.events()] == ["warning", "error"]


async def test_a_2026_07_28_response_carries_no_server_to_client_request() -> None:
    wire = Wire()
    reply = await channel(wire, Era.MODERN, session(caps={"sampling": {}})).request("sampling/createMessage", {})
    assert reply["error"]["code"] == METHOD_NOT_FOUND
    assert wire.messages == []  # nothing was written: the response is still one JSON body


async def test_a_handshake_client_is_asked_on_the_stream_and_its_answer_comes_back() -> None:
    wire, pending = Wire(), PendingReplies()
    ch = channel(wire, client=session(caps={"sampling": {}}), pending=pending)
    asking = asyncio.ensure_future(ch.request("sampling/createMessage", {"messages": []}))
    await wire.written.wait()
    [question] = wire.events()
    assert question["method"] == "sampling/createMessage"
    assert pending.resolve({"jsonrpc": "2.0", "id": question["id"], "result": {"content": "4"}}, "alice")
    assert await asking == {"result": {"content": "4"}}


async def test_a_request_for_a_capability_the_client_did_not_declare_is_refused() -> None:
    wire = Wire()
    reply = await channel(wire).request("elicitation/create", {"mode": "form"})
    assert reply["error"]["code"] == METHOD_NOT_FOUND and "elicitation" in reply["error"]["message"]


# ---- era touch-ups ----------------------------------------------------------------------------------------


def test_a_2026_07_28_result_always_says_it_is_complete_and_names_the_gateway() -> None:
    upstream = {"result": {"content": [], "_meta": {META_SERVER_INFO: {"name": "upstream"}, "x": 1}}}
    adapted = adapt_to_era(upstream, Era.MODERN, GATEWAY)
    assert adapted == {
        "result": {"content": [], "resultType": "complete", "_meta": {META_SERVER_INFO: GATEWAY, "x": 1}}
    }
    assert upstream["result"]["_meta"][META_SERVER_INFO] == {"name": "upstream"}  # the upstream's dict is untouched


def test_a_handshake_result_loses_the_upstreams_server_info_only() -> None:
    only = {"result": {"content": [], "_meta": {META_SERVER_INFO: {"name": "upstream"}}}}
    more = {"result": {"content": [], "_meta": {META_SERVER_INFO: {"name": "upstream"}, "x": 1}}}
    assert adapt_to_era(only, Era.HANDSHAKE, GATEWAY) == {"result": {"content": []}}
    assert adapt_to_era(more, Era.HANDSHAKE, GATEWAY) == {"result": {"content": [], "_meta": {"x": 1}}}


def test_a_result_that_needs_nothing_is_passed_on_as_the_same_object() -> None:
    handshake = {"result": {"content": []}}
    modern = {"result": {"content": [], "resultType": "complete"}}
    error = {"error": {"code": -32602, "message": "no"}}
    assert adapt_to_era(handshake, Era.HANDSHAKE, GATEWAY) is handshake
    assert adapt_to_era(modern, Era.MODERN, GATEWAY) is modern
    assert adapt_to_era(error, Era.MODERN, GATEWAY) is error


async def test_a_notification_after_the_reply_is_dropped_not_sent_after_the_last_body() -> None:
    """Was (second review): a log message or progress routed to a call just as its reply went was sent after the
    response's last body, which the ASGI server refuses (a RuntimeError in the log)."""
    for side_traffic_first in (False, True):
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
            if sent and sent[-1].get("type") == "http.response.body" and not sent[-1].get("more_body", False):
                raise RuntimeError("Unexpected ASGI message sent, after response already completed.")
            sent.append(message)

        client = session()
        replying = ResponseChannel(
            send, 7, sse_ok=True, session=client, caps=client.client_capabilities, era=Era.HANDSHAKE,
            pending=PendingReplies(), principal_id="alice",
        )  # fmt: skip
        if side_traffic_first:
            await replying.notify(progress(1))
        await replying.finish(b'{"jsonrpc":"2.0","id":7,"result":{}}')
        await replying.notify(progress(2))
        assert not sent[-1].get("more_body", False) and b"7" in sent[-1]["body"]


class StalledWire(Wire):
    """A client that stopped reading: once the response has started, a write waits until `resume` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.resume = asyncio.Event()

    async def send(self, message: JSON) -> None:
        if message["type"] == "http.response.body":
            await self.resume.wait()
        await super().send(message)


async def test_a_client_that_stopped_reading_never_holds_up_the_upstreams_reader(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Was (resilience review): `notify` waited for the client to take each event, and its caller is the
    upstream's reader, which on stdio serves every caller: one client that stopped reading held the upstream
    for everyone (every other call timed out). Now events wait in a bounded backlog; the reply still comes last."""
    wire = StalledWire()
    ch = channel(wire)
    big = {"jsonrpc": "2.0", "method": "notifications/progress",
           "params": {"progressToken": "p", "progress": 1, "message": "x" * 1000}}  # fmt: skip
    async with asyncio.timeout(5):  # each notify returns at once, stalled client or not
        for _ in range(5_000):  # ~5 MB
            await ch.notify(big)
    assert "is not reading its response stream" in caplog.text
    finished = asyncio.ensure_future(ch.finish(b'{"jsonrpc":"2.0","id":7,"result":{}}'))
    await asyncio.sleep(0)
    assert not finished.done()  # the reply waits for what was queued before it
    wire.resume.set()
    await asyncio.wait_for(finished, 5)
    events = wire.events()
    assert events[-1] == {"jsonrpc": "2.0", "id": 7, "result": {}}
    assert 500 < len(events) - 1 < 1100  # the first ~1 MB of progress, the rest dropped


async def test_one_event_larger_than_the_backlog_bound_still_reaches_a_client_that_reads() -> None:
    """Review: the bound dropped a single progress notification over 1 MB even for a client reading normally
    (upstreams may send lines up to 32 MB), and logged that the client was not reading."""
    wire = Wire()
    ch = channel(wire)
    big = {"jsonrpc": "2.0", "method": "notifications/progress",
           "params": {"progressToken": "p", "progress": 1, "message": "x" * (2 * 1024 * 1024)}}  # fmt: skip
    await ch.notify(big)
    await ch.written()
    assert [e["params"]["progress"] for e in wire.events()] == [1]
