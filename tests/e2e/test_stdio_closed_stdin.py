"""Through `manifold serve` (uvloop): a stdio command that closes its stdin after the handshake and keeps running
fails its lists and calls at once, naming the upstream, instead of each waiting out call_timeout (upstream/stdio.py
`_start_on_own_pipes`; the pool-level check on both loops: tests/integration/test_stdio_closed_stdin.py)."""

from __future__ import annotations

import time
from pathlib import Path

import mcp_types as types
import pytest

from tests.e2e.harness import run_gateway, stdio_upstream

pytestmark = pytest.mark.anyio

CLOSER = str(Path(__file__).resolve().parents[1] / "upstreams" / "closes_stdin_stdio.py")
CALL_TIMEOUT = 30.0


async def test_a_call_fails_at_once_naming_the_upstream() -> None:
    upstream = stdio_upstream(CLOSER, protocol="2025-11-25", call_timeout=CALL_TIMEOUT)
    async with run_gateway({"closer": upstream}) as gw, gw.client("closer") as client:
        began = time.monotonic()
        result = await client.call_tool("echo", {})
        took = time.monotonic() - began
        text = "".join(c.text for c in result.content if isinstance(c, types.TextContent))
        assert result.is_error, result
        assert "closer" in text and "closed its stdin" in text, text
        assert took < 10, f"failed after {took:.1f}s (call_timeout {CALL_TIMEOUT:g}s)"
        log = gw.log()
    assert "closed its stdin but kept running" in log, log[-3000:]
