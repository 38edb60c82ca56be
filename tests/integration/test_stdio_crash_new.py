"""A stdio command that dies while a helper it forked holds its stdout, under plain asyncio (the gateway's own
loop, uvloop, is tested end to end: tests/e2e/test_stdio_crash_helper_holds_pipe.py). asyncio's `Process.wait()`
returns only once the pipes close too, so the exit is watched through the subprocess protocol
(upstream/stdio.py `_ChildProtocol`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from manifold.config.models import UpstreamConfig
from manifold.upstream.base import UpstreamError
from manifold.upstream.pool import UpstreamPool
from tests.e2e.test_stdio_descendants import alive
from tests.waiting import wait_for, within

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(sys.platform == "win32", reason="os.fork")]

CRASHING = str(Path(__file__).resolve().parents[1] / "upstreams" / "crashing_stdio.py")


def crashing_pool(pid_file: Path) -> UpstreamPool:
    config = UpstreamConfig(
        transport="stdio",
        command=sys.executable,
        args=[CRASHING, str(pid_file)],
        protocol="2025-11-25",
        call_timeout=30,
    )
    return UpstreamPool({"crashy": config})


async def test_the_call_in_flight_fails_at_once_naming_the_exit(tmp_path: Path) -> None:
    pool = crashing_pool(tmp_path / "helper.pid")
    try:
        await pool.request("crashy", "tools/list", {})
        helper = int((tmp_path / "helper.pid").read_text())
        began = time.monotonic()
        with pytest.raises(UpstreamError) as failure:
            await within(pool.request("crashy", "tools/call", {"name": "crash", "arguments": {}}), 10)
        took = time.monotonic() - began
        message = str(failure.value)
        assert message.startswith("upstream 'crashy' process exited (code 3)"), message
        assert "segfault in the frobnicator" in message, message
        assert took < 3, f"failed after {took:.1f}s (call_timeout is 30s)"
        await wait_for(lambda: not alive(helper), what="the helper ending with its command")
        assert pool.health()["crashy"]["state"] != "connected"
        listed = await pool.request("crashy", "tools/list", {})  # started again
        assert "echo" in {tool["name"] for tool in listed["result"]["tools"]}
    finally:
        await within(pool.aclose(), 10, what="the pool's close")


async def test_a_stop_does_not_wait_for_the_pipes_a_helper_holds(tmp_path: Path) -> None:
    """The command ends as soon as its stdin closes, its helper does not: the stop waited on `Process.wait()`,
    which under asyncio also waits for the pipes the helper holds, so it took the grace second (or more: was
    `await proc.wait()` after the SIGKILL, unbounded) for a command that had long exited."""
    pool = crashing_pool(tmp_path / "helper.pid")
    await pool.request("crashy", "tools/list", {})
    helper = int((tmp_path / "helper.pid").read_text())
    began = time.monotonic()
    await within(pool.aclose(), 10, what="the pool's close")
    took = time.monotonic() - began
    assert took < 0.6, f"the stop took {took:.2f}s"  # stdio.py EXIT_GRACE_SECONDS is 1 s
    await wait_for(lambda: not alive(helper), what="the helper ending with its command")
