"""The official MCP conformance suite passes against our conformance fixture server, directly.

This pins down the reference point: the same suite run through the gateway (a second test,
reusing tests/conformance/support.py) can then only fail because of the gateway. Needs the
Node toolchain: `cd tests/node && npm ci`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.support import (
    BASELINE,
    conformance_server_url,  # noqa: F401 (pytest fixture)
    read_baseline,
    run_conformance_async,
    toolchain_problem,
)

pytestmark = [pytest.mark.anyio, pytest.mark.conformance]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_active_suite_passes_against_fixture(conformance_server_url: str, tmp_path: Path) -> None:  # noqa: F811
    assert toolchain_problem() is None, toolchain_problem()

    result = await run_conformance_async(conformance_server_url, baseline=BASELINE, out_dir=tmp_path)

    assert result.ok, result.report()
    # Guard against a vacuous pass: the whole active suite ran, and nothing but the
    # baseline's (pending-only) entries is excused.
    assert len(result.scenarios) >= 30, result.report()
    assert not result.failed, result.report()
    assert "tools-call-elicitation" in result.passed and "dns-rebinding-protection" in result.passed


async def test_pending_scenarios_behave_as_the_baseline_says(conformance_server_url: str, tmp_path: Path) -> None:  # noqa: F811
    # json-schema-2020-12 passes; server-sse-polling only warns (see baseline.yml).
    result = await run_conformance_async(conformance_server_url, baseline=BASELINE, out_dir=tmp_path, suite="pending")

    assert result.ok, result.report()
    assert "json-schema-2020-12" in result.passed
    assert set(result.warned) <= read_baseline(BASELINE), result.report()


async def test_suite_fails_against_a_server_without_fixtures(tmp_path: Path) -> None:
    # The support module must be able to report failure: point one scenario at a URL
    # where nothing listens.
    from tests.upstreams.launch import free_port

    url = f"http://127.0.0.1:{free_port()}/mcp"
    result = await run_conformance_async(url, baseline=None, out_dir=tmp_path, scenario="tools-call-image")

    assert not result.ok
    assert result.failed == ["tools-call-image"], result.report()
