"""What the conformance matrix demands of the gateway (tests/e2e/test_conformance_matrix.py, issue 10).

A scenario must pass through the gateway when it passes against the upstream directly, or when it is
about the server's own face (`GATEWAY_FACE`: the gateway, not the upstream, answers it), unless
`EXCUSED` lists it with a reason naming the upstream's own defect. Never excuse a gateway defect.
"""

from __future__ import annotations

from collections.abc import Iterable

from tests.conformance.support import ConformanceResult

# Scenarios the gateway answers itself, so they must pass through it with any upstream.
GATEWAY_FACE: dict[str, frozenset[str]] = {
    "2025-11-25": frozenset({"server-initialize", "ping", "server-session-lifecycle", "dns-rebinding-protection"}),
    "2026-07-28": frozenset(
        {
            "server-stateless",
            "caching",
            "http-header-validation",
            "http-custom-header-server-validation",
            "dns-rebinding-protection",
        }
    ),
}

# (upstream, revision) -> {scenario: reason naming the upstream's own defect}.
_NO_FIXTURE_TOOLS = (
    "the upstream has no {tool} tool (it lacks the suite's fixtures); directly, the suite counts the upstream's "
    "isError 'unknown tool' result as a pass (spec-notes §2), while the gateway answers a tool it does not list "
    "with JSON-RPC -32602, as the 2025-11-25 specification says for unknown tools"
)
_VACUOUS = {
    "tools-call-simple-text": _NO_FIXTURE_TOOLS.format(tool="test_simple_text"),
    "tools-call-error": _NO_FIXTURE_TOOLS.format(tool="test_error_handling"),
}
EXCUSED: dict[tuple[str, str], dict[str, str]] = {
    ("everything-stdio", "2025-11-25"): _VACUOUS,
    ("everything-http", "2025-11-25"): _VACUOUS,
    ("legacy", "2025-11-25"): _VACUOUS,
}

# Upstreams without the 2026-07-28 suite's diagnostic tools (test_missing_capability, test_streaming_elicitation,
# test_logging_tool, a tool with an x-mcp-header parameter). Their defect: the suite cannot exercise some checks
# of server-stateless and http-custom-header-server-validation through them, and says so with a FAILURE
# "Not testable: server does not list the diagnostic tool ..." / "... exposes no tool with x-mcp-header
# annotations". Only those checks are excused, only for these upstreams: every other check of the scenario
# still counts. The TypeScript fixture has the tools, so through it every check is judged (and a gateway that
# hid a diagnostic tool would fail there).
WITHOUT_DIAGNOSTIC_TOOLS = frozenset({"fixture", "everything-stdio", "everything-http", "legacy"})
_UNTESTABLE = ("Not testable: server does not list the diagnostic tool", "Not testable: server exposes no tool")

# How many scenarios each revision runs (scored and unscored); guards against a vacuous pass.
SCENARIO_COUNT = {"2025-11-25": 33, "2026-07-28": 50}


def must_pass(upstream: str, requirements: str, passed_directly: Iterable[str]) -> set[str]:
    """The scenarios that must pass through the gateway in front of `upstream` at `requirements`."""
    excused = EXCUSED.get((upstream, requirements), {})
    return (set(passed_directly) | GATEWAY_FACE[requirements]) - set(excused)


def passed_through_gateway(upstream: str, result: ConformanceResult) -> set[str]:
    """The scenarios that passed, counting as passed a scenario whose only failing checks could not be
    exercised for want of a diagnostic tool the upstream does not have (`WITHOUT_DIAGNOSTIC_TOOLS`)."""
    passed = set(result.passed)
    if upstream in WITHOUT_DIAGNOSTIC_TOOLS:
        for name, scenario in result.scenarios.items():
            messages = [str(check.get("errorMessage") or "") for check in scenario.failures]
            if messages and all(message.startswith(_UNTESTABLE) for message in messages):
                passed.add(name)
    return passed
