"""Identity changes apply to open notification streams too: a stream whose key is revoked, or whose caller
loses the grant for the server, is closed — without waiting for that caller's next request — and the
streams of everyone else stay open."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest

from tests.e2e.harness import Gateway, manifold_cli, run_gateway
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio

META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {},
}
LISTEN = {
    "jsonrpc": "2.0",
    "id": "listen-1",
    "method": "subscriptions/listen",
    "params": {"notifications": {"toolsListChanged": True}, "_meta": META},
}
HEADERS = {
    "Accept": "text/event-stream, application/json",
    "Content-Type": "application/json",
    "Mcp-Protocol-Version": "2026-07-28",
}


@pytest.fixture(scope="module")
async def gw() -> AsyncIterator[Gateway]:
    async with run_http_upstream(KITCHEN, "--name", "web") as web:
        extra = {"teams": {"eng": None}, "grants": [{"who": "team:eng", "what": ["server:web"]}]}
        async with run_gateway({"web": {"transport": "http", "url": web}}, extra=extra) as gateway:
            yield gateway


async def cli_json(gw: Gateway, *args: str) -> dict:
    return json.loads((await manifold_cli(gw, *args, "--json")).stdout)


@asynccontextmanager
async def listening(http: httpx2.AsyncClient, gw: Gateway, token: str) -> AsyncIterator[AsyncIterator[str]]:
    """An open subscriptions/listen stream, acknowledged; yields its remaining lines."""
    headers = {**HEADERS, "Mcp-Method": "subscriptions/listen", "Authorization": f"Bearer {token}"}
    async with http.stream("POST", gw.url("web"), json=LISTEN, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        lines = response.aiter_lines()
        with anyio.fail_after(10):
            while "subscriptions/acknowledged" not in await anext(lines):
                pass
        yield lines


async def ended(lines: AsyncIterator[str]) -> bool:
    with anyio.fail_after(15):
        async for _ in lines:
            pass
    return True


async def hears_list_changed(lines: AsyncIterator[str]) -> bool:
    with anyio.fail_after(10):
        async for line in lines:
            if "notifications/tools/list_changed" in line:
                return True
    return False


async def add_tool(http: httpx2.AsyncClient, gw: Gateway, token: str, name: str) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "add_tool", "arguments": {"name": name}, "_meta": META},
    }
    headers = {**HEADERS, "Mcp-Method": "tools/call", "Mcp-Name": "add_tool", "Authorization": f"Bearer {token}"}
    reply = await http.post(gw.url("web"), json=body, headers=headers)
    assert reply.status_code == 200 and "result" in reply.json(), reply.text


async def test_revoking_a_key_closes_its_stream_and_only_its_stream(gw: Gateway) -> None:
    erin = await cli_json(gw, "users", "create", "erin@corp.com", "--team", "eng")
    frank = await cli_json(gw, "users", "create", "frank@corp.com", "--team", "eng")
    erin_key = await cli_json(gw, "keys", "create", "--user", erin["id"], "--name", "stream")
    frank_key = await cli_json(gw, "keys", "create", "--user", frank["id"], "--name", "stream")
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=None)) as http:
        async with listening(http, gw, erin_key["token"]) as erins, listening(http, gw, frank_key["token"]) as franks:
            await manifold_cli(gw, "keys", "revoke", erin_key["id"])
            assert await ended(erins)  # no request from erin was needed
            await add_tool(http, gw, frank_key["token"], "after_revocation")
            assert await hears_list_changed(franks)  # frank's stream outlived the check


async def test_losing_the_grant_closes_the_stream(gw: Gateway) -> None:
    grant = await cli_json(gw, "grants", "add", "--who", "user:gina@corp.com", "--what", "server:web")
    key = await cli_json(gw, "keys", "create", "--user", "gina@corp.com", "--name", "stream")
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=None)) as http:
        async with listening(http, gw, key["token"]) as lines:
            await manifold_cli(gw, "grants", "remove", grant["id"])
            assert await ended(lines)


@pytest.fixture(scope="module")
async def pair() -> AsyncIterator[Gateway]:
    async with run_http_upstream(KITCHEN, "--name", "one") as one, run_http_upstream(KITCHEN, "--name", "two") as two:
        upstreams = {"one": {"transport": "http", "url": one}, "two": {"transport": "http", "url": two}}
        servers = {"pair": {"members": [{"upstream": "one"}, {"upstream": "two"}]}}
        extra = {
            "teams": {"eng": None},
            "grants": [{"who": "team:eng", "what": ["server:one"]}, {"who": "user:dev", "what": ["server:*"]}],
        }
        async with run_gateway(upstreams, servers, extra=extra) as gateway:
            yield gateway


async def test_list_changes_of_an_upstream_the_caller_is_not_given_are_not_sent(pair: Gateway) -> None:
    gw = pair
    erin = await cli_json(gw, "users", "create", "erin@corp.com", "--team", "eng")
    key = await cli_json(gw, "keys", "create", "--user", erin["id"], "--name", "stream")

    async def listen(http: httpx2.AsyncClient, token: str) -> Any:
        headers = {**HEADERS, "Mcp-Method": "subscriptions/listen", "Authorization": f"Bearer {token}"}
        return http.stream("POST", gw.url("pair"), json=LISTEN, headers=headers)

    async def call(http: httpx2.AsyncClient, tool: str, name: str) -> None:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": tool, "arguments": {"name": name}, "_meta": META},
        }
        headers = {**HEADERS, "Mcp-Method": "tools/call", "Mcp-Name": tool, "Authorization": f"Bearer {gw.key}"}
        reply = await http.post(gw.url("pair"), json=body, headers=headers)
        assert reply.status_code == 200 and "result" in reply.json(), reply.text

    async def next_change(lines: Any) -> None:
        with anyio.fail_after(10):
            while "notifications/tools/list_changed" not in await anext(lines):
                pass

    async with httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=None)) as http:
        async with await listen(http, key["token"]) as erins, await listen(http, gw.key) as devs:
            erin_lines, dev_lines = erins.aiter_lines(), devs.aiter_lines()
            for lines in (erin_lines, dev_lines):
                with anyio.fail_after(10):
                    while "subscriptions/acknowledged" not in await anext(lines):
                        pass
            await call(http, "two__add_tool", "hidden_from_erin")
            await next_change(dev_lines)  # the hub has pushed it to every listener it was going to
            await call(http, "one__add_tool", "seen_by_erin")
            await next_change(dev_lines)
            await manifold_cli(gw, "keys", "revoke", key["id"])  # ends erin's stream: count what reached it
            with anyio.fail_after(15):
                seen = [line async for line in erin_lines if "notifications/tools/list_changed" in line]
    assert len(seen) == 1
