"""A stdio server that ignores methods it does not know (never answers `server/discover`, as hand-written servers
and older SDKs do) behind the gateway under protocol `auto` (the default): its tools are listed and callable within
seconds, as for a client that talks to it directly (upstream/session.py `DISCOVER_PROBE_SECONDS`). Was: the
discover probe waited out the whole start (`STDIO_START_SECONDS`, 120 s), the server's tools missing and its calls
told "is still starting" meanwhile."""

from __future__ import annotations

import time
from pathlib import Path

import mcp_types as types
import pytest

from manifold.upstream.session import DISCOVER_PROBE_SECONDS
from tests.e2e.harness import run_gateway, stdio_upstream

pytestmark = pytest.mark.anyio

SERVER = str(Path(__file__).resolve().parents[1] / "upstreams" / "ignores_unknown_stdio.py")


async def test_its_tools_are_listed_and_called_within_seconds() -> None:
    async with run_gateway({"old": stdio_upstream(SERVER)}) as gw, gw.client("old") as client:
        began = time.monotonic()
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert names == {"echo"}, names
        result = await client.call_tool("echo", {"text": "hi"})
        took = time.monotonic() - began
        assert not result.is_error, result
        assert [c.text for c in result.content if isinstance(c, types.TextContent)] == ["hi"]
        assert took < DISCOVER_PROBE_SECONDS + 4, f"its tools came after {took:.1f}s"
