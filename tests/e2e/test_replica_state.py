"""State that must hold across gateway replicas (issue 14, item 2): two real `manifold serve` processes on ONE
database (the same state dir, so the same secret key), and requests sent to one and then the other, as a
round-robin load balancer does.

- A 2025-11-25 session (a real mcp 2.3.0 client) keeps working when its requests alternate between the
  replicas; its GET stream reconnects on the other replica when the first one dies, and notifications arrive
  there. DELETE on one replica ends the session on the other too (and closes its stream there).
- A `requestState` verifies on any replica; a parked call waiting for input cannot move, and says so.
- An OAuth connect started on one replica finishes on the other; a token refresh happens once across both.

How: docs/replicas.md, "Sessions and state across replicas".
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.e2e import test_connect_flow
from tests.e2e.harness import Gateway, run_gateway
from tests.e2e.test_connect_flow import (
    SERVER,
    USERS,
    Site,
    World,
    browser,
    form,
    link_from_plain_client,
    run_site,
    text_of,
    whoami,
)
from tests.upstreams.launch import KITCHEN, run_http_upstream
from tests.waiting import wait_for, within

pytestmark = pytest.mark.anyio
world = test_connect_flow.world  # the module fixture: the authorization server and the protected upstream

HANDSHAKE = "2025-11-25"
MODERN = "2026-07-28"


@asynccontextmanager
async def two_replicas(upstreams: dict[str, Any]) -> AsyncIterator[tuple[Gateway, Gateway]]:
    """Replica A and replica B: two gateway processes on one folder (config, database, secret key)."""
    with tempfile.TemporaryDirectory(prefix="manifold-replicas-") as tmp:
        async with (
            run_gateway(upstreams, directory=Path(tmp)) as a,
            run_gateway(upstreams, directory=Path(tmp)) as b,
        ):
            yield a, b


class RoundRobin(httpx2.AsyncBaseTransport):
    """The load balancer of these tests: each request goes to the next live replica in turn (POSTs and GETs
    are taken in turn separately, so the first GET stream opens on A whatever the POSTs did). A replica
    taken `down` gets nothing more, as a balancer's health check would have it."""

    def __init__(self, replicas: list[Gateway]) -> None:
        self.replicas = replicas
        self.down: set[int] = set()
        self._turn = {"GET": 0, "other": 0}
        self._inner = httpx2.AsyncHTTPTransport()
        self.log: list[tuple[str, int, int]] = []  # (method, replica index, status)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        kind = "GET" if request.method == "GET" else "other"
        alive = [i for i in range(len(self.replicas)) if i not in self.down]
        index = alive[self._turn[kind] % len(alive)]
        self._turn[kind] += 1
        target = urlsplit(self.replicas[index].base)
        request.url = request.url.copy_with(host=target.hostname, port=target.port)
        request.headers["host"] = target.netloc
        response = await self._inner.handle_async_request(request)
        self.log.append((request.method, index, response.status_code))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def auth(gw: Gateway, key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key or gw.key}"}


def handshake_headers(gw: Gateway, sid: str | None = None) -> dict[str, str]:
    headers = {
        **auth(gw),
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": HANDSHAKE,
    }
    if sid:
        headers["Mcp-Session-Id"] = sid
    return headers


async def initialize(http: httpx2.AsyncClient, gw: Gateway, server: str) -> str:
    body = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": HANDSHAKE, "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}},
    }
    reply = await http.post(gw.url(server), headers=handshake_headers(gw), json=body)
    assert reply.status_code == 200, reply.text
    return reply.headers["mcp-session-id"]


async def list_tools(http: httpx2.AsyncClient, gw: Gateway, server: str, sid: str) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    return await http.post(gw.url(server), headers=handshake_headers(gw, sid), json=body)


# ---- 2025-11-25 sessions ---------------------------------------------------------------------------------------


async def test_a_session_alternating_between_replicas_works_and_its_stream_reconnects_on_the_other() -> None:
    async with (
        run_http_upstream(KITCHEN, "--name", "web") as web,
        two_replicas({"web": {"transport": "http", "url": web}}) as (a, b),
    ):
        lb = RoundRobin([a, b])
        changed = anyio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                changed.set()

        http = httpx2.AsyncClient(headers=auth(a), timeout=60, transport=lb)
        target = streamable_http_client(a.url("web"), http_client=http)
        async with Client(target, mode="legacy", message_handler=on_message) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"echo", "add_tool"} <= names
            for word in ("one", "two", "three"):
                result = await client.call_tool("echo", {"text": word})
                assert not result.is_error and text_of(result) == word
            posts = [(replica, status) for method, replica, status in lb.log if method == "POST"]
            assert {replica for replica, _ in posts} == {0, 1}, posts  # both replicas served the session
            assert all(status in (200, 202) for _, status in posts), posts
            await wait_for(lambda: ("GET", 0, 200) in lb.log, 10, what="the GET stream open on replica A")

            # Replica A dies (its balancer stops sending it anything): the stream reconnects on B.
            lb.down.add(0)
            a.process.kill()
            a.process.wait()
            await wait_for(lambda: ("GET", 1, 200) in lb.log, 15, what="the GET stream reopened on replica B")

            await client.call_tool("add_tool", {"name": "moved"})  # the upstream announces list_changed
            await within(changed.wait(), 10, what="tools/list_changed on the stream reopened on B")
            assert "moved" in {tool.name for tool in (await client.list_tools()).tools}
        await lb.aclose()
        assert "Traceback" not in b.log()  # the replicas share the folder, so this is both replicas' log


async def test_delete_on_one_replica_ends_the_session_on_the_other() -> None:
    async with (
        run_http_upstream(KITCHEN, "--name", "web") as web,
        two_replicas({"web": {"transport": "http", "url": web}}) as (a, b),
    ):
        async with httpx2.AsyncClient(timeout=30) as http:
            sid = await initialize(http, a, "web")
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (
                await http.post(b.url("web"), headers=handshake_headers(b, sid), json=initialized)
            ).status_code == 202
            assert (await list_tools(http, b, "web", sid)).status_code == 200  # B serves A's session

            # An altered id is nobody's session, on either replica.
            altered = sid[:-6] + ("AAAAAA" if not sid.endswith("AAAAAA") else "BBBBBB")
            assert (await list_tools(http, b, "web", altered)).status_code == 404
            assert (await list_tools(http, a, "web", altered)).status_code == 404

            stream_open, stream_ended = anyio.Event(), anyio.Event()

            async def hold_stream_on_b() -> None:
                headers = {**handshake_headers(b, sid), "Accept": "text/event-stream"}
                async with http.stream("GET", b.url("web"), headers=headers) as stream:
                    assert stream.status_code == 200
                    stream_open.set()
                    async for _ in stream.aiter_bytes():
                        pass
                stream_ended.set()

            async with anyio.create_task_group() as group:
                group.start_soon(hold_stream_on_b)
                await within(stream_open.wait(), 5, what="the session's stream open on B")
                ended = await http.delete(a.url("web"), headers=handshake_headers(a, sid))
                assert ended.status_code == 200, ended.text
                await within(stream_ended.wait(), 5, what="B closing the stream of the session DELETEd on A")

            for gw in (b, a):
                gone = await list_tools(http, gw, "web", sid)
                assert gone.status_code == 404, gone.text
                assert gone.json()["error"]["message"] == "Session not found"
            again = await http.delete(b.url("web"), headers=handshake_headers(b, sid))
            assert again.status_code == 404
        assert "Traceback" not in b.log()  # the replicas share the folder, so this is both replicas' log


# ---- requestState and parked calls ------------------------------------------------------------------------------


def modern_call(gw: Gateway, tool: str, arguments: dict[str, Any], **extra: Any) -> tuple[dict[str, str], bytes]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientInfo": {"name": "e2e", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}, "url": {}}},
    }
    headers = {
        **auth(gw),
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "Mcp-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": tool,
    }
    params = {"name": tool, "arguments": arguments, "_meta": meta, **extra}
    return headers, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}).encode()


async def test_a_call_waiting_for_input_on_one_replica_is_named_as_such_on_the_other() -> None:
    # A handshake-era upstream asks mid-call (elicitation): for a 2026-07-28 client the call is parked in the
    # replica that started it, and the retry carries the answer.
    async with run_http_upstream(KITCHEN, "--name", "web") as web:
        upstream = {"web": {"transport": "http", "url": web, "protocol": HANDSHAKE}}
        async with two_replicas(upstream) as (a, b), httpx2.AsyncClient(timeout=30) as http:
            headers, body = modern_call(a, "ask", {"question": "colour?"})
            asked = await http.post(a.url("web"), headers=headers, content=body)
            assert asked.status_code == 200, asked.text
            result = asked.json()["result"]
            assert result["resultType"] == "input_required"
            [key] = result["inputRequests"]
            answers = {key: {"action": "accept", "content": {"answer": "blue"}}}
            extra = {"inputResponses": answers, "requestState": result["requestState"]}
            headers, retry = modern_call(b, "ask", {"question": "colour?"}, **extra)
            elsewhere = await http.post(b.url("web"), headers=headers, content=retry)
            error = elsewhere.json()["error"]
            assert error["code"] == -32602
            assert error["message"] == "the call waiting for input is on another gateway replica; retry the call"

            answered = await http.post(a.url("web"), headers=headers, content=retry)  # where it waits: works
            assert answered.json()["result"]["content"][0]["text"] == "blue", answered.text


# ---- OAuth to upstreams -------------------------------------------------------------------------------------------


@asynccontextmanager
async def two_sites(world: World) -> AsyncIterator[tuple[Site, Site]]:
    with tempfile.TemporaryDirectory(prefix="manifold-replicas-") as tmp:
        async with run_site(world, Path(tmp)) as a, run_site(world, Path(tmp)) as b:
            yield a, b


def on(gw: Gateway, url: str) -> str:
    """The same URL on another replica (what a load balancer in front of both does)."""
    parts, base = urlsplit(url), urlsplit(gw.base)
    return urlunsplit((parts.scheme, base.netloc, parts.path, parts.query, parts.fragment))


async def test_a_connect_started_on_one_replica_finishes_on_the_other(world: World) -> None:
    user = "alice@corp.com"
    async with two_sites(world) as (a, b):
        link = await link_from_plain_client(a, user)  # the link A gave
        async with browser(a) as person:
            consent = await person.consent_page(link, a.keys[user])  # signed in and consenting on A
            assert consent.status_code == 200, consent.text
            approved = await person.post(f"/connect/{SERVER}", form(consent.text, f"/connect/{SERVER}"))
            assert approved.status_code == 303, approved.text
            callback = await person.authorize_at_server(approved.headers["location"], USERS[user])
            done = await person.get(on(b.gw, callback))  # the authorization server's answer reaches B
        assert done.status_code == 200, done.text
        assert "is connected" in done.text
        result = await whoami(a, user)  # and the next call, on A, carries the user's token
        assert not result.is_error, text_of(result)
        assert text_of(result) == "alice"


async def test_a_connect_whose_every_step_lands_on_the_other_replica(world: World) -> None:
    # Round-robin for a browser: the consent page from A, the form posted to B (its CSRF token and sign-in
    # cookie made on A), the authorization server's answer to A (the pending authorization stored by B).
    user = "alice@corp.com"
    async with two_sites(world) as (a, b):
        link = await link_from_plain_client(a, user)
        async with browser(a) as person:
            consent = await person.consent_page(link, a.keys[user])
            assert consent.status_code == 200, consent.text
            approved = await person.post(
                on(b.gw, f"{a.gw.base}/connect/{SERVER}"), form(consent.text, f"/connect/{SERVER}")
            )
            assert approved.status_code == 303, approved.text
            person.gw = b.gw  # the authorization server sends the browser back to where the form was posted
            callback = await person.authorize_at_server(approved.headers["location"], USERS[user])
            done = await person.get(on(a.gw, callback))  # ... and the balancer passes that on to A
        assert done.status_code == 200, done.text
        assert "is connected" in done.text
        result = await whoami(b, user)
        assert not result.is_error and text_of(result) == "alice", text_of(result)


async def test_a_connect_request_state_from_one_replica_verifies_on_the_other(world: World) -> None:
    user = "bob@corp.com"
    async with two_sites(world) as (a, b), httpx2.AsyncClient(timeout=30) as http:
        headers, body = modern_call(a.gw, "whoami", {})
        headers.update(auth(a.gw, a.keys[user]))
        asked = await http.post(a.gw.url(SERVER), headers=headers, content=body)
        result = asked.json()["result"]
        assert result["resultType"] == "input_required", asked.text
        state = result["requestState"]
        # Retried on B without having connected: B accepts A's state (not "requestState is not valid") and
        # asks again, since the account is still not connected.
        headers, retry = modern_call(b.gw, "whoami", {}, requestState=state, inputResponses={})
        headers.update(auth(b.gw, b.keys[user]))
        again = await http.post(b.gw.url(SERVER), headers=headers, content=retry)
        assert "error" not in again.json(), again.text
        assert again.json()["result"]["resultType"] == "input_required"
        # ... and someone else cannot use it there.
        headers.update(auth(b.gw, b.keys["alice@corp.com"]))
        refused = await http.post(b.gw.url(SERVER), headers=headers, content=retry)
        assert refused.json()["error"]["code"] == -32602


async def expire_stored_token(gw: Gateway, principal_id: str) -> None:
    """Time passing for a stored connection: its access token is past its expiry (its refresh token is fine),
    written by another process as the CLI would, so both replicas must notice."""
    from manifold.outbound.oauth import Vault
    from manifold.outbound.oauth.tables import CONNECTIONS_SCOPE
    from manifold.security.crypto import Cipher
    from manifold.store import revisions
    from manifold.store.db import open_database

    engine = await open_database(gw.database_url)
    try:
        vault = Vault(engine, Cipher.load(gw.config_dir / "state"))
        stored = await vault.get(principal_id, SERVER)
        assert stored is not None and stored.refresh_token
        await vault.put(stored.with_tokens(expires_at=time.time() - 5, updated_at=time.time()))
        async with engine.begin() as conn:
            await revisions.bump(conn, CONNECTIONS_SCOPE)
    finally:
        await engine.dispose()


async def test_two_replicas_refreshing_the_same_token_at_once_refresh_it_once(world: World) -> None:
    user = "alice@corp.com"
    async with two_sites(world) as (a, b):
        link = await link_from_plain_client(a, user)
        async with browser(a) as person:
            done = await person.connect(link, a.keys[user], USERS[user])
        assert "is connected" in done.text
        for site in (a, b):  # each replica has the token in memory
            assert text_of(await whoami(site, user)) == "alice"
        await expire_stored_token(a.gw, f"user:{user}")

        before = await world.idp.counts()
        replies: list[httpx2.Response] = []
        async with httpx2.AsyncClient(timeout=60) as http:

            async def call(site: Site) -> None:
                headers, body = modern_call(site.gw, "whoami", {})
                headers.update(auth(site.gw, site.keys[user]))
                replies.append(await http.post(site.gw.url(SERVER), headers=headers, content=body))

            async with anyio.create_task_group() as group:
                for _ in range(10):
                    group.start_soon(call, a)
                    group.start_soon(call, b)
        after = await world.idp.counts()

    assert [r.status_code for r in replies] == [200] * 20, [r.text for r in replies]
    assert {r.json()["result"]["content"][0]["text"] for r in replies} == {"alice"}
    refreshes = after["grants"].get("refresh_token", 0) - before["grants"].get("refresh_token", 0)
    assert refreshes == 1  # the authorization server saw one refresh for the two replicas
    tokens = {entry["authorization"] for entry in a.upstream.tool_calls()[-20:]}
    assert len(tokens) == 1  # both replicas used the one refreshed token
