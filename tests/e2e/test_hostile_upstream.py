"""What a client of the gateway sees when an upstream answers with something that is no MCP answer: a tool error
naming the upstream, in both eras, the upstream's other tools unaffected, nothing in the log but a warning.
The other hostile behaviours are tested against the upstream session: tests/integration/test_hostile_upstream.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import mcp_types as types
import pytest

from tests.e2e.harness import Gateway, run_gateway
from tests.upstreams.launch import run_http_upstream

HOSTILE_HTTP = str(Path(__file__).resolve().parents[1] / "upstreams" / "hostile_http.py")

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    async with run_http_upstream(HOSTILE_HTTP) as bad:
        async with run_gateway({"bad": {"transport": "http", "url": bad, "protocol": "2025-11-25"}}) as gateway:
            yield gateway
            log = gateway.log()
            assert "Traceback" not in log and " ERROR " not in log, log[-4000:]


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_a_result_that_is_not_an_object_is_a_tool_error_naming_the_upstream(gw: Gateway, mode: str) -> None:
    """Was: `"result": "just a string"` relayed as it was: the client failed to parse the whole answer."""
    async with gw.client("bad", mode=mode) as client:
        for tool in ("text_result", "text_error"):
            result = await client.call_tool(tool, {})
            assert result.is_error, result
            assert "upstream 'bad' answered with a" in text_of(result) and "protocol error" in text_of(result)
        assert text_of(await client.call_tool("echo", {})) == "fine"
