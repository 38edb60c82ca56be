"""Rate limits and quotas (docs/rate-limits.md) against a real gateway process and a real upstream: a limit
hit (HTTP 429, Retry-After, the JSON-RPC error with `data.retryAfter`) and passing again once refilled; one
principal over its limit while another is served; the audit row; rules changed live through the admin API.

One gateway for the module; each test limits its own tool, so the tests do not share buckets.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from tests.e2e.harness import Gateway, manifold_cli, run_gateway
from tests.replicas.probes import mcp_request
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio

API = "/admin/api"
RATE_LIMITED = -32029
RULES = [
    {"id": "echo-per-user", "what": "tool:kitchen/echo", "rate": "1/s", "burst": 2},
    {"id": "noop-hourly", "what": "tool:kitchen/noop", "rate": "1/hour"},
]


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    async with run_http_upstream(KITCHEN, "--name", "kitchen") as kitchen:
        upstreams = {"kitchen": {"transport": "http", "url": kitchen}}
        async with run_gateway(upstreams, extra={"rate_limits": RULES}) as gateway:
            yield gateway
            assert "Traceback" not in gateway.log(), gateway.log()[-4000:]


async def admin(gw: Gateway, method: str, path: str, body: Any = None) -> httpx2.Response:
    async with gw.http() as http:
        return await http.request(method, f"{gw.base}{API}{path}", json=body)


async def call(gw: Gateway, tool: str, arguments: dict[str, Any], *, key: str | None = None) -> httpx2.Response:
    async with httpx2.AsyncClient(timeout=30) as http:
        return await mcp_request(
            http, gw.base, "kitchen", key or gw.key, "tools/call", {"name": tool, "arguments": arguments}
        )


async def passes_again(gw: Gateway, tool: str, arguments: dict[str, Any], timeout: float = 10.0) -> float:
    """Call until the call passes (a bounded poll; a refused call takes no token); the seconds it took."""
    began = time.monotonic()
    while True:
        answer = await call(gw, tool, arguments)
        if answer.status_code == 200:
            return time.monotonic() - began
        assert answer.status_code == 429, answer.text
        assert time.monotonic() - began < timeout, f"{tool} still refused after {timeout:g}s"
        await anyio.sleep(0.05)


async def test_a_limit_is_hit_with_a_retry_hint_and_passes_again_once_refilled(gw: Gateway) -> None:
    for i in range(2):  # the burst
        ok = await call(gw, "echo", {"text": f"call {i}"})
        assert ok.status_code == 200 and f"call {i}" in ok.text, ok.text
    refused = await call(gw, "echo", {"text": "one too many"})
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert error["code"] == RATE_LIMITED
    assert error["data"] == {"retryAfter": 1, "limit": "echo-per-user"}
    assert "echo-per-user" in error["message"] and "1/s" in error["message"]
    # Someone else is served meanwhile: the rule counts per principal.
    bob = (await admin(gw, "POST", "/keys", {"user": "bob@example.com", "name": "laptop"})).json()["token"]
    other = await call(gw, "echo", {"text": "bob's call"}, key=bob)
    assert other.status_code == 200 and "bob's call" in other.text
    # One token a second: the call passes again within about a second.
    assert await passes_again(gw, "echo", {"text": "again"}) < 5.0


async def test_a_handshake_client_sees_the_error_with_its_retry_hint_and_the_refusal_is_audited(gw: Gateway) -> None:
    async with gw.client("kitchen") as client:
        first = await client.call_tool("noop", {})
        assert not first.is_error
        with pytest.raises(MCPError) as refused:
            await client.call_tool("noop", {})
    assert refused.value.error.code == RATE_LIMITED
    assert refused.value.error.data == {"retryAfter": 3600, "limit": "noop-hourly"}
    async with gw.client("kitchen", transport="sse") as legacy:  # the legacy SSE transport: the error in the stream
        with pytest.raises(MCPError) as in_stream:
            await legacy.call_tool("noop", {})
    assert in_stream.value.error.code == RATE_LIMITED and in_stream.value.error.data["retryAfter"] > 3500
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while not rows:  # the audit log is written in batches: a bounded poll
        done = await manifold_cli(gw, "audit", "--json", "--outcome", "rate_limited", "--limit", "100")
        rows = [r for r in map(json.loads, done.stdout.splitlines()) if r["target"] == "noop"]
        assert rows or time.monotonic() < deadline, "no rate_limited audit row for noop"
        if not rows:
            await anyio.sleep(0.1)
    row = rows[0]
    assert row["outcome"] == "rate_limited" and row["method"] == "tools/call" and row["upstream"] == "kitchen"
    assert "noop-hourly" in row["detail"]


async def test_rules_change_live_through_the_admin_api(gw: Gateway) -> None:
    assert (await call(gw, "add", {"a": 1, "b": 2})).status_code == 200  # no rule yet
    created = await admin(gw, "POST", "/rate-limits", {"id": "add-live", "what": "tool:kitchen/add", "rate": "1/hour"})
    assert created.status_code == 201, created.text
    assert created.json() == {
        "id": "add-live",
        "source": "api",
        "what": "tool:kitchen/add",
        "rate": "1/hour",
        "who": "anyone",
        "per": ["principal"],
    }
    assert (await call(gw, "add", {"a": 1, "b": 2})).status_code == 200
    assert (await call(gw, "add", {"a": 1, "b": 2})).status_code == 429  # in force at once
    listed = {r["id"]: r["source"] for r in (await admin(gw, "GET", "/rate-limits")).json()}
    assert listed == {"echo-per-user": "manifold.yaml", "noop-hourly": "manifold.yaml", "add-live": "api"}

    changed = await admin(gw, "PUT", "/rate-limits/add-live", {"what": "tool:kitchen/add", "rate": "1000/s"})
    assert changed.status_code == 200, changed.text
    assert (await call(gw, "add", {"a": 1, "b": 2})).status_code == 200

    bad = await admin(gw, "POST", "/rate-limits", {"what": "tool:kitchen", "rate": "1/s"})
    assert bad.status_code == 400 and "what" in bad.json()["error"]
    assert (await admin(gw, "PUT", "/rate-limits/echo-per-user", {"rate": "9/s"})).status_code == 409  # the file's
    assert (await admin(gw, "DELETE", "/rate-limits/add-live")).status_code == 200
    assert (await admin(gw, "DELETE", "/rate-limits/add-live")).status_code == 404
    ids = [r["id"] for r in (await admin(gw, "GET", "/rate-limits")).json()]
    assert ids == ["echo-per-user", "noop-hourly"]

    # Audit rows are written in the background (batched): poll the operator's view until the last one is there.
    async def audited_methods() -> set[str]:
        done = await manifold_cli(gw, "audit", "--json", "--limit", "200")
        rows = map(json.loads, done.stdout.splitlines())
        return {r["method"] for r in rows if str(r["target"]).startswith("/admin/api/rate-limits")}

    deadline = time.monotonic() + 20
    while not (methods := await audited_methods()) >= {"admin POST", "admin PUT", "admin DELETE"}:
        assert time.monotonic() < deadline, f"admin changes audited: {methods}"
        await anyio.sleep(0.1)
