"""The JSON-RPC session to one upstream (upstream/session.py), in process: the transport is a scripted
upstream that answers each method with a handler of the test's choosing and records every message."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from manifold.config.models import UpstreamConfig
from manifold.protocol import Era
from manifold.upstream.base import (
    STANDALONE,
    Deliver,
    ErrorKind,
    OnClosed,
    UpstreamError,
    UpstreamSessionLost,
    UpstreamTimeout,
)
from manifold.upstream.session import JsonRpcSession
from tests.waiting import wait_for, within

pytestmark = pytest.mark.anyio

JSON = dict[str, Any]
Handler = Callable[["ScriptedUpstream", JSON], Awaitable[JSON | None]]
HANDSHAKE = "2025-11-25"
MODERN = "2026-07-28"
CAPABILITIES: JSON = {"tools": {}, "resources": {}}


async def initialize(upstream: ScriptedUpstream, message: JSON) -> JSON:
    return {
        "result": {
            "protocolVersion": message["params"]["protocolVersion"],
            "capabilities": CAPABILITIES,
            "serverInfo": {"name": "scripted", "version": "1"},
            "instructions": "be nice",
        }
    }


async def discover(upstream: ScriptedUpstream, message: JSON) -> JSON:
    return {
        "result": {
            "supportedVersions": [MODERN],
            "capabilities": CAPABILITIES,
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "scripted-modern", "version": "2"}},
        }
    }


async def no_discover(upstream: ScriptedUpstream, message: JSON) -> JSON:
    return {"error": {"code": -32601, "message": "Method not found"}}


async def echo(upstream: ScriptedUpstream, message: JSON) -> JSON:
    return {"result": {"echo": message["params"]}}


async def never(upstream: ScriptedUpstream, message: JSON) -> JSON | None:
    await asyncio.Event().wait()
    return None


class ScriptedUpstream:
    """A `MessageTransport` that is also the upstream.

    kind "stdio" answers on a task of its own after the write, relating nothing (like a pipe); kind "http"
    answers before `request` returns, relating every message to the request (like a POST's response stream)."""

    def __init__(self, handlers: dict[str, Handler], *, kind: str = "stdio") -> None:
        self.kind = kind
        self.handlers = {"initialize": initialize, "server/discover": discover, **handlers}
        self.received: list[JSON] = []  # requests, in arrival order
        self.headers: dict[Any, dict[str, str]] = {}  # request id -> headers it came with
        self.notified: list[JSON] = []  # notifications the session sent
        self.replied: list[Any] = []  # ids of the requests answered, in the order they were answered
        self.answers: dict[Any, JSON] = {}  # server→client request id -> the session's reply
        self.negotiated: str | None = None
        self.lost = False  # requests fail as undelivered (the process is gone)
        self._deliver: Deliver | None = None
        self._on_closed: OnClosed | None = None
        self._arrived = asyncio.Condition()
        self._answered: dict[Any, asyncio.Future[JSON]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- MessageTransport

    async def connect(self, deliver: Deliver, on_closed: OnClosed) -> None:
        self._deliver = deliver
        self._on_closed = on_closed

    async def request(self, request_id: int, body: bytes, headers: dict[str, str]) -> None:
        if self.lost:
            raise UpstreamSessionLost("up", "process is not running")
        message = orjson.loads(body)
        assert message["id"] == request_id
        self.headers[request_id] = headers
        async with self._arrived:
            self.received.append(message)
            self._arrived.notify_all()
        if self.kind == "http":
            await self._serve(message)
        else:
            task = asyncio.ensure_future(self._serve(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def send(self, body: bytes, headers: dict[str, str]) -> None:
        message = orjson.loads(body)
        if "method" in message:
            async with self._arrived:
                self.notified.append(message)
                self._arrived.notify_all()
        else:
            self.answers[message["id"]] = message
            future = self._answered.get(message["id"])
            if future is not None and not future.done():
                future.set_result(message)

    async def open_change_channel(self, deliver: Deliver, ready: asyncio.Event) -> None:
        ready.set()

    def set_negotiated(self, protocol_version: str) -> None:
        self.negotiated = protocol_version

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    # ---- the upstream's side

    async def _serve(self, message: JSON) -> None:
        reply = await self.handlers[message["method"]](self, message)
        if reply is not None:
            self.replied.append(message["id"])
            await self.emit({"jsonrpc": "2.0", "id": message["id"], **reply}, message)

    async def emit(self, message: JSON, about: JSON | None = None) -> None:
        """Send a message to the session; on "http" it travels on the response stream of request `about`."""
        assert self._deliver is not None
        await self._deliver(message, about["id"] if about is not None and self.kind == "http" else None)

    async def ask(self, method: str, params: JSON, about: JSON) -> JSON:
        """A server→client request while serving `about`; returns the session's reply."""
        request_id = f"s{next(self._ids)}"
        future = self._answered[request_id] = asyncio.get_running_loop().create_future()
        await self.emit({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}, about)
        return await future

    def close_by_itself(self, reason: str) -> None:
        assert self._on_closed is not None
        self._on_closed(UpstreamError("up", reason, kind=ErrorKind.CLOSED))

    async def until_received(self, method: str, count: int = 1) -> list[JSON]:
        """Wait until `count` requests with this method have arrived; returns them."""

        def arrived() -> list[JSON]:
            return [m for m in self.received if m["method"] == method]

        async def wait() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(arrived()) >= count)

        await within(wait(), what=f"{count} {method} request(s) at the upstream")
        return arrived()

    async def until_notified(self, method: str) -> list[JSON]:
        """Wait until the session has sent a notification with this method; returns those it sent."""

        def sent() -> list[JSON]:
            return [m for m in self.notified if m["method"] == method]

        async def wait() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: bool(sent()))

        await within(wait(), what=f"{method} at the upstream")
        return sent()


class Sink:
    """A RequestSink that records what reaches it and answers server→client requests with `answer`."""

    def __init__(self, answer: JSON | None = None, principal_id: str = "alice", client_session: object = None) -> None:
        self.client_session = client_session
        self.notifications: list[JSON] = []
        self.requests: list[tuple[str, JSON | None]] = []
        self.answer = answer or {"result": {"content": {"type": "text", "text": "from the client"}}}
        self.client_capabilities: JSON = {"sampling": {}}
        self.principal_id = principal_id

    async def notify(self, message: JSON) -> None:
        self.notifications.append(message)

    async def request(self, method: str, params: JSON | None, *, shared: bool = False) -> JSON:
        self.requests.append((method, params))
        return self.answer


async def connected(
    handlers: dict[str, Handler] | None = None,
    *,
    protocol: str = HANDSHAKE,
    kind: str = "stdio",
    call_timeout: float = 5.0,
    on_notification: Callable[[str, JSON], Awaitable[None]] | None = None,
) -> tuple[JsonRpcSession, ScriptedUpstream]:
    upstream = ScriptedUpstream(handlers or {}, kind=kind)
    config = UpstreamConfig(transport="stdio", command="scripted", protocol=protocol, call_timeout=call_timeout)
    session = JsonRpcSession("up", config, upstream, on_notification)
    await session.connect()
    return session, upstream


# ---- handshake, per era ---------------------------------------------------------------------------------------


async def test_handshake_era_initializes_then_says_initialized() -> None:
    session, upstream = await connected()
    try:
        [init] = upstream.received
        assert init["method"] == "initialize"
        assert init["params"]["protocolVersion"] == HANDSHAKE
        assert init["params"]["clientInfo"]["name"] == "manifold"
        assert set(init["params"]["capabilities"]) >= {"sampling", "elicitation", "roots"}
        assert [m["method"] for m in upstream.notified] == ["notifications/initialized"]
        assert (session.era, session.protocol_version, upstream.negotiated) == (Era.HANDSHAKE, HANDSHAKE, HANDSHAKE)
        assert session.server_info == {"name": "scripted", "version": "1"}
        assert session.capabilities == CAPABILITIES and session.instructions == "be nice"
    finally:
        await session.aclose()


async def test_modern_era_discovers_and_stamps_every_request() -> None:
    session, upstream = await connected({"tools/call": echo}, protocol=MODERN, kind="http")
    try:
        [discovery] = upstream.received
        assert discovery["method"] == "server/discover"
        assert discovery["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] == MODERN
        assert upstream.notified == []  # no initialized notification in this era
        assert (session.era, session.protocol_version, upstream.negotiated) == (Era.MODERN, MODERN, MODERN)
        assert session.server_info == {"name": "scripted-modern", "version": "2"}

        reply = await session.request("tools/call", {"name": "echo", "arguments": {}, "_meta": {"mine": 1}})
        meta = reply["result"]["echo"]["_meta"]
        assert meta["mine"] == 1  # the caller's own _meta survives
        assert meta["io.modelcontextprotocol/protocolVersion"] == MODERN
        assert meta["io.modelcontextprotocol/clientInfo"]["name"] == "manifold"
        headers = upstream.headers[upstream.received[-1]["id"]]
        assert headers["mcp-protocol-version"] == MODERN
        assert (headers["mcp-method"], headers["mcp-name"]) == ("tools/call", "echo")
    finally:
        await session.aclose()


async def test_auto_falls_back_to_initialize_when_discover_is_unknown() -> None:
    session, upstream = await connected({"server/discover": no_discover}, protocol="auto")
    try:
        assert [m["method"] for m in upstream.received] == ["server/discover", "initialize"]
        assert session.era is Era.HANDSHAKE
    finally:
        await session.aclose()


async def test_auto_takes_the_modern_era_when_discover_answers() -> None:
    session, upstream = await connected(protocol="auto")
    try:
        assert [m["method"] for m in upstream.received] == ["server/discover"]
        assert session.era is Era.MODERN
    finally:
        await session.aclose()


async def test_auto_refuses_an_upstream_that_speaks_only_unknown_versions() -> None:
    async def future_only(upstream: ScriptedUpstream, message: JSON) -> JSON:
        return {"error": {"code": -32022, "message": "unsupported", "data": {"supported": ["2099-01-01"]}}}

    with pytest.raises(UpstreamError, match="^upstream 'up' speaks only protocol versions this gateway does not$"):
        await connected({"server/discover": future_only}, protocol="auto")


async def test_a_refused_initialize_fails_the_connect_naming_the_upstream() -> None:
    async def refuse(upstream: ScriptedUpstream, message: JSON) -> JSON:
        return {"error": {"code": -32600, "message": "go away"}}

    with pytest.raises(UpstreamError, match="^upstream 'up' refused initialize: go away$") as caught:
        await connected({"initialize": refuse})
    assert caught.value.kind is ErrorKind.PROTOCOL


# ---- ids and progress tokens ----------------------------------------------------------------------------------


async def test_concurrent_requests_get_their_own_ids_and_their_own_replies() -> None:
    both_here = asyncio.Event()
    order: list[int] = []

    async def answer_last_first(upstream: ScriptedUpstream, message: JSON) -> JSON:
        order.append(message["id"])
        if len(order) == 2:
            both_here.set()  # and answer at once: the second arrival answers first
        else:
            await both_here.wait()
        return {"result": {"text": message["params"]["arguments"]["text"]}}

    session, upstream = await connected({"tools/call": answer_last_first})
    try:
        replies = await within(
            asyncio.gather(
                *(session.request("tools/call", {"name": "echo", "arguments": {"text": t}}) for t in ("a", "b"))
            )
        )
        assert [r["result"]["text"] for r in replies] == ["a", "b"]
        calls = await upstream.until_received("tools/call", 2)
        ids = [m["id"] for m in calls]
        assert len(set(ids)) == 2 and init_id(upstream) not in ids
        assert upstream.replied[-2:] == [ids[1], ids[0]]
    finally:
        await session.aclose()


def init_id(upstream: ScriptedUpstream) -> int:
    return upstream.received[0]["id"]


async def test_progress_tokens_are_rewritten_and_restored_per_caller() -> None:
    async def progress(upstream: ScriptedUpstream, message: JSON) -> JSON:
        token = message["params"]["_meta"]["progressToken"]
        for step in (1, 2):
            await upstream.emit(
                {
                    "jsonrpc": "2.0",
                    "method": "notifications/progress",
                    "params": {"progressToken": token, "progress": step},
                }
            )
        return {"result": {}}

    session, upstream = await connected({"tools/call": progress})
    sinks = [Sink(), Sink()]
    try:
        params = {"name": "progress", "arguments": {}, "_meta": {"progressToken": "same"}}
        await within(asyncio.gather(*(session.request("tools/call", params, sink=sink) for sink in sinks)))
        upstream_tokens = [m["params"]["_meta"]["progressToken"] for m in upstream.received[1:]]
        assert upstream_tokens == [m["id"] for m in upstream.received[1:]]  # each request's own id, never "same"
        for sink in sinks:
            assert [(n["params"]["progressToken"], n["params"]["progress"]) for n in sink.notifications] == [
                ("same", 1),
                ("same", 2),
            ]
    finally:
        await session.aclose()


async def test_a_notification_from_the_get_stream_reaches_no_call_not_even_the_only_one_in_flight() -> None:
    """Was (found with server-everything): a log message on the upstream's GET stream, which belongs to no
    request, went to the one call in flight, so with a shared upstream session one user's call received the
    log messages of a timer another user had turned on. A notification about the call, on its own stream, and
    a request from the GET stream (answered by the one call in flight, as documented) still reach it."""

    def log(data: str) -> JSON:
        return {"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": data}}

    async def call(upstream: ScriptedUpstream, message: JSON) -> JSON:
        assert upstream._deliver is not None
        await upstream._deliver(log("someone else's timer"), STANDALONE)
        await upstream.emit(log("about this call"), message)
        request = {"jsonrpc": "2.0", "id": "g1", "method": "roots/list", "params": {}}
        future = upstream._answered["g1"] = asyncio.get_running_loop().create_future()
        await upstream._deliver(request, STANDALONE)
        return {"result": {"roots": await future}}

    session, upstream = await connected({"tools/call": call}, kind="http")
    sink = Sink(answer={"result": {"roots": []}})
    sink.client_capabilities = {"roots": {}}  # a client that has roots (one without is answered for: see below)
    try:
        reply = await within(session.request("tools/call", {"name": "x"}, sink=sink))
        assert [n["params"]["data"] for n in sink.notifications] == ["about this call"]
        assert sink.requests == [("roots/list", {})] and reply["result"]["roots"]["result"] == {"roots": []}
    finally:
        await session.aclose()


# ---- server→client requests -----------------------------------------------------------------------------------


async def sample(upstream: ScriptedUpstream, message: JSON) -> JSON:
    answer = await upstream.ask("sampling/createMessage", {"messages": []}, message)
    return {"result": {"answer": answer}}


@pytest.mark.parametrize("kind", ["stdio", "http"])
async def test_a_server_request_goes_to_the_sink_of_the_request_it_serves(kind: str) -> None:
    session, upstream = await connected({"tools/call": sample}, kind=kind)
    sink = Sink()
    try:
        reply = await within(session.request("tools/call", {"name": "sample"}, sink=sink))
        assert sink.requests == [("sampling/createMessage", {"messages": []})]
        answer = reply["result"]["answer"]
        assert answer["id"] == "s1"  # the upstream's own id comes back unchanged
        assert answer["result"] == {"content": {"type": "text", "text": "from the client"}}
    finally:
        await session.aclose()


async def test_a_server_request_that_cannot_be_related_to_one_call_is_refused_not_misrouted() -> None:
    release = asyncio.Event()

    async def hold(upstream: ScriptedUpstream, message: JSON) -> JSON:
        await release.wait()
        return {"result": {}}

    session, upstream = await connected({"tools/call": sample, "hold": hold})
    sinks = [Sink(), Sink()]
    try:
        holding = asyncio.ensure_future(session.request("hold", {}, sink=sinks[0]))
        await upstream.until_received("hold")
        reply = await within(session.request("tools/call", {"name": "sample"}, sink=sinks[1]))
        assert reply["result"]["answer"]["error"]["code"] == -32601  # stdio cannot tell which call asked
        assert sinks[0].requests == [] and sinks[1].requests == []
        release.set()
        await within(holding)
    finally:
        await session.aclose()


async def test_a_call_given_up_for_one_caller_holds_off_the_guess_for_anothers_call() -> None:
    """Alice's call is cancelled (the upstream goes on with it); the upstream then asks a question naming no call
    while Bob's call is the only one in flight: it is refused, not put to Bob. A request of the gateway's own
    (no client behind it) given up holds nothing off."""
    release = asyncio.Event()

    async def hold(upstream: ScriptedUpstream, message: JSON) -> JSON:
        await release.wait()
        return {"result": {}}

    session, upstream = await connected({"tools/call": sample, "hold": hold, "tools/list": hold})
    alice, bob = Sink(principal_id="alice"), Sink(principal_id="bob")
    try:
        given_up = asyncio.ensure_future(session.request("hold", {}, sink=alice))
        await upstream.until_received("hold")
        given_up.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await given_up
        reply = await within(session.request("tools/call", {"name": "sample"}, sink=bob))
        assert reply["result"]["answer"]["error"]["code"] == -32601
        assert "gave up" in reply["result"]["answer"]["error"]["message"]
        assert bob.requests == []
        again = await within(session.request("tools/call", {"name": "sample"}, sink=alice))  # hers: asked
        assert alice.requests and "error" not in again["result"]["answer"]
    finally:
        release.set()
        await session.aclose()

    release = asyncio.Event()
    session, upstream = await connected({"tools/call": sample, "tools/list": hold}, call_timeout=0.2)
    bob = Sink(principal_id="bob")
    try:
        with contextlib.suppress(UpstreamError):
            await session.request("tools/list", {}, timeout=0.05)  # the gateway's own, timed out
        reply = await within(session.request("tools/call", {"name": "sample"}, sink=bob))
        assert "error" not in reply["result"]["answer"] and len(bob.requests) == 1
    finally:
        release.set()
        await session.aclose()


async def test_a_ping_from_the_upstream_is_answered_without_bothering_the_client() -> None:
    async def ping_first(upstream: ScriptedUpstream, message: JSON) -> JSON:
        pong = await upstream.ask("ping", {}, message)
        return {"result": {"pong": pong}}

    session, _ = await connected({"tools/call": ping_first})
    sink = Sink()
    try:
        reply = await within(session.request("tools/call", {"name": "x"}, sink=sink))
        assert reply["result"]["pong"]["result"] == {}
        assert sink.requests == []
    finally:
        await session.aclose()


async def test_list_changed_goes_to_the_session_callback_not_to_a_request() -> None:
    heard: list[tuple[str, JSON]] = []

    async def on_notification(upstream_id: str, message: JSON) -> None:
        heard.append((upstream_id, message))

    async def change(upstream: ScriptedUpstream, message: JSON) -> JSON:
        await upstream.emit({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}, message)
        return {"result": {}}

    session, _ = await connected({"tools/call": change}, kind="http", on_notification=on_notification)
    sink = Sink()
    try:
        await within(session.request("tools/call", {"name": "add_tool"}, sink=sink))
        assert heard == [("up", {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})]
        assert sink.notifications == []
    finally:
        await session.aclose()


# ---- cancellation, timeouts, lost sessions --------------------------------------------------------------------


async def test_cancelling_the_caller_tells_the_upstream_which_request_to_stop() -> None:
    session, upstream = await connected({"tools/call": never})
    try:
        task = asyncio.ensure_future(session.request("tools/call", {"name": "slow"}))
        [call] = await upstream.until_received("tools/call")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert session.in_flight() == 0
        cancelled = await upstream.until_notified("notifications/cancelled")  # sent by a task of its own
        assert [m["params"] for m in cancelled] == [{"requestId": call["id"], "reason": "cancelled by the client"}]
    finally:
        await session.aclose()


async def test_modern_era_http_sends_no_cancel_notice_since_closing_the_stream_is_the_cancel() -> None:
    session, upstream = await connected({"tools/call": never}, protocol=MODERN, kind="http")
    try:
        task = asyncio.ensure_future(session.request("tools/call", {"name": "slow"}))
        await upstream.until_received("tools/call")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert session.in_flight() == 0 and upstream.notified == []
    finally:
        await session.aclose()


async def test_a_request_without_a_reply_times_out_naming_the_upstream_and_the_session_lives_on() -> None:
    session, upstream = await connected({"tools/call": never, "tools/list": echo}, call_timeout=0.05)
    try:
        with pytest.raises(UpstreamTimeout, match="^upstream 'up' did not answer within 0.05s$") as caught:
            await session.request("tools/call", {"name": "slow"})
        assert caught.value.kind is ErrorKind.TIMEOUT
        [call] = await upstream.until_received("tools/call")
        assert not session.closed
        assert "result" in await session.request("tools/list", {}, timeout=1)
        cancelled = await upstream.until_notified("notifications/cancelled")
        assert [m["params"] for m in cancelled] == [{"requestId": call["id"], "reason": "timed out"}]
    finally:
        await session.aclose()


async def test_a_per_request_timeout_overrides_the_call_timeout() -> None:
    session, _ = await connected({"tools/call": never}, call_timeout=60)
    try:
        with pytest.raises(UpstreamTimeout, match="within 0.02s"):
            await session.request("tools/call", {"name": "slow"}, timeout=0.02)
    finally:
        await session.aclose()


async def test_a_session_lost_before_delivery_says_so_and_refuses_further_requests() -> None:
    session, upstream = await connected({"tools/call": echo})
    try:
        upstream.lost = True
        with pytest.raises(UpstreamSessionLost, match="^upstream 'up' process is not running$"):
            await session.request("tools/call", {"name": "echo"})
        assert session.closed
        upstream.lost = False  # even if the transport would take it now, this session is done
        with pytest.raises(UpstreamSessionLost):
            await session.request("tools/call", {"name": "echo"})
        assert [m["method"] for m in upstream.received] == ["initialize"]
    finally:
        await session.aclose()


async def test_a_transport_that_dies_fails_pending_requests_as_closed_but_not_as_undelivered() -> None:
    session, upstream = await connected({"tools/call": never})
    try:
        pending = asyncio.ensure_future(session.request("tools/call", {"name": "slow"}))
        await upstream.until_received("tools/call")
        upstream.close_by_itself("process exited (code -9)")
        with pytest.raises(UpstreamError, match="^upstream 'up' process exited \\(code -9\\)$") as caught:
            await within(pending)
        # It may have run upstream, so it must not be retried as if it never arrived.
        assert not isinstance(caught.value, UpstreamSessionLost)
        assert caught.value.kind is ErrorKind.CLOSED
        assert session.closed
    finally:
        await session.aclose()


async def test_a_server_request_the_upstream_withdraws_is_withdrawn_from_the_client_unanswered() -> None:
    """The upstream cancels a question of its own (`notifications/cancelled` naming its request): the client's side
    of it is cancelled (relay/response_channel.py then tells the client), and the upstream gets no answer for it.
    Was (real-clients probe): nothing happened; the client's dialog stayed open."""
    asked, withdrawn = asyncio.Event(), asyncio.Event()

    class WaitingSink(Sink):
        async def request(self, method: str, params: JSON | None, *, shared: bool = False) -> JSON:
            self.requests.append((method, params))
            asked.set()
            try:
                await asyncio.Event().wait()  # nobody answers
            finally:
                withdrawn.set()
            raise AssertionError("unreachable")

    async def withdraws(upstream: ScriptedUpstream, message: JSON) -> JSON:
        question = {"jsonrpc": "2.0", "id": "s9", "method": "sampling/createMessage", "params": {"messages": []}}
        await upstream.emit(question, message)
        await asked.wait()
        await upstream.emit({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "s9"}})
        await withdrawn.wait()
        return {"result": {"content": []}}

    session, upstream = await connected({"tools/call": withdraws}, kind="stdio")
    try:
        reply = await within(session.request("tools/call", {"name": "x"}, sink=WaitingSink()))
        assert reply == {"result": {"content": []}}
        assert "s9" not in upstream.answers
    finally:
        await session.aclose()


async def test_a_request_withdrawn_in_the_same_read_is_never_put_to_the_client() -> None:
    """Review: the upstream's request and its withdrawal read together (one chunk: nothing yields between them)
    left the withdrawal unmatched, so the client was asked all the same. Now it is cancelled before it starts,
    and the count of requests being answered goes back down."""

    async def asks_and_withdraws(upstream: ScriptedUpstream, message: JSON) -> JSON:
        question = {"jsonrpc": "2.0", "id": "s7", "method": "sampling/createMessage", "params": {"messages": []}}
        await upstream.emit(question, message)
        await upstream.emit({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "s7"}})
        return {"result": {"content": []}}

    session, upstream = await connected({"tools/call": asks_and_withdraws}, kind="stdio")
    sink = Sink()
    try:
        assert await within(session.request("tools/call", {"name": "x"}, sink=sink)) == {"result": {"content": []}}
        await wait_for(lambda: session._answering == 0, what="the withdrawn request done with")
        assert sink.requests == [] and "s7" not in upstream.answers
    finally:
        await session.aclose()
