"""The upstream client over stdio: one long-lived process per upstream, restarted when it dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "upstreams"))
from upstream_min_launch import SERVER, RecordingSink, tool_result  # noqa: E402

from manifold.config.models import UpstreamConfig  # noqa: E402
from manifold.protocol import Era  # noqa: E402
from manifold.upstream.base import UpstreamError  # noqa: E402
from manifold.upstream.pool import UpstreamPool  # noqa: E402
from tests.waiting import HeldSink, NotificationLog, wait_for, within  # noqa: E402

ERAS = [("2025-11-25", Era.HANDSHAKE), ("auto", Era.MODERN)]


@pytest.fixture
def anyio_backend():
    return "asyncio"


def make_pool(protocol: str, tag: str = "", notes: NotificationLog | None = None, **extra) -> UpstreamPool:
    config = UpstreamConfig(
        transport="stdio", command=sys.executable, args=[str(SERVER), "--tag", tag], protocol=protocol, **extra
    )
    return UpstreamPool({"local": config}, notes)


def processes_tagged(tag: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if tag.encode() in cmdline and (entry / "stat").read_text().split()[2] != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.anyio
@pytest.mark.parametrize(("protocol", "era"), ERAS)
async def test_lists_calls_progress_and_concurrency(protocol, era):
    pool = make_pool(protocol)
    try:
        session = await pool.session("local")
        assert session.era is era
        listed = await pool.request("local", "tools/list", {})
        assert "echo" in {t["name"] for t in listed["result"]["tools"]}
        replies = await asyncio.gather(
            *(pool.request("local", "tools/call", {"name": "add", "arguments": {"a": i, "b": 1}}) for i in range(50))
        )
        assert [tool_result(r) for r in replies] == [i + 1 for i in range(50)]
        sink = RecordingSink()
        params = {"name": "progress", "arguments": {"steps": 3}, "_meta": {"progressToken": 7}}
        await pool.request("local", "tools/call", params, sink=sink)
        assert [m["params"]["progressToken"] for m in sink.notifications] == [7, 7, 7]
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_sampling_goes_to_the_single_request_in_flight():
    pool = make_pool("2025-11-25")
    sink = RecordingSink(answer="from stdio client")
    try:
        reply = await pool.request("local", "tools/call", {"name": "sample", "arguments": {"prompt": "q"}}, sink=sink)
        assert tool_result(reply) == "sampled: from stdio client"
        assert sink.requests[0][0] == "sampling/createMessage"
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_sampling_with_several_requests_in_flight_is_refused_not_misrouted():
    pool = make_pool("2025-11-25")
    sinks = [RecordingSink(principal_id="user:ann"), RecordingSink(principal_id="user:ben")]  # two callers
    try:
        session = await pool.session("local")
        slow = asyncio.ensure_future(
            pool.request("local", "tools/call", {"name": "slow", "arguments": {"seconds": 1}}, sink=sinks[0])
        )
        # In flight means written: the session registers a request and writes it to stdin without yielding.
        await wait_for(lambda: session.in_flight() == 1, what="the slow call in flight")
        reply = await pool.request(
            "local", "tools/call", {"name": "sample", "arguments": {"prompt": "q"}}, sink=sinks[1]
        )
        await slow
        # Relation is unknown on stdio with two requests in flight: the upstream gets an error back, which says
        # why and what to change (it was only "no client can answer ... now").
        assert "error" in reply or reply["result"].get("isError")
        assert sinks[0].requests == [] and sinks[1].requests == []
        said = json.dumps(reply)
        assert "2 calls are in flight" in said and "sessions: per_user" in said, said
    finally:
        await pool.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(("protocol", "era"), ERAS)
async def test_list_changed_reaches_the_session_callback(protocol, era):
    notes = NotificationLog()
    pool = make_pool(protocol, notes=notes)
    try:
        await pool.request("local", "tools/call", {"name": "add_tool", "arguments": {"name": "brand_new"}})
        await notes.until("notifications/tools/list_changed")
        assert {uid for uid, _ in notes.received} == {"local"}
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_killed_process_is_restarted_once_on_the_next_request():
    tag = f"stdio-restart-{uuid.uuid4()}"
    pool = make_pool("auto", tag)
    try:
        first = tool_result(await pool.request("local", "tools/call", {"name": "pid", "arguments": {}}))
        assert processes_tagged(tag) == [first]
        os.kill(first, signal.SIGKILL)
        await wait_for(lambda: pool.health()["local"]["state"] == "idle", what="the pool noticing the exit")
        assert "process exited" in pool.health()["local"]["last_error"]
        # Several callers at once: still only one new process.
        replies = await asyncio.gather(
            *(pool.request("local", "tools/call", {"name": "pid", "arguments": {}}) for _ in range(5))
        )
        pids = {tool_result(r) for r in replies}
        assert len(pids) == 1 and first not in pids
        assert processes_tagged(tag) == list(pids)
    finally:
        await pool.aclose()
    assert processes_tagged(tag) == []


@pytest.mark.anyio
async def test_pending_request_fails_naming_the_upstream_when_the_process_dies():
    pool = make_pool("2025-11-25")
    held = HeldSink()
    try:
        pid = tool_result(await pool.request("local", "tools/call", {"name": "pid", "arguments": {}}))
        pending = asyncio.ensure_future(
            pool.request("local", "tools/call", {"name": "sample", "arguments": {"prompt": "q"}}, sink=held)
        )
        await within(held.asked.wait(), what="the upstream working on the call")
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(UpstreamError) as caught:
            await within(pending, what="the pending call failing")
        assert "'local'" in str(caught.value) and "exited" in str(caught.value)
    finally:
        held.release()
        await pool.aclose()


@pytest.mark.anyio
async def test_child_gets_config_env_but_not_the_gateway_environment(monkeypatch):
    monkeypatch.setenv("MANIFOLD_TEST_GATEWAY_SECRET", "do-not-leak")
    pool = make_pool("auto", env={"UPSTREAM_TOKEN": "for-the-upstream"})
    try:

        async def env(name: str) -> str:
            return tool_result(await pool.request("local", "tools/call", {"name": "env", "arguments": {"name": name}}))

        assert await env("UPSTREAM_TOKEN") == "for-the-upstream"
        assert await env("MANIFOLD_TEST_GATEWAY_SECRET") == ""
        assert await env("PATH") == os.environ["PATH"]
    finally:
        await pool.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("command", "cwd", "said"),
    [
        ("/nonexistent/manifold-test-server", None, "no '/nonexistent/manifold-test-server'"),
        # Was only "(FileNotFoundError)": a relative command is looked for in the upstream's folder, a bare
        # name on PATH, and the message now says which and where (newcomer walkthrough).
        (".venv/bin/python", "TMP", "no '.venv/bin/python' in TMP"),
        ("manifold-no-such-command", None, "no 'manifold-no-such-command' on PATH"),
        ("x", "TMP/gone", "its folder TMP/gone does not exist"),
        # Its arguments written into `command`: never shown (they may hold a key; review).
        (
            "npx -y some-server --api-key sk-live-0123456789",
            None,
            "no program 'npx ...' (if what follows 'npx' are its arguments, they go in 'args')",
        ),
    ],
)
async def test_a_command_that_does_not_exist_fails_with_a_clear_error(
    tmp_path: Path, command: str, cwd: str | None, said: str
) -> None:
    folder = None if cwd is None else cwd.replace("TMP", str(tmp_path))
    config = UpstreamConfig(transport="stdio", command=command, cwd=folder)
    pool = UpstreamPool({"ghost": config})
    try:
        with pytest.raises(UpstreamError) as caught:
            await pool.request("ghost", "tools/list")
        assert "'ghost'" in str(caught.value) and "could not start its command" in str(caught.value)
        assert said.replace("TMP", str(tmp_path)) in str(caught.value)
        assert "sk-live" not in str(caught.value)
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_a_per_caller_stdio_session_left_idle_is_closed_when_the_next_is_made() -> None:
    """Was (second review): per-caller sessions (`sessions: per_user`, per-user credentials) were closed only
    beyond 256 per upstream, never for being idle: up to 256 stdio processes. Now an idle one goes when the next
    is made, and a stdio upstream keeps at most 32."""
    from manifold.upstream.credential import Outbound
    from manifold.upstream.pool import UpstreamKey

    tag = f"idle-{uuid.uuid4().hex[:8]}"
    pool = make_pool("2025-11-25", tag)
    try:
        alice = await pool.session("local", Outbound(identity="caller:alice"))
        bob = await pool.session("local", Outbound(identity="caller:bob"))
        pool._slots[UpstreamKey("local", "caller:alice")].last_used -= 3600  # an hour without a call
        await pool.session("local", Outbound(identity="caller:carol"))
        assert alice.closed and not bob.closed
        await wait_for(lambda: len(processes_tagged(tag)) == 2, what="alice's process gone, bob's and carol's left")
    finally:
        await pool.aclose()


@pytest.mark.anyio
async def test_a_command_that_exits_right_after_its_handshake_is_backed_off_not_restarted_by_every_call(
    tmp_path: Path,
) -> None:
    """Was (resilience review): a stdio command that died right after its handshake was started again by every
    call (83 starts in 5 s under load, both cores busy), where one that fails to start is backed off. A session
    that dies within seconds of its handshake, having answered nothing, is a failed start now."""
    starts = tmp_path / "starts"
    hostile = Path(__file__).parents[1] / "upstreams" / "hostile_stdio.py"
    args = [str(hostile), "--starts", str(starts), "--exit-after-handshake"]
    pool = UpstreamPool({"crashy": UpstreamConfig(transport="stdio", command=sys.executable, args=args)})
    try:
        failures = []
        for _ in range(40):
            with pytest.raises(UpstreamError) as caught:
                await pool.request("crashy", "tools/call", {"name": "echo", "arguments": {}})
            failures.append(str(caught.value))
        assert len(starts.read_text().splitlines()) <= 4, "started again by (nearly) every call"
        assert all("'crashy'" in f for f in failures)
        assert any("exited" in f for f in failures), failures[:3]
        health = pool.health()["crashy"]
        assert health["down"] and health["state"] == "failed", health
    finally:
        await pool.aclose()
