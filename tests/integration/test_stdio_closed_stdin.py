"""A stdio command that closes its stdin and keeps running can read no more messages: a call to it fails at once
naming the upstream, under the gateway's own loop (uvloop) and asyncio's alike. Was, under uvloop: the child held
second copies of its stdin socketpair (at fds >= 3), so closing fd 0 closed nothing, the gateway's writes went on
succeeding, and each call waited out its call_timeout. Now the gateway starts the command on pipes it made
itself, and watches its end of stdin (upstream/stdio.py `_start_on_own_pipes`, `_stdin_closed`). Through the
gateway: tests/e2e/test_stdio_closed_stdin.py."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from manifold.config.models import UpstreamConfig
from manifold.upstream.base import UpstreamError
from manifold.upstream.pool import UpstreamPool
from tests.waiting import within

pytestmark = pytest.mark.anyio

CLOSER = str(Path(__file__).resolve().parents[1] / "upstreams" / "closes_stdin_stdio.py")
CALL_TIMEOUT = 30.0


@pytest.fixture(params=[pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> Any:  # noqa: ANN401
    return request.param


async def test_a_call_to_a_command_that_closed_its_stdin_fails_at_once_naming_it() -> None:
    config = UpstreamConfig.model_validate(
        {
            "transport": "stdio",
            "command": sys.executable,
            "args": [CLOSER],
            "protocol": "2025-11-25",
            "call_timeout": CALL_TIMEOUT,
        }
    )
    pool = UpstreamPool({"closer": config})
    try:
        began = time.monotonic()
        with pytest.raises(UpstreamError) as failure:
            await within(pool.request("closer", "tools/call", {"name": "echo", "arguments": {}}), CALL_TIMEOUT)
        took = time.monotonic() - began
        message = str(failure.value)
        assert message.startswith("upstream 'closer' "), message
        assert "closed its stdin" in message, message
        assert took < 10, f"failed after {took:.1f}s (call_timeout {CALL_TIMEOUT:g}s)"
    finally:
        await within(pool.aclose(), 10, what="the pool's close")


async def test_a_start_whose_pipes_cannot_be_connected_leaves_no_pipe_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command started, then connecting the gateway's ends of its pipes failed (the loop out of descriptors,
    say): the start fails naming the upstream, and every pipe descriptor it opened is closed again, the watched
    duplicate of stdin's end included (it leaked: one more with each failed start)."""
    import asyncio
    import os

    from manifold.upstream.stdio import StdioTransport

    def pipes() -> set[str]:
        found = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}").startswith("pipe:"):
                    found.add(fd)
            except OSError:  # the listing's own descriptor, closed meanwhile
                pass
        return found

    async def refused(*_: Any, **__: Any) -> Any:  # noqa: ANN401
        raise OSError(24, "Too many open files")

    async def deliver(*_: Any) -> None:
        return None

    monkeypatch.setattr(asyncio.get_running_loop(), "connect_write_pipe", refused)
    config = UpstreamConfig.model_validate({"transport": "stdio", "command": sys.executable, "args": [CLOSER]})
    before = pipes()
    with pytest.raises(UpstreamError) as failure:
        await StdioTransport("closer", config).connect(deliver, lambda _: None)
    assert str(failure.value).startswith("upstream 'closer' "), failure.value
    assert pipes() - before == set()
