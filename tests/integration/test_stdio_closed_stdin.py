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
