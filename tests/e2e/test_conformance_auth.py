"""The official MCP conformance suite's OAuth *client* scenarios, against Manifold's outbound OAuth client.

`conformance client --command "python tests/conformance/auth_client.py" --suite S` (0.2.0-alpha.12, installed
as `conformance-next`) starts, per scenario, the
suite's own protected MCP server and authorization server (each with its own trap: metadata at odd paths, a
PRM for another resource, scope challenges, one token-endpoint auth method, no registration…), runs the
command with the server URL appended, and judges what reached its servers. auth_client.py connects the way
the gateway does for a user (OAuthFlows.start → the browser → OAuthFlows.complete → OAuthBroker).

Excused scenarios are in tests/conformance/auth_baseline.yml, each with its reason, enforced both ways (a
listed scenario that passes fails the test). Only the `auth/*` scenarios are judged: 0.2's draft suite also
holds 2026-07-28 client scenarios that are not about OAuth (request _meta, Mcp-Method headers, input_required
state), which test a general MCP client; auth_client.py is not one (the gateway's own MCP client is tested
through the gateway elsewhere). The runner's exit code counts those too, so the test reads checks.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import yaml

from tests.conformance.support import CONFORMANCE_NEXT_CLI, NODE, NODE_DIR, REPO, toolchain_problem

pytestmark = [pytest.mark.anyio, pytest.mark.conformance]

AUTH_CLIENT = REPO / "tests" / "conformance" / "auth_client.py"
AUTH_BASELINE = REPO / "tests" / "conformance" / "auth_baseline.yml"
# The runner runs a suite's scenarios in parallel, each with a 30 s client timeout.
TIMEOUT_S = 300.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RESULT_DIR = re.compile(r"^(?P<name>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


@dataclass(frozen=True)
class Scenario:
    name: str
    checks: list[dict]

    def with_status(self, status: str) -> list[dict]:
        return [c for c in self.checks if c.get("status") == status]

    @property
    def clean(self) -> bool:
        return not self.with_status("FAILURE") and not self.with_status("WARNING")


def run_client_suite(suite: str, out_dir: Path) -> tuple[int, dict[str, Scenario], str]:
    results = Path(tempfile.mkdtemp(prefix=f"conformance-client-{suite}-", dir=out_dir))
    # The runner splits --command on spaces and appends the server URL.
    command = f"{sys.executable} {AUTH_CLIENT}"
    completed = subprocess.run(
        [str(NODE), str(CONFORMANCE_NEXT_CLI), "client", "--command", command, "--suite", suite, "-o", str(results)],
        cwd=NODE_DIR,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    scenarios: dict[str, Scenario] = {}
    # Results land in <out>/auth/<scenario>-<timestamp>/checks.json (scenario names contain a slash).
    for checks in results.glob("**/checks.json"):
        match = _RESULT_DIR.match(checks.parent.name)
        if match and checks.parent.parent.name == "auth":
            name = f"{checks.parent.parent.relative_to(results).as_posix()}/{match['name']}".lstrip("./")
            scenarios[name] = Scenario(name, json.loads(checks.read_text()))
    return completed.returncode, scenarios, _ANSI.sub("", completed.stdout + completed.stderr)


def report(scenarios: dict[str, Scenario], output: str) -> str:
    lines = []
    for scenario in scenarios.values():
        for status in ("FAILURE", "WARNING"):
            for check in scenario.with_status(status):
                lines.append(f"  {status} {scenario.name} / {check.get('id')}: {check.get('description')}")
    return "\n".join(lines) + "\n--- runner output ---\n" + output[-6000:]


# Scenarios where the client must refuse to finish: it asked for authorization but must not redeem the code
# (RFC 9207: an `iss` that is missing where the server promised one, wrong, or not promised at all), or must
# not even start (metadata whose issuer is not the one asked for; a PRM for another resource).
REFUSES_TOKEN = {"auth/iss-supported-missing", "auth/iss-wrong-issuer", "auth/iss-unexpected"}
REFUSES_START = {"auth/metadata-issuer-mismatch", "auth/resource-mismatch"}


@pytest.mark.parametrize(
    ("suite", "expected"),
    [
        # metadata locations ×4, CIMD, scope selection ×5, token endpoint auth ×3, pre-registration
        ("auth", 14),
        # a PRM naming another resource, offline_access ×2, authorization-server migration (SEP-2352),
        # RFC 9207 iss ×6, an issuer mismatch in the authorization server's metadata
        ("draft", 11),
        # 2025-03-26 servers without protected-resource metadata (one excused: see the baseline)
        ("backcompat", 2),
    ],
)
async def test_client_auth_scenarios(tmp_path: Path, suite: str, expected: int) -> None:
    assert toolchain_problem() is None, toolchain_problem()
    started = time.monotonic()
    _code, scenarios, output = await anyio.to_thread.run_sync(run_client_suite, suite, tmp_path)
    excused = set((yaml.safe_load(AUTH_BASELINE.read_text()) or {}).get("client") or [])
    assert len(scenarios) == expected, f"{sorted(scenarios)}\n{output[-4000:]}"
    unexpected = [name for name, s in scenarios.items() if not s.clean and name not in excused]
    stale = [name for name, s in scenarios.items() if s.clean and name in excused]
    assert not unexpected and not stale, f"unexpected: {unexpected}, stale: {stale}\n" + report(scenarios, output)
    for name, scenario in scenarios.items():
        ids = {str(c.get("id")) for c in scenario.checks}
        if name in excused or name == "auth/authorization-server-migration":
            continue  # migration: the checks are about the second authorization server, judged by the suite
        if name in REFUSES_START:
            assert "authorization-request" not in ids, f"{name}: {sorted(ids)}"
        elif name in REFUSES_TOKEN:
            # Sent to the authorization server, then refused the callback: no token request.
            assert "authorization-request" in ids and "token-request" not in ids, f"{name}: {sorted(ids)}"
        elif name != "auth/iss-normalized":
            # Real progress: an authorization and a token request.
            assert {"authorization-request", "token-request"} <= ids, f"{name}: {sorted(ids)}"
    assert time.monotonic() - started < TIMEOUT_S
    if suite == "draft":
        # The protected-resource metadata names https://evil.example.com/mcp: the client stopped before it
        # sent anyone to an authorization server, and said why.
        stderr = next(tmp_path.glob("**/resource-mismatch-*/stderr.txt")).read_text()
        assert "is for 'https://evil.example.com/mcp', not for this upstream" in stderr
