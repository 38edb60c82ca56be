"""The official MCP conformance suite, run through the gateway.

The conformance fixture upstream sits behind a virtual server that keeps its names (namespace off).
Every scenario must pass through the gateway; the only excused ones are in the same baseline file
that the direct run (test_conformance_fixture.py) uses, so the gateway adds no failure of its own.
The suite sends no credentials, so this gateway runs with `allow_unauthenticated` on loopback.

The fixture upstream is pinned to the handshake era (`protocol: 2025-11-25`): its sampling, elicitation and
resources/subscribe fixtures are written for that era (at 2026-07-28 a server has no back channel and no
resources/subscribe), and the suite itself is a 2025-11-25 client.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.support import BASELINE, CONFORMANCE_SERVER, run_conformance_async, toolchain_problem
from tests.e2e.harness import run_gateway
from tests.upstreams.launch import run_http_upstream

pytestmark = [pytest.mark.anyio, pytest.mark.conformance]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("suite", ["active", "pending"])
async def test_conformance_suite_passes_through_the_gateway(tmp_path: Path, suite: str) -> None:
    assert toolchain_problem() is None, toolchain_problem()
    async with run_http_upstream(str(CONFORMANCE_SERVER)) as upstream:
        servers = {"conformance": {"namespace": False, "members": [{"upstream": "fixture"}]}}
        async with run_gateway(
            {"fixture": {"transport": "http", "url": upstream, "protocol": "2025-11-25"}},
            servers,
            gateway={"allow_unauthenticated": True},
        ) as gw:
            # The pending suite's server-sse-polling only warns against the fixture directly (see
            # baseline.yml) and passes through the gateway, so that run needs no baseline at all.
            baseline = BASELINE if suite == "active" else None
            result = await run_conformance_async(
                gw.url("conformance"), baseline=baseline, out_dir=tmp_path, suite=suite
            )
            assert result.ok, result.report() + "\n--- gateway log ---\n" + gw.log()[-3000:]
            assert not result.failed, result.report()
            if suite == "active":
                assert len(result.scenarios) >= 30, result.report()
