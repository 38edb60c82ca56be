"""The upstream client over the deprecated HTTP+SSE transport (GET stream + POSTed messages)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "upstreams"))
from upstream_min_launch import RecordingSink, ServerProcess, tool_result  # noqa: E402

from manifold.config.models import UpstreamConfig  # noqa: E402
from manifold.protocol import Era  # noqa: E402
from manifold.upstream.pool import UpstreamPool  # noqa: E402
from tests.waiting import NotificationLog, wait_for  # noqa: E402


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess("sse").start()
    yield proc
    proc.kill()


def make_pool(url: str, notes: NotificationLog | None = None, **extra) -> UpstreamPool:
    config = UpstreamConfig(transport="sse", url=url, **extra)
    return UpstreamPool({"old": config}, notes)


@pytest.mark.anyio
async def test_lists_calls_and_runs_fifty_at_once(server):
    pool = make_pool(server.url)
    try:
        session = await pool.session("old")
        assert session.era is Era.HANDSHAKE  # "auto" never probes discover over HTTP+SSE
        listed = await pool.request("old", "tools/list", {})
        assert "add" in {t["name"] for t in listed["result"]["tools"]}
        replies = await asyncio.gather(
            *(pool.request("old", "tools/call", {"name": "echo", "arguments": {"text": str(i)}}) for i in range(50))
        )
        assert [tool_result(r) for r in replies] == [str(i) for i in range(50)]
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_progress_sampling_and_list_changed(server):
    notes = NotificationLog()
    pool = make_pool(server.url, notes)
    try:
        sink = RecordingSink(answer="over sse")
        params = {"name": "progress", "arguments": {"steps": 2}, "_meta": {"progressToken": "p"}}
        await pool.request("old", "tools/call", params, sink=sink)
        assert [m["params"]["progressToken"] for m in sink.notifications] == ["p", "p"]
        reply = await pool.request("old", "tools/call", {"name": "sample", "arguments": {"prompt": "x"}}, sink=sink)
        assert tool_result(reply) == "sampled: over sse"
        await pool.request("old", "tools/call", {"name": "add_tool", "arguments": {"name": "via_sse"}})
        await notes.until("notifications/tools/list_changed")
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_static_headers_reach_the_message_endpoint(server):
    pool = make_pool(server.url, headers={"X-Static-Key": "sse-static"})
    try:
        seen = json.loads(tool_result(await pool.request("old", "tools/call", {"name": "headers", "arguments": {}})))
        assert seen["x-static-key"] == "sse-static"
        assert "authorization" not in seen and "cookie" not in seen
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_restarted_sse_upstream_is_reconnected_on_the_next_request():
    server = ServerProcess("sse").start()
    pool = make_pool(server.url)
    try:
        first = tool_result(await pool.request("old", "tools/call", {"name": "pid", "arguments": {}}))
        server.kill()
        await wait_for(lambda: pool.health()["old"]["state"] == "idle", what="the pool noticing the lost stream")
        server.start()
        second = tool_result(await pool.request("old", "tools/call", {"name": "pid", "arguments": {}}))
        assert second != first
    finally:
        await pool.aclose()
        server.kill()
