"""Record what 0.2.0-alpha.12 says about each upstream run directly, for the gateway tests to compare with.

    .venv/bin/python -m tests.conformance.record            # rewrites tests/conformance/direct_results.json

Runs `conformance server --requirements R` for R in 2025-11-25 and 2026-07-28 against every upstream of
tests/conformance/upstreams.py, directly (no gateway), and writes per upstream and revision the scenarios
that passed (no FAILURE check) and, for each failing one, its first failing check. The file also holds
the versions and fixture-file digests it was recorded with (`pinned_versions()`);
tests/e2e/test_conformance_matrix.py checks that they are still the installed ones, so a version bump or
a fixture change without a new record fails at once. Re-run it after
changing an upstream fixture or a pinned version, and commit the file.

Why a record rather than a direct run beside every gateway run: the direct side does not change unless an
upstream or a version does, and running it in every `make test` would double the matrix's cost.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from tests.conformance.support import NODE_DIR, REQUIREMENT_SETS, ConformanceResult, run_requirements_async
from tests.conformance.upstreams import DIRECT_STAND_IN, UPSTREAMS, serve_direct

RECORD = Path(__file__).resolve().with_name("direct_results.json")
REPO = Path(__file__).resolve().parents[2]
# The upstreams' own code: a change to one of them needs a new record.
FIXTURE_FILES = (
    "tests/upstreams/conformance_server.py",
    "tests/upstreams/ts_fixture.mjs",
    "tests/upstreams/legacy_server.py",
    "tests/upstreams/loopback_only.cjs",
)


def _package_version(path: Path) -> str:
    return str(json.loads(path.read_text())["version"])


def pinned_versions() -> dict[str, str]:
    """The versions of everything a recorded result depends on, as installed here now."""
    modules = NODE_DIR / "node_modules"
    legacy = sorted((REPO / ".venv-legacy").glob("lib/python*/site-packages/mcp-*.dist-info"))
    return {
        "conformance": _package_version(modules / "conformance-next" / "package.json"),
        "@modelcontextprotocol/sdk": _package_version(modules / "@modelcontextprotocol" / "sdk" / "package.json"),
        "@modelcontextprotocol/server-everything": _package_version(
            modules / "@modelcontextprotocol" / "server-everything" / "package.json"
        ),
        "mcp": importlib.metadata.version("mcp"),
        "mcp (legacy venv)": legacy[-1].name.removeprefix("mcp-").removesuffix(".dist-info") if legacy else "missing",
        **{f"sha256 {path}": _digest(REPO / path) for path in FIXTURE_FILES},
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def first_failure(result: ConformanceResult, scenario: str) -> str:
    checks = result.scenarios[scenario].failures
    if not checks:
        return ""
    check = checks[0]
    message = str(check.get("errorMessage") or check.get("description") or "")
    return f"{check.get('id')}: {message}"[:300]


def summarise(result: ConformanceResult) -> dict[str, Any]:
    return {
        "passed": sorted(result.passed),
        "failed": {name: first_failure(result, name) for name in sorted(result.failed)},
    }


def read_record() -> dict[str, Any]:
    return json.loads(RECORD.read_text())


async def record_all(out_dir: Path) -> dict[str, Any]:
    results: dict[str, dict[str, Any]] = {}
    for name in UPSTREAMS:
        if name in DIRECT_STAND_IN:
            continue
        results[name] = {}
        for requirements in REQUIREMENT_SETS:
            async with serve_direct(name) as url:
                result = await run_requirements_async(url, requirements, out_dir=out_dir)
            results[name][requirements] = summarise(result)
            print(
                f"{name} {requirements}: {len(result.passed)}/{len(result.scenarios)} in {result.duration_s:.1f}s",
                file=sys.stderr,
            )
    for name, stand_in in DIRECT_STAND_IN.items():
        results[name] = {"direct run of": stand_in, **results[stand_in]}
    return {"versions": pinned_versions(), "upstreams": results}


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="conformance-record-") as tmp:
        record = anyio.run(record_all, Path(tmp))
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    print(f"wrote {RECORD}", file=sys.stderr)


if __name__ == "__main__":
    main()
