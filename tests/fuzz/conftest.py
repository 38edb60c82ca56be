"""Property-based fuzzing of a real gateway process (hypothesis), as an outsider attacks it over HTTP.

Profiles (MANIFOLD_FUZZ_PROFILE): `ci` (the default, part of `make test`) runs a fixed, small number of
derandomized examples per test, so every run sends the same requests; `long` (`make fuzz`) runs thousands
per test with fresh randomness. Every request, whatever was sent, must hold the properties `Probe.send`
checks: no 5xx, no traceback in the body or in the gateway's log, the gateway still up (healthz answers) and
its resident memory within RSS_GROWTH_LIMIT of what it was at start. The counts by target are printed at the
end of the run (tests/fuzz/report.py).

One gateway serves the whole package (session scope): three upstreams (kitchen on stdio, kitchen over
streamable HTTP, kitchen in `forwarded` mode so `x-mcp-headers` is read), a virtual server over two of them,
and a real OpenID Provider configured as an IdP, so a JWT-shaped bearer reaches the JWT checks. The admin
API tests start their own gateway (test_admin.py): what they create and delete stays there.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.fuzz.probe import Probe
from tests.fuzz.world import World, run_world

# ---- profiles ---------------------------------------------------------------------------------------------

CI_EXAMPLES = 100
LONG_EXAMPLES = 2500

_COMMON = {
    "deadline": None,  # a real process over HTTP: time per example varies with the machine's load
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    "print_blob": True,
}
# `ci`: a fixed, small set of examples, the same every run (no database: nothing is remembered between runs).
settings.register_profile("ci", max_examples=CI_EXAMPLES, derandomize=True, database=None, **_COMMON)
# `long`: many new examples each run; failing ones are kept and replayed first on the next run.
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("MANIFOLD_FUZZ_EXAMPLES") or LONG_EXAMPLES),
    database=DirectoryBasedExampleDatabase(str(Path(__file__).resolve().parents[2] / ".pytest_cache" / "hypothesis")),
    **_COMMON,
)
PROFILE = os.environ.get("MANIFOLD_FUZZ_PROFILE") or "ci"
settings.load_profile(PROFILE)


@pytest.fixture(scope="session")
async def world() -> AsyncIterator[World]:
    async with run_world() as started:
        yield started


@pytest.fixture(scope="session")
async def probe(world: World) -> AsyncIterator[Probe]:
    async with Probe.open(world.gw) as p:
        yield p
