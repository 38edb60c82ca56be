"""The upstream client over streamable HTTP against a real mcp 2.3.0 server, in both eras."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "upstreams"))
from upstream_min_launch import RecordingSink, ServerProcess, free_port, tool_result  # noqa: E402

from manifold.config.models import UpstreamConfig  # noqa: E402
from manifold.protocol import Era  # noqa: E402
from manifold.upstream.base import UpstreamError, UpstreamTimeout  # noqa: E402
from manifold.upstream.pool import UpstreamPool  # noqa: E402
from tests.waiting import HeldSink, NotificationLog, within  # noqa: E402

ERAS = [("2025-11-25", Era.HANDSHAKE), ("2026-07-28", Era.MODERN), ("auto", Era.MODERN)]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess("http").start()
    yield proc
    proc.kill()


def make_pool(url: str, protocol: str, notes: NotificationLog | None = None, **extra) -> UpstreamPool:
    config = UpstreamConfig(transport="http", url=url, protocol=protocol, **extra)
    return UpstreamPool({"up": config}, notes)


@pytest.mark.anyio
@pytest.mark.parametrize(("protocol", "era"), ERAS)
async def test_lists_and_calls_tools(server, protocol, era):
    pool = make_pool(server.url, protocol)
    try:
        session = await pool.session("up")
        assert session.era is era
        assert session.server_info["name"] == "upstream-min"
        listed = await pool.request("up", "tools/list", {})
        assert {"echo", "add", "progress"} <= {t["name"] for t in listed["result"]["tools"]}
        assert (
            tool_result(await pool.request("up", "tools/call", {"name": "add", "arguments": {"a": 2, "b": 40}})) == 42
        )
        # Unknown tools come back as the upstream's own reply, not as an exception.
        reply = await pool.request("up", "tools/call", {"name": "nope", "arguments": {}})
        assert "error" in reply or reply["result"].get("isError")
        assert pool.health()["up"]["state"] == "connected"
        assert pool.health()["up"]["era"] == era.value
    finally:
        await pool.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(("protocol", "era"), ERAS[:2])
async def test_fifty_concurrent_calls_share_one_session(server, protocol, era):
    pool = make_pool(server.url, protocol)
    try:
        session = await pool.session("up")
        replies = await asyncio.gather(
            *(pool.request("up", "tools/call", {"name": "echo", "arguments": {"text": f"m{i}"}}) for i in range(50))
        )
        assert [tool_result(r) for r in replies] == [f"m{i}" for i in range(50)]
        assert await pool.session("up") is session
    finally:
        await pool.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(("protocol", "era"), ERAS[:2])
async def test_progress_reaches_the_right_sink_with_the_callers_token(server, protocol, era):
    pool = make_pool(server.url, protocol)
    sinks = [RecordingSink(), RecordingSink()]
    try:
        # Both callers use the same token: the session must keep them apart.
        await asyncio.gather(
            *(
                pool.request(
                    "up",
                    "tools/call",
                    {"name": "progress", "arguments": {"steps": n}, "_meta": {"progressToken": "same"}},
                    sink=sink,
                )
                for n, sink in zip((2, 3), sinks, strict=True)
            )
        )
        for steps, sink in zip((2, 3), sinks, strict=True):
            progress = [m["params"] for m in sink.notifications if m["method"] == "notifications/progress"]
            assert [p["progress"] for p in progress] == list(range(1, steps + 1))
            assert {p["progressToken"] for p in progress} == {"same"}
            assert {p["total"] for p in progress} == {steps}
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_sampling_request_reaches_the_sink_and_the_reply_goes_back(server):
    # 2025-11-25 only: a 2026-07-28 server has no back-channel (it uses input_required results instead).
    pool = make_pool(server.url, "2025-11-25")
    sink = RecordingSink(answer="hello from the client")
    try:
        reply = await pool.request("up", "tools/call", {"name": "sample", "arguments": {"prompt": "hi"}}, sink=sink)
        assert tool_result(reply) == "sampled: hello from the client"
        assert [method for method, _ in sink.requests] == ["sampling/createMessage"]
        assert sink.requests[0][1]["messages"][0]["content"]["text"] == "hi"
    finally:
        await pool.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(("protocol", "era"), ERAS[:2])
async def test_list_changed_reaches_the_session_callback(server, protocol, era):
    notes = NotificationLog()
    pool = make_pool(server.url, protocol, notes)
    try:
        await pool.session("up")
        await pool.request("up", "tools/call", {"name": "add_tool", "arguments": {"name": f"new_{era.name}"}})
        await notes.until("notifications/tools/list_changed")
        assert {uid for uid, _ in notes.received} == {"up"}
    finally:
        await pool.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(("protocol", "era"), ERAS[:2])
async def test_static_headers_arrive_and_nothing_else_of_ours(server, protocol, era):
    pool = make_pool(server.url, protocol, headers={"X-Static-Key": "static-value"})
    try:
        seen = json.loads(tool_result(await pool.request("up", "tools/call", {"name": "headers", "arguments": {}})))
        assert seen["x-static-key"] == "static-value"
        protocol_headers = {"mcp-session-id", "mcp-protocol-version", "mcp-method", "mcp-name"}
        transport_headers = {"host", "user-agent", "content-type", "content-length", "accept", "accept-encoding"}
        assert set(seen) <= protocol_headers | transport_headers | {"x-static-key"}
        assert seen["user-agent"].startswith("manifold/")
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_slow_call_hits_call_timeout_and_the_session_survives(server):
    pool = make_pool(server.url, "auto", call_timeout=0.5)
    try:
        await pool.session("up")
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout) as caught:
            await pool.request("up", "tools/call", {"name": "slow", "arguments": {"seconds": 5}})
        assert time.monotonic() - started < 2.0
        assert "'up'" in str(caught.value)
        assert tool_result(await pool.request("up", "tools/call", {"name": "add", "arguments": {"a": 1, "b": 1}})) == 2
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_connection_refused_fails_fast_and_names_the_upstream():
    pool = make_pool(f"http://127.0.0.1:{free_port()}/mcp", "auto", connect_timeout=10)
    try:
        for _ in range(2):  # the first attempt and the one in back-off both fail at once
            started = time.monotonic()
            with pytest.raises(UpstreamError) as caught:
                await pool.request("up", "tools/list")
            assert time.monotonic() - started < 0.5
            assert "'up'" in str(caught.value) and "refused the connection" in str(caught.value)
        health = pool.health()["up"]
        assert health["state"] == "failed" and "refused" in health["last_error"]
    finally:
        await pool.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(("protocol", "era"), ERAS[:2])
async def test_upstream_restart_on_the_same_port_is_transparent(protocol, era):
    server = ServerProcess("http").start()
    pool = make_pool(server.url, protocol)
    try:
        first_pid = tool_result(await pool.request("up", "tools/call", {"name": "pid", "arguments": {}}))
        server.kill()
        server.start()
        second_pid = tool_result(await pool.request("up", "tools/call", {"name": "pid", "arguments": {}}))
        assert second_pid != first_pid
        assert pool.health()["up"]["state"] == "connected"
    finally:
        await pool.aclose()
        server.kill()


@pytest.mark.anyio
async def test_cancelling_the_caller_abandons_the_upstream_request(server):
    pool = make_pool(server.url, "2025-11-25")
    held = HeldSink()
    try:
        session = await pool.session("up")
        params = {"name": "sample", "arguments": {"prompt": "never answered"}}
        task = asyncio.ensure_future(pool.request("up", "tools/call", params, sink=held))
        await within(held.asked.wait(), what="the upstream working on the call")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert session.in_flight() == 0
        assert tool_result(await pool.request("up", "tools/call", {"name": "add", "arguments": {"a": 3, "b": 4}})) == 7
        assert await pool.session("up") is session  # abandoning a call does not cost the session
    finally:
        held.release()
        await pool.aclose()


@pytest.mark.anyio
async def test_a_session_with_a_call_in_flight_is_never_the_one_evicted(server, monkeypatch):
    """Past the per-upstream limit of per-identity sessions the least recently used is closed, but never one
    with a call in flight: one user churning identities (forwarded header values) killed another's call."""
    from manifold.upstream import pool as pool_module
    from manifold.upstream.credential import Outbound

    monkeypatch.setattr(pool_module, "MAX_IDENTITY_SESSIONS", 2)
    pool = make_pool(server.url, "2025-11-25")
    held = HeldSink()
    bob = Outbound({"X-Who": "bob"}, identity="bob")
    try:
        params = {"name": "sample", "arguments": {"prompt": "hold on"}}
        call = asyncio.ensure_future(pool.request("up", "tools/call", params, sink=held, outbound=bob))
        await within(held.asked.wait(), what="bob's call held by the upstream")
        for i in range(4):  # someone else's new identities, each past the limit
            other = Outbound({"X-Who": f"mallory-{i}"}, identity=f"mallory-{i}")
            assert (
                tool_result(
                    await pool.request(
                        "up", "tools/call", {"name": "add", "arguments": {"a": i, "b": 1}}, outbound=other
                    )
                )
                == i + 1
            )
        assert pool.live("up", bob) is not None  # bob's session survived
        held.release()
        reply = await within(call, what="bob's call answered")  # not failed with "dropped the response stream"
        assert "the test did not answer" in json.dumps(reply)  # the upstream's answer, after the held question
        assert sum(1 for key in pool._slots if key.identity) <= 3  # the limit held for the idle ones
    finally:
        held.release()
        await pool.aclose()


@pytest.mark.anyio
async def test_a_session_holding_a_resource_subscription_is_never_the_one_evicted(monkeypatch):
    """Per-caller sessions past the limit: an idle one carrying a client's resource subscription stays (closing
    it would end the subscription with nobody told; each 2025-11-25 caller of an upstream speaking both eras
    has a session of its own)."""
    from manifold.upstream import pool as pool_module
    from manifold.upstream.credential import Outbound
    from tests.upstreams.launch import KITCHEN, run_http_upstream

    monkeypatch.setattr(pool_module, "MAX_IDENTITY_SESSIONS", 2)
    async with run_http_upstream(KITCHEN) as url:
        pool = make_pool(url, "2025-11-25")
        bob = Outbound({"X-Who": "bob"}, identity="bob")
        try:
            session = await pool.session("up", bob)
            assert "result" in await session.subscribe_resource("kitchen://readme")
            for i in range(4):  # someone else's new sessions, each past the limit
                await pool.session("up", Outbound({"X-Who": f"m{i}"}, identity=f"m{i}"))
            assert pool.live("up", bob) is session
            await session.unsubscribe_resource("kitchen://readme")
            await pool.session("up", Outbound({"X-Who": "m9"}, identity="m9"))
            assert pool.live("up", bob) is None  # no longer held: the least recently used goes
        finally:
            await pool.aclose()


@pytest.mark.anyio
async def test_calls_answered_with_sse_reuse_one_connection(monkeypatch):
    """A 2025-11-25 session's calls that a FastMCP upstream answers as an SSE stream go over one kept-alive
    connection: the stream's end, which comes a moment after the reply, is read in the background. Was: the
    gateway stopped reading at the reply and dropped the connection, so every call opened a new one (a TCP
    handshake, the upstream's accept, ~0.1 ms of the gateway's CPU per call). Counted where the connections are
    made (the event loop's create_connection), not through a relay: one in between joins the stream's end to the
    reply, and the fault no longer shows."""
    from tests.upstreams.launch import run_http_upstream

    loop = asyncio.get_running_loop()
    made = []
    create_connection = loop.create_connection

    async def counted(*args, **kwargs):
        made.append(args[1:3])
        return await create_connection(*args, **kwargs)

    monkeypatch.setattr(loop, "create_connection", counted)
    script = str(Path(__file__).resolve().parents[1] / "upstreams" / "fastmcp_asks.py")
    async with run_http_upstream(script) as url:
        pool = make_pool(url, "2025-11-25")
        try:
            call = {"name": "slow", "arguments": {"seconds": 0}}
            assert "result" in await pool.request("up", "tools/call", call)
            before = len(made)
            for _ in range(30):
                reply = await pool.request("up", "tools/call", call)
                assert not reply["result"].get("isError"), reply
            assert len(made) - before <= 2, f"{len(made) - before} connections for 30 calls"
        finally:
            await pool.aclose()


@pytest.mark.anyio
async def test_an_upstream_that_keeps_its_response_streams_open_does_not_hold_up_later_calls():
    """An upstream that answers with SSE and leaves the stream open after the reply (it never ends it, or takes
    longer than STREAM_END_SECONDS): the calls after it do not wait. Was: each call's stream was read to its end
    in the background holding one of the lean client's 256 slots for 5 s, so once 256 were held every further
    call waited for one (400 calls in a row: 5.2 s, one of them 4.9 s; 0.14 s when the stream was dropped at
    the reply). Now at most a few are read to their end at once, and once one did not end in time the upstream's
    streams are dropped at the reply."""
    from aiohttp import web

    held: list[asyncio.Event] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        message = await request.json()
        if "id" not in message:
            return web.Response(status=202)
        if message["method"] == "initialize":
            hello = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}}, "serverInfo": {"name": "linger"}}
            return web.json_response({"jsonrpc": "2.0", "id": message["id"], "result": hello})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        reply = {"jsonrpc": "2.0", "id": message["id"], "result": {"content": [{"type": "text", "text": "ok"}]}}
        await response.write(b"event: message\ndata: " + json.dumps(reply).encode() + b"\n\n")
        held.append(ended := asyncio.Event())
        await ended.wait()  # the stream stays open
        return response

    app = web.Application()
    app.router.add_post("/mcp", handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    pool = make_pool(f"http://127.0.0.1:{port}/mcp", "2025-11-25", call_timeout=30)
    try:
        call = {"name": "echo", "arguments": {}}
        began = time.monotonic()
        slowest = 0.0
        for _ in range(300):
            start = time.monotonic()
            assert "result" in await within(pool.request("up", "tools/call", call), 30)
            slowest = max(slowest, time.monotonic() - start)
        took = time.monotonic() - began
        assert slowest < 1.0, f"a call waited {slowest:.1f}s (300 calls took {took:.1f}s)"
    finally:
        await pool.aclose()
        for ended in held:
            ended.set()
        await runner.cleanup()
