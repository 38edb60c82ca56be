"""The audit trail of the real gateway, read back the way an operator would (`manifold audit --json`, the
JSON-lines mirror), and the promise that no credential is ever written down: every token a test used —
accepted or refused, API key, service-account token or IdP JWT — is searched for in the raw bytes of every
file under the state directory, in the gateway's log, and in what the upstream received.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.e2e.harness import Gateway, manifold_cli, run_gateway, stdio_upstream
from tests.idp import Idp, IdpClient, run_idp
from tests.upstreams.launch import KITCHEN, run_http_upstream

pytestmark = pytest.mark.anyio

AUDIENCE = "https://manifold.e2e.test/mcp"
SHARED = "shared"
AUDIT_DEADLINE_S = 15.0
STOP_DEADLINE_S = 10.0


@dataclass
class World:
    gw: Gateway
    idp: Idp
    recorded: Path  # every message the HTTP upstream received, with its headers
    tokens: list[str] = field(default_factory=list)  # every credential the tests presented


@pytest.fixture
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    recorded = tmp_path_factory.mktemp("upstream") / "received.jsonl"
    async with (
        run_idp([IdpClient("erin", claims={"email": "erin@corp.com"})]) as idp,
        run_http_upstream(KITCHEN, "--name", "alpha", "--record", str(recorded)) as alpha_url,
    ):
        upstreams = {
            "alpha": {"transport": "http", "url": alpha_url},
            "beta": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "beta"),
        }
        servers = {SHARED: {"members": [{"upstream": "alpha"}, {"upstream": "beta"}]}}
        extra = {
            "identity": {"idps": {"corp": {"issuer": idp.issuer, "audience": [AUDIENCE]}}},
            "users": {"alice@corp.com": {"teams": ["eng"]}},
            "service_accounts": {"ci-bot": {}},
            "grants": [
                {"who": "team:eng", "what": ["server:alpha"]},
                {"who": "sa:ci-bot", "what": ["tool:alpha/echo"]},
                {"who": "idp:corp", "what": ["tool:alpha/echo", "tool:alpha/headers"]},
            ],
            "audit": {"jsonl_path": "audit.jsonl"},
        }
        async with run_gateway(upstreams, servers, extra=extra) as gw:
            yield World(gw, idp, recorded)


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def create_key(gw: Gateway, *args: str) -> dict[str, Any]:
    return json.loads((await manifold_cli(gw, "keys", "create", *args, "--json")).stdout)


async def initialize_status(gw: Gateway, server: str, token: str) -> int:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}},
    }
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    async with httpx2.AsyncClient(timeout=30) as http:
        return (await http.post(gw.url(server), headers=headers, json=body)).status_code


async def audit_events(gw: Gateway, *args: str) -> list[dict[str, Any]]:
    done = await manifold_cli(gw, "audit", "--json", "--limit", "1000", *args)
    return [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]


async def wait_for_events(gw: Gateway, wanted: set[tuple[str, str | None, str]]) -> list[dict[str, Any]]:
    """Audit rows are written in the background (batched); poll `manifold audit` until every wanted
    (principal, target, outcome) is there."""
    deadline = time.monotonic() + AUDIT_DEADLINE_S
    while True:
        events = await audit_events(gw)
        have = {(e["principal"], e["target"], e["outcome"]) for e in events}
        if wanted <= have:
            return events
        if time.monotonic() > deadline:
            raise AssertionError(f"audit rows missing: {sorted(wanted - have, key=str)}")
        await anyio.sleep(0.1)


async def gather(*coroutines: Any) -> list[Any]:
    """Run independent steps (each CLI run is its own process) at the same time; results in order."""
    results: list[Any] = [None] * len(coroutines)

    async def run(index: int, coroutine: Any) -> None:
        results[index] = await coroutine

    async with anyio.create_task_group() as group:
        for index, coroutine in enumerate(coroutines):
            group.start_soon(run, index, coroutine)
    return results


def one(events: list[dict[str, Any]], principal: str, target: str | None, outcome: str) -> dict[str, Any]:
    found = [e for e in events if (e["principal"], e["target"], e["outcome"]) == (principal, target, outcome)]
    assert len(found) == 1, (principal, target, outcome, found)
    return found[0]


async def stop_gateway(gw: Gateway) -> None:
    """Stop the gateway the way an operator does (SIGTERM), so it writes what it holds, and wait for it."""
    gw.process.terminate()
    deadline = time.monotonic() + STOP_DEADLINE_S
    while gw.process.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError("the gateway did not stop after SIGTERM")
        await anyio.sleep(0.05)


async def test_audit_trail_records_allowed_and_denied_calls_and_never_a_token(world: World) -> None:
    gw = world.gw
    marker = f"argument-{secrets.token_hex(8)}"  # tool arguments are not stored unless include_arguments is on

    alice_key, bot_key, revoked, erin_jwt = await gather(
        create_key(gw, "--user", "alice@corp.com", "--name", "laptop"),
        create_key(gw, "--sa", "ci-bot", "--name", "pipeline"),
        create_key(gw, "--user", "alice@corp.com", "--name", "old"),
        world.idp.token("erin", resource=AUDIENCE),
    )
    world.tokens += [alice_key["token"], bot_key["token"], erin_jwt]

    async with gw.client(SHARED, key=alice_key["token"]) as client:
        assert text_of(await client.call_tool("alpha__echo", {"text": marker})) == marker
        with pytest.raises(MCPError):
            await client.call_tool("beta__echo", {"text": marker})  # beta is not alice's
        with pytest.raises(MCPError):
            await client.call_tool("alpha__nope", {})
        received = json.loads(text_of(await client.call_tool("alpha__headers", {})))
        assert "authorization" not in received  # the caller's credential never goes upstream
    assert await initialize_status(gw, "beta", alice_key["token"]) == 403

    async with gw.client("alpha", key=bot_key["token"]) as client:
        assert text_of(await client.call_tool("echo", {"text": "build"})) == "build"
        with pytest.raises(MCPError):
            await client.call_tool("add", {"a": 1, "b": 2})

    async with gw.client(SHARED, key=erin_jwt, mode="2026-07-28") as client:
        assert text_of(await client.call_tool("alpha__echo", {"text": "via idp"})) == "via idp"
        assert "authorization" not in json.loads(text_of(await client.call_tool("alpha__headers", {})))

    # Refused credentials must not be written down either.
    await manifold_cli(gw, "keys", "revoke", revoked["id"])
    now = int(time.time())
    expired_jwt = world.idp.sign(world.idp.claims(audience=AUDIENCE, subject="erin", iat=now - 7200, exp=now - 3600))
    unknown_key = "mfk_0123456789ab_" + secrets.token_urlsafe(32)
    for token in (revoked["token"], expired_jwt, unknown_key):
        assert await initialize_status(gw, SHARED, token) == 401
    world.tokens += [revoked["token"], expired_jwt, unknown_key]

    alice, bot, erin = "user:alice@corp.com", "sa:ci-bot", "user:erin@corp.com"
    events = await wait_for_events(
        gw,
        {
            (alice, "alpha__echo", "ok"),
            (alice, "beta__echo", "denied"),
            (alice, "alpha__nope", "unknown"),
            (alice, None, "denied"),  # the server she may not use
            (bot, "echo", "ok"),
            (bot, "add", "denied"),
            (erin, "alpha__echo", "ok"),
        },
    )
    echo = one(events, alice, "alpha__echo", "ok")
    assert echo["credential"] == f"api_key:{alice_key['id']}"
    where = (echo["server"], echo["member"], echo["upstream"], echo["method"])
    assert where == (SHARED, "alpha", "alpha", "tools/call")
    assert echo["arguments"] is None and isinstance(echo["latency_ms"], int | float)
    denied = one(events, alice, "beta__echo", "denied")
    assert (denied["server"], denied["upstream"], denied["method"]) == (SHARED, "beta", "tools/call")
    assert one(events, alice, "alpha__nope", "unknown")["upstream"] is None
    refused_server = one(events, alice, None, "denied")
    assert (refused_server["server"], refused_server["method"]) == ("beta", "connect")
    assert one(events, bot, "echo", "ok")["credential"] == f"sa_token:{bot_key['id']}"
    assert one(events, bot, "add", "denied")["server"] == "alpha"
    assert one(events, erin, "alpha__echo", "ok")["credential"] == "idp:corp"

    # The operator's filters.
    alices, bot_denied, on_beta = await gather(
        audit_events(gw, "--user", "alice@corp.com"),
        audit_events(gw, "--user", "sa:ci-bot", "--outcome", "denied"),
        audit_events(gw, "--server", "beta"),
    )
    assert {e["principal"] for e in alices} == {alice}
    assert [(e["target"], e["outcome"]) for e in bot_denied] == [("add", "denied")]
    assert {e["server"] for e in on_beta} == {"beta"}

    # The JSON-lines mirror holds the same events. Both are written in the background (the refused
    # credentials' rows too, a moment after their 401s), so poll until they agree or the deadline passes.
    mirror_path = gw.config_dir / "state" / "audit.jsonl"
    key = lambda e: (e["principal"], e["target"], e["outcome"], e["at"])  # noqa: E731
    deadline = time.monotonic() + AUDIT_DEADLINE_S
    while True:
        mirrored = sorted(map(key, (json.loads(line) for line in mirror_path.read_text().splitlines())), key=str)
        stored = sorted(map(key, await audit_events(gw)), key=str)
        if mirrored == stored or time.monotonic() > deadline:
            break
        await anyio.sleep(0.1)
    assert mirrored == stored
    assert sum(1 for row in stored if row[2] == "unauthenticated") >= 1  # the three refused credentials

    # Nothing that was presented as a credential is in any file the gateway wrote, its log, or upstream.
    await stop_gateway(gw)
    listed = json.loads((await manifold_cli(gw, "keys", "list", "--json")).stdout)
    used = {k["id"]: k["last_used_at"] for k in listed}
    assert used[alice_key["id"]] is not None and used[bot_key["id"]] is not None  # written at the latest on stop
    state_files = [p for p in (gw.config_dir / "state").rglob("*") if p.is_file()]
    in_state = {"audit.jsonl"} | ({"manifold.db"} if gw.database_url.startswith("sqlite") else set())
    assert {p.name for p in state_files} >= in_state
    haystacks = {str(p): p.read_bytes() for p in state_files}
    haystacks["gateway log"] = gw.log().encode()
    haystacks["upstream's record"] = world.recorded.read_bytes()
    assert b'"name": "headers"' in haystacks["upstream's record"]  # the record is real, with headers
    for token in world.tokens:
        for where, data in haystacks.items():
            for piece in secret_parts(token):
                assert piece.encode() not in data, f"a credential ({token[:8]}…) is in {where}"
    for where, data in haystacks.items():
        if where != "upstream's record":  # the upstream is where the arguments are meant to go
            assert marker.encode() not in data, f"tool arguments are in {where}"


def secret_parts(token: str) -> set[str]:
    """The token, the part of it that is the secret (a JWT's signature, an API key's random tail), and that
    secret's first and last 16 characters: a log line showing "just the end" of a token leaks it too."""
    if token.count(".") == 2:
        secret = token.rsplit(".", 1)[1]
    else:
        prefix, _key_id, secret = token.split("_", 2)
        assert prefix in ("mfk", "mfs"), token[:4]
    assert len(secret) >= 40, token[:8]
    return {token, secret, secret[:16], secret[-16:]}


async def test_refused_prompt_and_resource_are_audited_as_denied(world: World) -> None:
    gw = world.gw
    bot_key = await create_key(gw, "--sa", "ci-bot", "--name", "pipeline")  # only tool:alpha/echo
    async with gw.client(SHARED, key=bot_key["token"]) as client:
        with pytest.raises(MCPError):
            await client.read_resource("kitchen+alpha://readme")
        with pytest.raises(MCPError):
            await client.get_prompt("alpha__greet", {"name": "Ada"})
        with pytest.raises(MCPError):
            await client.get_prompt("alpha__nope", {"name": "Ada"})
    bot = "sa:ci-bot"
    # Rows are written in the order of the calls: once the last one is there, so are the others.
    events = await wait_for_events(gw, {(bot, "alpha__nope", "unknown")})
    prompt = one(events, bot, "alpha__greet", "denied")
    assert (prompt["method"], prompt["member"], prompt["upstream"]) == ("prompts/get", "alpha", "alpha")
    read = one(events, bot, "kitchen+alpha://readme", "denied")
    assert (read["method"], read["member"], read["upstream"]) == ("resources/read", "alpha", "alpha")
