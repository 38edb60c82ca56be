"""What the gateway answers at the HTTP level: credentials, unknown servers, DNS rebinding, body limits,
sessions, health. Raw HTTP, so the assertions are about the wire."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.harness import Gateway, run_gateway
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    async with run_http_upstream(KITCHEN) as url:
        async with run_gateway(
            {"up": {"transport": "http", "url": url}}, gateway={"max_body_bytes": 10_000}
        ) as gateway:
            yield gateway


async def test_missing_or_wrong_key_is_401_with_www_authenticate(gw: Gateway) -> None:
    async with gw.http() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
            http.headers.pop("Authorization", None)
            r = await http.post(gw.url("up"), json=INIT, headers={**ACCEPT, **headers})
            assert r.status_code == 401
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert gw.key not in r.text


async def test_unknown_server_is_404_with_a_json_body(gw: Gateway) -> None:
    async with gw.http() as http:
        r = await http.post(gw.url("nope"), json=INIT, headers=ACCEPT)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == "unknown server 'nope'"  # a JSON-RPC error: SDK clients show it
    assert r.json()["error"]["data"] == {"error": "unknown server", "server": "nope"}


@pytest.mark.parametrize("headers", [{"Host": "evil.example.com"}, {"Origin": "http://evil.example.com"}])
async def test_dns_rebinding_is_refused(gw: Gateway, headers: dict[str, str]) -> None:
    async with gw.http() as http:
        r = await http.post(gw.url("up"), json=INIT, headers={**ACCEPT, **headers})
        assert r.status_code == 403
        ok = await http.post(gw.url("up"), json=INIT, headers={**ACCEPT, "Origin": "http://localhost:1234"})
        assert ok.status_code == 200


async def test_oversized_body_is_413(gw: Gateway) -> None:
    big = {**INIT, "params": {**INIT["params"], "padding": "x" * 20_000}}
    async with gw.http() as http:
        r = await http.post(gw.url("up"), json=big, headers=ACCEPT)
    assert r.status_code == 413


async def test_bad_json_is_a_parse_error_not_a_500(gw: Gateway) -> None:
    async with gw.http() as http:
        r = await http.post(gw.url("up"), content=b"{not json", headers=ACCEPT)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == -32700


async def test_sessions_are_bound_and_can_be_ended(gw: Gateway) -> None:
    async with gw.http() as http:
        r = await http.post(gw.url("up"), json=INIT, headers=ACCEPT)
        assert r.status_code == 200
        sid = r.headers["mcp-session-id"]
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        common = {**ACCEPT, "MCP-Protocol-Version": "2025-11-25"}
        assert (await http.post(gw.url("up"), json=ping, headers=common)).status_code == 400  # no session id
        ok = await http.post(gw.url("up"), json=ping, headers={**common, "Mcp-Session-Id": sid})
        assert ok.status_code == 200 and ok.json()["result"] == {}
        # the session belongs to its server
        other = await http.post(gw.url("nope"), json=ping, headers={**common, "Mcp-Session-Id": sid})
        assert other.status_code == 404
        assert (await http.delete(gw.url("up"), headers={"Mcp-Session-Id": sid})).status_code == 200
        gone = await http.post(gw.url("up"), json=ping, headers={**common, "Mcp-Session-Id": sid})
        assert gone.status_code == 404


async def test_a_single_result_is_one_json_body(gw: Gateway) -> None:
    """No SSE framing when nothing streams: this is what keeps a relayed call cheap."""
    async with gw.http() as http:
        r = await http.post(gw.url("up"), json=INIT, headers=ACCEPT)
        sid = r.headers["mcp-session-id"]
        call = {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x"}},
        }
        r = await http.post(gw.url("up"), json=call, headers={**ACCEPT, "Mcp-Session-Id": sid})
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["result"]["content"][0]["text"] == "x"


async def test_health_endpoints_report_upstreams(gw: Gateway) -> None:
    async with gw.http() as http:
        health = (await http.get(f"{gw.base}/healthz")).json()
        ready = await http.get(f"{gw.base}/readyz")
    assert "up" in health["upstreams"]
    assert ready.status_code == 200 and "up" in ready.json()["servers"]


async def test_a_browsers_favicon_request_gets_no_icon_and_no_error(gw: Gateway) -> None:
    """Browsers ask every site for /favicon.ico; a 404 was logged as an error in their console on every page."""
    async with gw.http() as http:
        answer = await http.get(f"{gw.base}/favicon.ico")
    assert answer.status_code == 204 and answer.content == b""
    assert "content-length" not in answer.headers and "max-age" in answer.headers["cache-control"]
