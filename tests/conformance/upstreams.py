"""The upstreams the 0.2.0-alpha.12 conformance matrix runs against, directly and behind the gateway.

    async with serve_direct("ts") as url: ...              # the upstream's own MCP URL
    async with gateway_entry("ts") as entry: ...           # its `upstreams:` entry in the gateway config

| name             | what                                                                              |
|------------------|-----------------------------------------------------------------------------------|
| fixture          | tests/upstreams/conformance_server.py (mcp 2.3.0, Python), streamable HTTP          |
| ts               | tests/upstreams/ts_fixture.mjs (@modelcontextprotocol/sdk, Node 22), streamable HTTP |
| everything-stdio | @modelcontextprotocol/server-everything, stdio (the gateway's child process)        |
| everything-http  | @modelcontextprotocol/server-everything, streamable HTTP on 127.0.0.1              |
| legacy           | tests/upstreams/legacy_server.py in .venv-legacy (mcp 1.x, handshake only), HTTP    |

The suite speaks HTTP only, so the direct side of everything-stdio is the same server-everything build
over streamable HTTP (everything-http's direct run): what the same server code does, directly.

Protocol: the Python fixture is pinned to 2025-11-25 in the gateway config, as in
test_conformance_gateway.py (its sampling, elicitation and subscribe fixtures are written for that
era); every other upstream is configured as a user would, `protocol: auto`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.conformance.support import CONFORMANCE_SERVER, ConformanceResult, run_requirements_async
from tests.e2e.harness import run_gateway
from tests.upstreams.launch import (
    EVERYTHING,
    LEGACY_PYTHON,
    LEGACY_SERVER,
    NODE,
    run_everything_http,
    run_http_upstream,
    run_ts_fixture,
)

UPSTREAMS = ("fixture", "ts", "everything-stdio", "everything-http", "legacy")

TITLES = {
    "fixture": "Python fixture (`tests/upstreams/conformance_server.py`, mcp 2.3.0)",
    "ts": "TypeScript-SDK fixture (`tests/upstreams/ts_fixture.mjs`, SDK 1.32.2)",
    "everything-stdio": "server-everything 2026.8.31, stdio",
    "everything-http": "server-everything 2026.8.31, streamable HTTP",
    "legacy": "handshake-only Python server (`.venv-legacy`, mcp 1.x)",
}

# Whose direct run stands for an upstream the suite cannot reach itself.
DIRECT_STAND_IN = {"everything-stdio": "everything-http"}


@asynccontextmanager
async def serve_direct(name: str) -> AsyncIterator[str]:
    """Start the upstream `name` as an HTTP server the suite can reach; yield its URL."""
    name = DIRECT_STAND_IN.get(name, name)
    if name == "fixture":
        async with run_http_upstream(str(CONFORMANCE_SERVER)) as url:
            yield url
    elif name == "ts":
        async with run_ts_fixture() as url:
            yield url
    elif name == "everything-http":
        async with run_everything_http() as url:
            yield url
    elif name == "legacy":
        async with run_http_upstream(LEGACY_SERVER, python=LEGACY_PYTHON) as url:
            yield url
    else:
        raise ValueError(f"unknown upstream {name!r}")


@asynccontextmanager
async def gateway_entry(name: str) -> AsyncIterator[dict[str, Any]]:
    """Start the upstream `name` (unless the gateway starts it: stdio); yield its gateway config entry."""
    if name == "everything-stdio":
        yield {"transport": "stdio", "command": NODE, "args": [EVERYTHING, "stdio"]}
        return
    protocol = "2025-11-25" if name == "fixture" else "auto"
    async with serve_direct(name) as url:
        yield {"transport": "http", "url": url, "protocol": protocol}


async def run_through_gateway(name: str, requirements: str, out_dir: Path) -> tuple[ConformanceResult, str]:
    """The suite at `requirements` against upstream `name` behind a namespace-off virtual server of a fresh
    gateway (allow_unauthenticated: the suite sends no credentials); returns its result and the gateway log."""
    async with gateway_entry(name) as entry:
        servers = {"conformance": {"namespace": False, "members": [{"upstream": "up"}]}}
        async with run_gateway({"up": entry}, servers, gateway={"allow_unauthenticated": True}) as gw:
            result = await run_requirements_async(gw.url("conformance"), requirements, out_dir=out_dir)
            return result, gw.log()
