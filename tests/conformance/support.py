"""Run the official MCP conformance suite (server side) against a URL and read its verdict.

    from tests.conformance.support import BASELINE, run_conformance_async

    result = await run_conformance_async(url, baseline=BASELINE, out_dir=tmp_path)
    assert result.ok, result.report()

`run_conformance` runs `@modelcontextprotocol/conformance` 0.1.16 from tests/node (install it
with `cd tests/node && npm ci`) under the Node 22 binary that tests/node also pins: the suite
does not load on Node 20. The CLI is

    node dist/index.js server --url URL [--suite active|all|pending | --scenario NAME]
                              [--expected-failures baseline.yml] [-o OUT_DIR]

It runs the scenarios one after another, each in a fresh MCP session (2025-11-25 handshake),
and writes OUT_DIR/server-<scenario>-<timestamp>/checks.json: a list of checks, each with a
`status` of SUCCESS, FAILURE, WARNING or INFO. Exit code: without a baseline, 1 if any check
is FAILURE (warnings do not count); with a baseline, 1 if a scenario outside the baseline has
a FAILURE *or a WARNING*, or if a baseline scenario ran and passed (stale entry); else 0.
`ConformanceResult` re-derives the same verdict from checks.json, so a failing run says which
scenario and check failed, and why.

`run_requirements` runs 0.2.0-alpha.12 (installed as `conformance-next`) with `--requirements
2025-11-25` or `--requirements 2026-07-28`: exactly the scenarios that spec revision requires, plus the
ones it runs but never scores (extension, pending, added after release), each at that revision's wire.
0.2 writes the same checks.json layout, so it returns the same `ConformanceResult`; the exit code only
reflects the scored scenarios, so callers judge scenario by scenario (`passed`, `failed`).

`conformance_server_url` is a pytest fixture that starts tests/upstreams/conformance_server.py
(every fixture the suite needs) on a free port and yields its URL.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from tests.upstreams.launch import run_http_upstream

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "tests" / "node"
NODE = NODE_DIR / "node_modules" / ".bin" / "node"
CONFORMANCE_CLI = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
CONFORMANCE_NEXT_CLI = NODE_DIR / "node_modules" / "conformance-next" / "dist" / "index.js"
NEXT_VERSION = "0.2.0-alpha.12"
"""The version tests/node pins as `conformance-next` (checked against its package.json by the tests)."""
REQUIREMENT_SETS = ("2025-11-25", "2026-07-28")
BASELINE = Path(__file__).resolve().with_name("baseline.yml")
CONFORMANCE_SERVER = REPO / "tests" / "upstreams" / "conformance_server.py"

# One active-suite run takes about 2 s on loopback; the margin covers a slow gateway.
DEFAULT_TIMEOUT_S = 300.0

_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$")
_RUNNING_LINE = re.compile(r"^=== Running scenario: (?P<scenario>\S+) ===$", re.MULTILINE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class ScenarioResult:
    """The checks of one scenario, grouped by status."""

    name: str
    successes: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def clean(self) -> bool:
        """No FAILURE and no WARNING: what the baseline comparison calls passing."""
        return not self.failures and not self.warnings


@dataclass(frozen=True)
class ConformanceResult:
    exit_code: int
    scenarios: dict[str, ScenarioResult]
    """Every scenario that ran; one that crashed before writing checks.json has one FAILURE."""
    expected_failures: frozenset[str]
    """The baseline's `server` list (empty without a baseline)."""
    results_dir: Path
    output: str
    duration_s: float

    @property
    def passed(self) -> list[str]:
        return [name for name, scenario in self.scenarios.items() if not scenario.failed]

    @property
    def failed(self) -> list[str]:
        """Scenarios with at least one FAILURE check."""
        return [name for name, scenario in self.scenarios.items() if scenario.failed]

    @property
    def warned(self) -> list[str]:
        """Scenarios with WARNING checks but no FAILURE."""
        return [name for name, s in self.scenarios.items() if s.warnings and not s.failed]

    @property
    def unexpected_failures(self) -> list[str]:
        """As the suite judges it: with a baseline, warnings fail too; without, only failures."""
        if not self.expected_failures:
            return self.failed
        return [n for n, s in self.scenarios.items() if not s.clean and n not in self.expected_failures]

    @property
    def stale_baseline_entries(self) -> list[str]:
        return [n for n, s in self.scenarios.items() if s.clean and n in self.expected_failures]

    @property
    def ok(self) -> bool:
        """The suite's exit code and our reading of checks.json both say the run passed."""
        return (
            self.exit_code == 0
            and bool(self.scenarios)
            and not self.unexpected_failures
            and not self.stale_baseline_entries
        )

    def report(self) -> str:
        """A summary for an assertion message: what failed, with each check's reason."""
        lines = [
            f"conformance exit code {self.exit_code}, {len(self.scenarios)} scenarios in {self.duration_s:.1f}s, "
            f"results in {self.results_dir}",
            f"passed: {len(self.passed)}; failed: {self.failed}; warnings only: {self.warned}",
        ]
        if self.expected_failures:
            lines.append(
                f"unexpected failures: {self.unexpected_failures}; stale baseline: {self.stale_baseline_entries}"
            )
        for name, scenario in self.scenarios.items():
            for status, checks in (("FAILURE", scenario.failures), ("WARNING", scenario.warnings)):
                for check in checks:
                    reason = check.get("errorMessage") or check.get("description") or ""
                    lines.append(f"  {status} {name} / {check.get('id')}: {reason}")
        if not self.scenarios:
            lines.append("no scenario ran; suite output:")
            lines.append(self.output[-4000:])
        return "\n".join(lines)


def toolchain_problem() -> str | None:
    """Why the suite cannot run here, or None when tests/node is installed."""
    for path in (NODE, CONFORMANCE_CLI, CONFORMANCE_NEXT_CLI):
        if not path.exists():
            return f"{path} is missing: run `cd tests/node && npm ci`"
    return None


def read_baseline(path: Path) -> frozenset[str]:
    """The `server` scenario names of an --expected-failures file (an empty file lists none)."""
    document = yaml.safe_load(path.read_text()) or {}
    return frozenset(str(name) for name in document.get("server") or [])


def run_conformance(
    url: str,
    *,
    baseline: Path | None,
    out_dir: Path,
    suite: str = "active",
    scenario: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cli: Path = CONFORMANCE_CLI,
    requirements: str | None = None,
) -> ConformanceResult:
    """Run the server suite against `url` (blocking) and parse the checks it wrote.

    Results go to a fresh directory inside `out_dir`, so old runs never mix in.
    `scenario` runs that one scenario instead of `suite`. `cli` chooses the suite's version
    (CONFORMANCE_NEXT_CLI for 0.2); `requirements` (0.2 only) runs a revision's scenarios instead of
    `suite`, and with `scenario` runs that scenario at that revision's wire.
    """
    problem = toolchain_problem()
    if problem:
        raise RuntimeError(problem)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_dir = Path(tempfile.mkdtemp(prefix="conformance-", dir=out_dir))
    command = [str(NODE), str(cli), "server", "--url", url, "-o", str(results_dir)]
    if scenario:
        # 0.2 refuses --requirements with --scenario; --spec-version runs the scenario at that revision's wire.
        command += ["--scenario", scenario] + (["--spec-version", requirements] if requirements else [])
    elif requirements is not None:
        command += ["--requirements", requirements]
    else:
        command += ["--suite", suite]
    if baseline is not None:
        command += ["--expected-failures", str(baseline)]
    started = time.monotonic()
    completed = subprocess.run(
        command,
        cwd=NODE_DIR,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    duration_s = time.monotonic() - started
    output = _ANSI.sub("", completed.stdout + completed.stderr)
    ran = [scenario] if scenario else _RUNNING_LINE.findall(output)
    return ConformanceResult(
        exit_code=completed.returncode,
        scenarios=_read_checks(results_dir, ran),
        expected_failures=read_baseline(baseline) if baseline is not None else frozenset(),
        results_dir=results_dir,
        output=output,
        duration_s=duration_s,
    )


async def run_conformance_async(url: str, **options: Any) -> ConformanceResult:
    """`run_conformance` in a worker thread, so a server in this event loop keeps serving."""
    return await anyio.to_thread.run_sync(partial(run_conformance, url, **options))


async def run_requirements_async(
    url: str, requirements: str, *, out_dir: Path, scenario: str | None = None
) -> ConformanceResult:
    """0.2.0-alpha.12 with `--requirements REVISION` against `url` (no baseline: judge per scenario)."""
    return await run_conformance_async(
        url, baseline=None, out_dir=out_dir, cli=CONFORMANCE_NEXT_CLI, requirements=requirements, scenario=scenario
    )


def _read_checks(results_dir: Path, ran: list[str]) -> dict[str, ScenarioResult]:
    found: dict[str, list[dict[str, Any]]] = {}
    for checks_file in results_dir.glob("*/checks.json"):
        match = _RESULT_DIR.match(checks_file.parent.name)
        if match:
            found[match["scenario"]] = json.loads(checks_file.read_text())
    scenarios: dict[str, ScenarioResult] = {}
    # Scenarios in run order; a scenario that crashed in the runner wrote no checks.json.
    for name in dict.fromkeys([*ran, *sorted(found)]):
        checks = found.get(name)
        if checks is None:
            crash = {"id": name, "errorMessage": "the runner wrote no checks.json (scenario crashed)"}
            scenarios[name] = ScenarioResult(name, failures=[crash])
            continue
        scenarios[name] = ScenarioResult(
            name,
            successes=[c for c in checks if c.get("status") == "SUCCESS"],
            failures=[c for c in checks if c.get("status") == "FAILURE"],
            warnings=[c for c in checks if c.get("status") == "WARNING"],
        )
    return scenarios


@asynccontextmanager
async def run_conformance_server(*args: str) -> AsyncIterator[str]:
    """Start tests/upstreams/conformance_server.py on a free port; yield http://127.0.0.1:PORT/mcp."""
    async with run_http_upstream(str(CONFORMANCE_SERVER), *args) as url:
        yield url


@pytest.fixture
async def conformance_server_url() -> AsyncIterator[str]:
    """The URL of a freshly started conformance fixture server (stopped after the test)."""
    async with run_conformance_server() as url:
        yield url
