"""The 0.2.0-alpha.12 conformance suite through the gateway, against five upstreams and both revisions.

Each upstream of tests/conformance/upstreams.py sits behind a virtual server that keeps its names
(namespace off), and the suite runs `server --requirements R` at the gateway's URL for R in 2025-11-25
and 2026-07-28. Two rules (issue 10):

- every scenario that passes against the upstream directly passes through the gateway. The direct
  results are recorded in tests/conformance/direct_results.json by `python -m tests.conformance.record`
  (running them beside every gateway run would double the cost); `test_direct_record_is_current`
  checks that the record was made with the versions and fixtures installed now;
- the scenarios about the server's own face (matrix.py `GATEWAY_FACE`: handshake, ping, sessions, statelessness,
  version and capability errors, caching hints, header validation, DNS-rebinding protection) pass
  through the gateway whatever the upstream, because the gateway, not the upstream, answers them.

A scenario may be excused only in tests/conformance/matrix.py `EXCUSED`, with a reason naming the
upstream's own defect; never for a gateway defect. The suite sends no credentials, so the gateway runs
with `allow_unauthenticated` on loopback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conformance.matrix import EXCUSED, SCENARIO_COUNT, must_pass, passed_through_gateway
from tests.conformance.record import pinned_versions, read_record
from tests.conformance.support import NEXT_VERSION, REQUIREMENT_SETS, run_requirements_async, toolchain_problem
from tests.conformance.upstreams import UPSTREAMS, run_through_gateway

pytestmark = [pytest.mark.anyio, pytest.mark.conformance]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_direct_record_is_current() -> None:
    record = read_record()
    assert record["versions"] == pinned_versions(), (
        "tests/conformance/direct_results.json was recorded with other versions or fixtures: "
        "run `.venv/bin/python -m tests.conformance.record` and commit the file"
    )
    assert record["versions"]["conformance"] == NEXT_VERSION
    assert set(record["upstreams"]) == set(UPSTREAMS)
    for upstream, by_revision in record["upstreams"].items():
        for requirements in REQUIREMENT_SETS:
            direct = by_revision[requirements]
            assert len(direct["passed"]) + len(direct["failed"]) == SCENARIO_COUNT[requirements], upstream


@pytest.mark.parametrize("requirements", REQUIREMENT_SETS)
@pytest.mark.parametrize("upstream", UPSTREAMS)
async def test_what_passes_directly_passes_through_the_gateway(
    upstream: str, requirements: str, tmp_path: Path
) -> None:
    assert toolchain_problem() is None, toolchain_problem()
    direct = read_record()["upstreams"][upstream][requirements]
    excused = EXCUSED.get((upstream, requirements), {})
    result, log = await run_through_gateway(upstream, requirements, tmp_path)

    assert len(result.scenarios) == SCENARIO_COUNT[requirements], result.report()
    lost = sorted(must_pass(upstream, requirements, direct["passed"]) - passed_through_gateway(upstream, result))
    assert not lost, (
        f"{upstream} at {requirements}: {len(lost)} scenario(s) fail through the gateway that pass directly "
        f"or are the gateway's own: {lost}\n{result.report()}\n--- gateway log ---\n{log[-4000:]}"
    )
    stale = sorted(name for name in excused if name in result.passed)
    assert not stale, f"excused but passing now, remove from EXCUSED: {stale}"


async def test_the_runner_reports_a_failing_scenario(tmp_path: Path) -> None:
    # run_requirements_async must be able to say "failed": one 2026-07-28 scenario against a port where
    # nothing listens (0.2 refuses --requirements with --scenario; the runner uses --spec-version then).
    from tests.upstreams.launch import free_port

    url = f"http://127.0.0.1:{free_port()}/mcp"
    result = await run_requirements_async(url, "2026-07-28", out_dir=tmp_path, scenario="tools-call-image")

    assert result.failed == ["tools-call-image"], result.report()
    assert "--requirements cannot be combined" not in result.output
