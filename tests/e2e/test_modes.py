"""Serving modes and lifecycle: stateless, cancellation, refusing unsafe binds, and the shipped demo."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
import yaml

from tests.e2e.harness import REPO, manifold_cli, run_gateway, write_config
from tests.upstreams.launch import KITCHEN, run_http_upstream
from tests.waiting import wait_for

pytestmark = pytest.mark.anyio
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_stateless_mode_serves_handshake_clients_without_sessions() -> None:
    async with run_http_upstream(KITCHEN) as url:
        async with run_gateway({"up": {"transport": "http", "url": url}}, gateway={"stateless": True}) as gw:
            async with gw.client("up") as client:
                result = await client.call_tool("echo", {"text": "no session"})
                assert result.content[0].text == "no session"
            async with gw.http() as http:
                init = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "initialize",
                    "params": {
                        "protocolVersion": "2025-11-25",
                        "capabilities": {},
                        "clientInfo": {"name": "t", "version": "0"},
                    },
                }
                r = await http.post(gw.url("up"), json=init, headers=ACCEPT)
                assert r.status_code == 200 and "mcp-session-id" not in r.headers
                assert (await http.get(gw.url("up"), headers={"Accept": "text/event-stream"})).status_code == 405


async def test_stateless_mode_promises_no_notifications_it_cannot_send() -> None:
    """Without a session there is no stream for list changes or resource updates (GET is 405, resources/subscribe
    is refused), so initialize declares neither; the MCP Inspector subscribed on `subscribe: true` and failed."""
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    uri = "kitchen://counter"
    async with run_http_upstream(KITCHEN) as url:
        for stateless in (True, False):
            async with run_gateway({"up": {"transport": "http", "url": url}}, gateway={"stateless": stateless}) as gw:
                async with gw.http() as http:
                    r = await http.post(gw.url("up"), json=init, headers=ACCEPT)
                    subscribe = {"jsonrpc": "2.0", "id": 2, "method": "resources/subscribe", "params": {"uri": uri}}
                    headers = {**ACCEPT, "MCP-Protocol-Version": "2025-11-25"}
                    refused = await http.post(gw.url("up"), json=subscribe, headers=headers) if stateless else None
                caps = r.json()["result"]["capabilities"]
                if stateless:
                    assert caps == {"tools": {}, "prompts": {}, "resources": {}, "completions": {}, "logging": {}}
                    # what the capability no longer promises is indeed refused
                    assert refused is not None and "need a session" in refused.json()["error"]["message"]
                else:
                    assert caps["resources"] == {"subscribe": True, "listChanged": True}
                    assert caps["tools"] == caps["prompts"] == {"listChanged": True}


async def test_client_cancellation_reaches_the_upstream(tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    async with run_http_upstream(KITCHEN, "--record", str(record)) as url:
        upstreams = {"up": {"transport": "http", "url": url, "protocol": "2025-11-25"}}
        async with run_gateway(upstreams) as gw, gw.client("up") as client:
            with anyio.move_on_after(1):
                await client.call_tool("slow", {"seconds": 30})
            # the session still works after a cancelled call
            assert (await client.call_tool("echo", {"text": "after"})).content[0].text == "after"
            deadline = time.monotonic() + 10
            while True:
                methods = [json.loads(line)["method"] for line in record.read_text().splitlines()]
                if "notifications/cancelled" in methods or time.monotonic() > deadline:
                    break
                await anyio.sleep(0.05)
    assert "notifications/cancelled" in methods


async def handshake(
    http: Any, url: str, capabilities: dict[str, Any], extra: dict[str, str] | None = None
) -> dict[str, str]:
    """A raw 2025-11-25 session opened on `url` (with `extra` headers: another caller's Authorization, say): the
    headers its later requests carry."""
    hello = {"protocolVersion": "2025-11-25", "capabilities": capabilities, "clientInfo": {"name": "t", "version": "1"}}
    opened = await http.post(
        url,
        json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello},
        headers={**ACCEPT, **(extra or {})},
    )
    return {**ACCEPT, "Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}


async def test_a_cancelled_request_gets_no_answer(tmp_path: Path) -> None:
    """Was (interop with the TypeScript SDK): the gateway answered a cancelled request with -32800 "Request
    cancelled", which the SDK reports as an error ("Received a response for an unknown message ID"); MCP says
    the receiver of a cancellation does not respond. The POST ends without a JSON-RPC message."""
    record = tmp_path / "requests.jsonl"
    async with run_http_upstream(KITCHEN, "--record", str(record)) as url:
        upstreams = {"up": {"transport": "http", "url": url, "protocol": "2025-11-25"}}
        async with run_gateway(upstreams) as gw, gw.http() as http:
            headers = await handshake(http, gw.url("up"), {})
            call = {
                "jsonrpc": "2.0",
                "id": 7,
                "method": "tools/call",
                "params": {"name": "slow", "arguments": {"seconds": 30}},
            }
            answered: list[object] = []

            async def slow_call() -> None:
                answered.append(await http.post(gw.url("up"), json=call, headers=headers))

            async with anyio.create_task_group() as group:
                group.start_soon(slow_call)
                deadline = time.monotonic() + 10
                while not (record.exists() and '"slow"' in record.read_text()):  # the upstream is running it
                    assert time.monotonic() < deadline, "the call never reached the upstream"
                    await anyio.sleep(0.02)
                cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
                assert (await http.post(gw.url("up"), json=cancel, headers=headers)).status_code == 202
            (response,) = answered
            assert response.status_code in (200, 202), response.text
            assert '"id":7' not in response.text.replace(" ", "") and "-32800" not in response.text


@pytest.mark.parametrize("upstream_era", ["2025-11-25", "2026-07-28"])
async def test_a_2026_client_that_closes_its_stream_cancels_the_upstreams_call(
    tmp_path: Path, upstream_era: str
) -> None:
    """Was (fastmcp interop): a 2026-07-28 client's timeout or cancel closed its POST, which is that era's
    cancellation ("the server MUST treat a client disconnect as cancellation"), and the upstream's call ran on
    to its end. Now the upstream is told (notifications/cancelled, or its own stream closed)."""
    record = tmp_path / "requests.jsonl"

    def seen() -> list[dict[str, Any]]:
        return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []

    async with run_http_upstream(KITCHEN, "--record", str(record)) as url:
        upstreams = {"up": {"transport": "http", "url": url, "protocol": upstream_era}}
        async with run_gateway(upstreams) as gw, gw.http() as http:
            envelope = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                        "io.modelcontextprotocol/clientCapabilities": {},
                        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}  # fmt: skip
            call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                    "params": {"name": "slow", "arguments": {"seconds": 30}, "_meta": envelope}}  # fmt: skip
            headers = {"Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2026-07-28",
                       "Mcp-Method": "tools/call", "Mcp-Name": "slow"}  # fmt: skip
            async with anyio.create_task_group() as group:
                group.start_soon(partial(http.post, gw.url("up"), json=call, headers=headers))
                await wait_for(lambda: any(e.get("name") == "slow" for e in seen()), 10, what="the upstream ran it")
                group.cancel_scope.cancel()  # the client gives up: its connection is closed
            await wait_for(
                lambda: any(e.get("name") == "slow" and e.get("cancelled") for e in seen()),
                10,
                what="the upstream's call was cancelled",
            )
            assert "Traceback" not in gw.log() and "Exception in ASGI application" not in gw.log(), gw.log()[-3000:]


def test_serving_without_a_key_is_refused_off_loopback(tmp_path: Path) -> None:
    config = write_config(tmp_path, {}, gateway={"allow_unauthenticated": True})
    run = subprocess.run(
        [sys.executable, "-m", "manifold.cli", "--config", str(config), "serve", "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert run.returncode == 2
    assert "refusing to serve without authentication" in run.stderr


async def test_the_shipped_demo_config_serves_both_demo_upstreams() -> None:
    demo = yaml.safe_load((REPO / "manifold.yaml").read_text())
    async with run_http_upstream("manifold.demo.toolbox") as toolbox_url:
        upstreams = demo["upstreams"]
        upstreams["toolbox"]["url"] = toolbox_url
        upstreams["notes"]["command"] = sys.executable
        servers = {p.stem: yaml.safe_load(p.read_text()) for p in (REPO / "virtual_servers").glob("*.yaml")}
        async with run_gateway(upstreams, servers) as gw, gw.client("demo") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"notes__add_note", "notes__search_notes", "toolbox__count_words", "toolbox__add"} <= names
            assert "toolbox__uuid" not in names
            await client.call_tool("notes__add_note", {"title": "gateway", "body": "works"})
            found = await client.call_tool("notes__search_notes", {"query": "gateway"})
            assert "works" in found.content[0].text or "gateway" in found.content[0].text
            counted = await client.call_tool("toolbox__count_words", {"text": "one two three"})
            assert "3" in counted.content[0].text


async def test_url_elicitation_reaches_a_client_that_supports_it() -> None:
    seen: list[types.ElicitRequestURLParams] = []

    async def on_elicit(context, params) -> types.ElicitResult:
        seen.append(params)
        return types.ElicitResult(action="accept")

    async with run_http_upstream(KITCHEN) as url:
        upstreams = {"up": {"transport": "http", "url": url, "protocol": "2025-11-25"}}
        async with run_gateway(upstreams) as gw:
            async with gw.client("up", elicitation_callback=on_elicit) as client:
                result = await client.call_tool("visit", {"url": "https://example.com/connect"})
                assert result.content[0].text == "accept"
            assert seen and seen[0].mode == "url" and seen[0].url == "https://example.com/connect"
            async with gw.client("up") as client:  # declares no elicitation: the upstream is told so
                try:
                    result = await client.call_tool("visit", {"url": "https://example.com/connect"})
                    outcome = result.content[0].text if result.is_error else "succeeded"
                except Exception as exc:  # the upstream may pass the refusal on as a JSON-RPC error
                    outcome = str(exc)
                assert "elicitation" in outcome


async def test_a_clients_roots_list_changed_reaches_the_upstream_session_of_its_own(tmp_path: Path) -> None:
    """Was (interop with server-everything): the notification was dropped, so a server that cached the roots it
    asked for kept the first ones for good. Only a session of the caller's own hears it (`sessions: per_user`,
    or a per-user credential): on a shared one the server would ask whoever has a call in flight."""
    record = tmp_path / "requests.jsonl"
    async with run_http_upstream(KITCHEN, "--record", str(record)) as url:
        upstreams = {"up": {"transport": "http", "url": url, "protocol": "2025-11-25", "sessions": "per_user"}}
        async with run_gateway(upstreams) as gw, gw.http() as http:
            headers = await handshake(http, gw.url("up"), {"roots": {"listChanged": True}})
            call = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": "x"}},
            }
            assert "result" in (await http.post(gw.url("up"), json=call, headers=headers)).json()
            changed = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
            assert (await http.post(gw.url("up"), json=changed, headers=headers)).status_code == 202
            deadline = time.monotonic() + 10
            while "notifications/roots/list_changed" not in record.read_text():
                assert time.monotonic() < deadline, "the upstream never heard the roots changed"
                await anyio.sleep(0.02)


async def test_a_clients_roots_list_changed_reaches_its_own_handshake_era_session_only(tmp_path: Path) -> None:
    """The 2025-11-25 session a client of that era is relayed through (an `auto` upstream that speaks both eras)
    is the caller's own (isolation probe: shared, the server's question on it could reach another user), so it
    hears the caller's roots/list_changed; another caller's session does not."""
    record = tmp_path / "requests.jsonl"
    async with run_http_upstream(KITCHEN, "--record", str(record)) as url:
        async with run_gateway({"up": {"transport": "http", "url": url}}) as gw, gw.http() as http:
            async with gw.client("up", mode="2026-07-28") as modern:
                await modern.list_tools()  # the upstream's own session: 2026-07-28
            made = await manifold_cli(gw, "keys", "create", "--user", "bob@corp.com", "--name", "b", "--json")
            bob = {"Authorization": f"Bearer {json.loads(made.stdout)['token']}"}
            mine = await handshake(http, gw.url("up"), {"roots": {"listChanged": True}})
            bobs = {**await handshake(http, gw.url("up"), {"roots": {"listChanged": True}}, bob), **bob}
            echo = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "echo", "arguments": {"text": "x"}}}  # fmt: skip
            add = {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "add", "arguments": {"a": 1, "b": 2}},
            }
            assert "result" in (await http.post(gw.url("up"), json=echo, headers=mine)).json()
            assert "result" in (await http.post(gw.url("up"), json=add, headers=bobs)).json()
            changed = {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}
            assert (await http.post(gw.url("up"), json=changed, headers=mine)).status_code == 202
            await wait_for(lambda: "notifications/roots/list_changed" in record.read_text(), 10, what="told upstream")
            seen = [json.loads(line) for line in record.read_text().splitlines()]
            session_of = {
                e.get("name"): e["headers"].get("mcp-session-id") for e in seen if e["method"] == "tools/call"
            }
            told = [
                e["headers"].get("mcp-session-id") for e in seen if e["method"] == "notifications/roots/list_changed"
            ]
            assert all(e["protocol_version"] == "2025-11-25" for e in seen if e["method"] == "tools/call")
            assert session_of["echo"] != session_of["add"]  # one handshake-era session each
            assert told == [session_of["echo"]]
