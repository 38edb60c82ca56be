"""The upstream client against an mcp 1.x server (handshake era only), on every transport."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "upstreams"))
from upstream_min_launch import LEGACY_PYTHON, LEGACY_SERVER, ServerProcess, tool_result  # noqa: E402

from manifold.config.models import UpstreamConfig  # noqa: E402
from manifold.protocol import Era  # noqa: E402
from manifold.upstream.pool import UpstreamPool  # noqa: E402

pytestmark = pytest.mark.skipif(
    not LEGACY_PYTHON.exists(), reason=".venv-legacy is missing: run scripts/setup-legacy-venv.sh"
)


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def exercise(config: UpstreamConfig) -> None:
    pool = UpstreamPool({"legacy": config})
    try:
        session = await pool.session("legacy")
        assert session.era is Era.HANDSHAKE  # "auto" probed discover and fell back to initialize
        assert session.protocol_version in ("2025-06-18", "2025-11-25")
        listed = await pool.request("legacy", "tools/list", {})
        assert {"echo", "add", "whoami"} <= {t["name"] for t in listed["result"]["tools"]}
        assert (
            tool_result(await pool.request("legacy", "tools/call", {"name": "add", "arguments": {"a": 20, "b": 22}}))
            == 42
        )
        assert pool.health()["legacy"]["era"] == "2025-11-25"
    finally:
        await pool.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["http", "sse"])
async def test_legacy_http_and_sse_upstreams(transport):
    server = ServerProcess(transport, script=LEGACY_SERVER, python=LEGACY_PYTHON).start()
    try:
        await exercise(UpstreamConfig(transport=transport, url=server.url, protocol="auto"))
    finally:
        server.kill()


@pytest.mark.anyio
async def test_legacy_stdio_upstream():
    await exercise(
        UpstreamConfig(transport="stdio", command=str(LEGACY_PYTHON), args=[str(LEGACY_SERVER)], protocol="auto")
    )
