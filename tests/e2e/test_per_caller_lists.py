"""Lists that depend on who asks (catalog/lists.py, `lists: per_caller | shared`): the real gateway process and a
real upstream process (tests/upstreams/per_caller.py) that lists `own_<caller>` for the caller its `X-Tenant`
header names, and counts the list requests it gets per caller.

- `forwarded` (per caller by default): two users at once each see exactly their own tools, call their own, and
  cannot call the other's; in a server with a shared member too, and for 2026-07-28 clients.
- `lists: shared` on the same kind of upstream: the old behaviour, the first caller's list for everyone.
- `static`: one list for everyone, fetched once.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e.harness import Gateway, manifold_cli, run_gateway
from tests.upstreams.launch import UPSTREAMS, run_http_upstream

pytestmark = pytest.mark.anyio

PER_CALLER = str(UPSTREAMS / "per_caller.py")
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INIT = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}
EXTRA = {"users": {"alice@corp.com": {}, "bob@corp.com": {}}}


@dataclass
class World:
    gw: Gateway
    upstream: str  # the upstream's base URL (its /counts)
    keys: dict[str, str]  # user -> API key

    async def counts(self) -> dict[str, int]:
        async with httpx2.AsyncClient(timeout=10) as http:
            return (await http.get(self.upstream + "/counts")).json()


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(run_http_upstream(PER_CALLER))
        forwarded = {"mode": "forwarded", "allow": ["X-Tenant"]}
        common = {"transport": "http", "protocol": "2025-11-25"}
        upstreams = {
            "tenants": {**common, "url": url + "/tenants", "auth": forwarded},
            "modern": {**common, "url": url + "/modern", "auth": forwarded},
            "mixed-t": {**common, "url": url + "/mixed-t", "auth": forwarded},
            "tenants-shared": {**common, "url": url + "/shared", "auth": forwarded, "lists": "shared"},
            "fixed": {
                **common,
                "url": url + "/fixed",
                "auth": {"mode": "static", "headers": {"X-Tenant": "everyone"}},
            },
        }
        servers = {"mixed": {"members": [{"upstream": "mixed-t", "id": "t"}, {"upstream": "fixed", "id": "f"}]}}
        gw = await stack.enter_async_context(run_gateway(upstreams, servers, extra=EXTRA))
        keys = {}
        for user in ("alice", "bob"):
            done = await manifold_cli(gw, "keys", "create", "--user", f"{user}@corp.com", "--name", "laptop", "--json")
            keys[user] = json.loads(done.stdout)["token"]
        yield World(gw, url.removesuffix("/mcp"), keys)


class Caller:
    """A raw 2025-11-25 client of one server: one session, each request with the caller's `x-mcp-headers`."""

    def __init__(self, gw: Gateway, server: str, key: str, fwd: Any = None) -> None:
        self.url = gw.url(server)
        self.headers = {**ACCEPT, "Authorization": f"Bearer {key}"}
        if fwd is not None:
            self.headers["x-mcp-headers"] = json.dumps(fwd)
        self.http = httpx2.AsyncClient(timeout=60)
        self.next_id = 0

    async def __aenter__(self) -> Caller:
        init = await self.http.post(self.url, json=self.body("initialize", INIT), headers=self.headers)
        assert init.status_code == 200, init.text
        self.headers.update({"Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"})
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    def body(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        return {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}

    async def rpc(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        response = await self.http.post(self.url, json=self.body(method, params), headers=self.headers)
        assert response.status_code == 200, response.text
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
            return [m for m in (json.loads(d) for d in data if d) if "method" not in m][-1]
        return response.json()

    async def tools(self) -> set[str]:
        reply = await self.rpc("tools/list", {})
        return {t["name"] for t in reply["result"]["tools"]}

    async def call(self, name: str) -> str:
        """The tool's text, or the JSON-RPC error's message (prefixed `error: `)."""
        reply = await self.rpc("tools/call", {"name": name, "arguments": {}})
        if "error" in reply:
            return "error: " + reply["error"]["message"]
        result = reply["result"]
        text = "".join(c.get("text", "") for c in result["content"])
        return ("tool error: " if result.get("isError") else "") + text


async def at_once(*jobs: Any) -> list[Any]:
    results: list[Any] = [None] * len(jobs)

    async def run(index: int, job: Any) -> None:
        results[index] = await job

    async with anyio.create_task_group() as group:
        for index, job in enumerate(jobs):
            group.start_soon(run, index, job)
    return results


async def test_two_users_at_once_each_see_and_call_only_their_own_tools(world: World) -> None:
    rounds = 5

    async def use(user: str, other: str) -> None:
        async with Caller(world.gw, "tenants", world.keys[user], {"X-Tenant": user}) as me:
            for _ in range(rounds):
                assert await me.tools() == {"common", f"own_{user}"}, user
                assert await me.call(f"own_{user}") == f"own_{user} for {user}"
                assert await me.call("common") == f"common for {user}"
                # The other's tool is no tool of theirs: the gateway answers as for any unknown name.
                assert await me.call(f"own_{other}") == f"error: Unknown tool: own_{other}"

    await at_once(use("alice", "bob"), use("bob", "alice"))
    counts = await world.counts()
    # Each list was fetched with its own caller's credential (and cached: not once per tools/list).
    assert 1 <= counts.get("/tenants alice", 0) < rounds and 1 <= counts.get("/tenants bob", 0) < rounds, counts


async def test_a_server_with_a_per_caller_and_a_shared_member(world: World) -> None:
    seen = {}
    for user in ("alice", "bob", "alice"):
        async with Caller(world.gw, "mixed", world.keys[user], {"t": {"X-Tenant": user}}) as me:
            seen[user] = await me.tools()
            other = "bob" if user == "alice" else "alice"
            assert await me.call(f"t__own_{user}") == f"own_{user} for {user}"
            assert await me.call(f"t__own_{other}") == f"error: Unknown tool: t__own_{other}"
            assert await me.call("f__own_everyone") == "own_everyone for everyone"
    assert seen["alice"] == {"t__common", "t__own_alice", "f__common", "f__own_everyone"}
    assert seen["bob"] == {"t__common", "t__own_bob", "f__common", "f__own_everyone"}


async def test_modern_clients_see_and_call_their_own_tools(world: World) -> None:
    async def use(user: str, other: str) -> None:
        headers = {"Authorization": f"Bearer {world.keys[user]}", "x-mcp-headers": json.dumps({"X-Tenant": user})}
        target = streamable_http_client(
            world.gw.url("modern"), http_client=httpx2.AsyncClient(headers=headers, timeout=60)
        )
        async with Client(target, mode="2026-07-28") as client:
            listed = await client.list_tools()
            assert {t.name for t in listed.tools} == {"common", f"own_{user}"}
            result = await client.call_tool(f"own_{user}", {})
            assert [c.text for c in result.content if isinstance(c, types.TextContent)] == [f"own_{user} for {user}"]
            with pytest.raises(Exception, match=f"own_{other}"):
                await client.call_tool(f"own_{other}", {})

    await at_once(use("alice", "bob"), use("bob", "alice"))


async def test_lists_shared_keeps_the_first_callers_list_for_everyone(world: World) -> None:
    async with Caller(world.gw, "tenants-shared", world.keys["alice"], {"X-Tenant": "alice"}) as alice:
        assert await alice.tools() == {"common", "own_alice"}
    async with Caller(world.gw, "tenants-shared", world.keys["bob"], {"X-Tenant": "bob"}) as bob:
        assert await bob.tools() == {"common", "own_alice"}  # what the admin asked for: one list, alice's
    counts = await world.counts()
    assert counts.get("/shared alice") == 1 and "/shared bob" not in counts, counts


async def test_a_static_upstream_is_listed_once_for_everyone(world: World) -> None:
    for user in ("alice", "bob", "alice", "bob"):
        async with Caller(world.gw, "fixed", world.keys[user]) as me:
            assert await me.tools() == {"common", "own_everyone"}
            assert await me.call("own_everyone") == "own_everyone for everyone"
    counts = await world.counts()
    fixed = {k: v for k, v in counts.items() if k.startswith("/fixed ")}
    # The `mixed` server's `f` member is this upstream too: still the one list.
    assert fixed == {"/fixed everyone": 1}, counts


async def test_a_modern_listen_subscribes_each_callers_resources_with_their_own_credential(world: World) -> None:
    """subscriptions/listen's `resourceSubscriptions` resolve in the caller's own lists and are subscribed on the
    caller's own upstream session, with their `x-mcp-headers`: they were left out (the stream's subscriptions
    were resolved and made as a caller who sends none, on the session without the tenant header)."""
    meta = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    uri = "tenant://alice/notes"
    listen = {
        "jsonrpc": "2.0",
        "id": "listen-1",
        "method": "subscriptions/listen",
        "params": {"notifications": {"resourcesListChanged": True, "resourceSubscriptions": [uri]}, "_meta": meta},
    }
    headers = {
        "Accept": "text/event-stream, application/json",
        "Content-Type": "application/json",
        "Mcp-Protocol-Version": "2026-07-28",
        "Mcp-Method": "subscriptions/listen",
        "Authorization": f"Bearer {world.keys['alice']}",
        "x-mcp-headers": json.dumps({"X-Tenant": "alice"}),
    }
    async with (
        httpx2.AsyncClient(timeout=30) as http,
        http.stream("POST", world.gw.url("tenants"), json=listen, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        lines = response.aiter_lines()
        with anyio.fail_after(10):
            while "subscriptions/acknowledged" not in (line := await anext(lines)):
                pass
        acknowledged = json.loads(line.removeprefix("data:").strip())
    assert acknowledged["params"]["notifications"]["resourceSubscriptions"] == [uri]
    counts = await world.counts()
    subscribed = {k: v for k, v in counts.items() if k.startswith("subscribe ")}
    assert subscribed == {f"subscribe /tenants alice {uri}": 1}, counts
