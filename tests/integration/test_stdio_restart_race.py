"""A call that reaches a stdio process in the moment it goes away (killed, or ending on its own while idle: it
was seen alive, its message was written, and then it died without reading it) starts the command again and
succeeds, as a call made a moment later does. Was: that call failed once with "process exited": the pool sends a
request again only when it provably never reached the upstream, and a message written into the pipe counted as
delivered. Now what the process never read is told from what is left unread in its stdin pipe
(upstream/stdio.py `_never_read`), and such a request is sent again on a new process. A message the process may
have read is never sent twice: one written while a kill is under way can still be read in the process's last
system call (seen: one call in ten, killed and then called at once), and fails as before."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from manifold.config.models import UpstreamConfig
from manifold.upstream.pool import UpstreamPool
from tests.waiting import wait_for, within

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(sys.platform == "win32", reason="signals")]

SERVER = str(Path(__file__).resolve().parents[1] / "upstreams" / "ignores_unknown_stdio.py")
ECHO = {"name": "echo", "arguments": {"text": "hi"}}


@pytest.fixture(params=[pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:  # noqa: ANN401  # the gateway's own loop, and asyncio's
    return request.param


def pool() -> UpstreamPool:
    config = UpstreamConfig.model_validate(
        {"transport": "stdio", "command": sys.executable, "args": [SERVER], "protocol": "2025-11-25"}
    )
    return UpstreamPool({"u": config})


def pid_of(upstreams: UpstreamPool) -> int:
    session = upstreams.live("u")
    assert session is not None
    pid = session._transport.pid  # type: ignore[attr-defined]  # the stdio transport's process
    assert isinstance(pid, int)
    return pid


def text_of(reply: dict[str, object]) -> str:
    result = reply["result"]
    assert isinstance(result, dict)
    return result["content"][0]["text"]


async def test_a_call_written_to_a_process_that_dies_without_reading_it_is_sent_to_a_new_one() -> None:
    upstreams = pool()
    try:
        await upstreams.request("u", "tools/list", {})
        first, session = pid_of(upstreams), upstreams.live("u")
        assert session is not None
        os.kill(first, signal.SIGSTOP)  # it reads nothing more: the call's message stays in the pipe
        # Stopped, not only told to: on its way into read() it may still take what arrives (seen under load).
        os.waitid(os.P_PID, first, os.WSTOPPED | os.WNOWAIT)
        call = upstreams.request("u", "tools/call", ECHO)
        task = asyncio.ensure_future(call)
        await wait_for(lambda: session.in_flight() == 1, what="the call written to the stopped process")
        os.kill(first, signal.SIGKILL)
        assert text_of(await within(task, 10, what="the call")) == "hi"
        assert pid_of(upstreams) != first
    finally:
        await within(upstreams.aclose(), 10, what="the pool's close")


async def test_a_call_made_after_the_process_died_unnoticed_starts_it_again() -> None:
    """Dead (its exit not yet seen by the gateway, whose loop has not run since): the write fails at once, and the
    call is made on a new process. (A call written while a kill is still under way may be read by the process in
    its last moment: that one fails, naming the exit, since nobody can tell it was not run.)"""
    upstreams = pool()
    try:
        await upstreams.request("u", "tools/list", {})
        for _ in range(3):
            pid = pid_of(upstreams)
            os.kill(pid, signal.SIGKILL)
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # dead, left for the gateway to reap
            assert text_of(await within(upstreams.request("u", "tools/call", ECHO), 10, what="the call")) == "hi"
            assert pid_of(upstreams) != pid
    finally:
        await within(upstreams.aclose(), 10, what="the pool's close")
