"""Which credential reaches an upstream, mode by mode: the real gateway process, real upstream processes that
write down every header they receive (kitchen `--record`), and a real OpenID Provider (node oidc-provider)
that issues the callers' tokens and performs RFC 8693 token exchange.

- `none` / `static`: exactly the configured credential; never the caller's; the secret in no log or error.
- `passthrough`: the caller's own token, only when its audience names the upstream; otherwise HTTP 403 before
  anything is sent, audited as denied.
- `forwarded`: `x-mcp-headers` values reach their member only, allow-listed names only, separate sessions.
- `exchange`: a token the IdP issued for the upstream (aud = upstream, sub = caller), cached, one exchange per
  burst; failures are clear refusals. The last tests drive the exchanger itself (in this process) against a
  real HTTP token endpoint that misbehaves on purpose: redirects, echoed secrets, odd answers, expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import jwt
import pytest
from aiohttp import web

from manifold.config.models import ExchangeAuth
from manifold.outbound import exchange as exchange_module
from manifold.outbound.exchange import TokenExchanger
from manifold.outbound.resolver import OutboundRefused
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from tests.e2e.harness import REPO, Gateway, run_gateway
from tests.idp import TOKEN_EXCHANGE, Idp, IdpClient, run_idp
from tests.upstreams.launch import KITCHEN, free_port, run_http_upstream

pytestmark = pytest.mark.anyio

GATEWAY_AUD = "https://manifold.e2e.test/mcp"
PASS_AUD = "https://passthrough.e2e.test/mcp"  # the passthrough upstream's audience
EXCHANGE_AUD = "https://exchange.e2e.test/mcp"  # what exchanged tokens are issued for
EXCHANGE_CLIENT = "manifold-gw"
EXCHANGE_SECRET = "xchg-client-" + secrets.token_hex(12)
WRONG_SECRET = "wrong-client-" + secrets.token_hex(12)
STATIC_TOKEN = "static-bearer-" + secrets.token_hex(12)
STATIC_KEY = "static-key-" + secrets.token_hex(12)
ENV = {
    "STATIC_TOKEN": STATIC_TOKEN,
    "STATIC_KEY": STATIC_KEY,
    "EXCHANGE_SECRET": EXCHANGE_SECRET,
    "WRONG_SECRET": WRONG_SECRET,
}
AUDIT_DEADLINE_S = 15.0

USERS = {"alice": "alice@corp.com", "bob": "bob@corp.com", "carol": "carol@corp.com", "dave": "dave@corp.com"}
CLIENTS = [IdpClient(name, claims={"email": email}) for name, email in USERS.items()] + [
    IdpClient(
        EXCHANGE_CLIENT,
        client_secret=EXCHANGE_SECRET,
        metadata={"grant_types": [TOKEN_EXCHANGE], "response_types": [], "redirect_uris": []},
    )
]
# Upstreams that are kitchens recording what they receive; `protocol` where a test needs session ids.
KITCHENS: dict[str, dict[str, Any]] = {
    "plain": {},
    "fixed": {},
    "pass": {},
    "pass-cold": {},  # only ever called with a refused credential
    "fwd": {"protocol": "2025-11-25"},  # handshake era: upstream session ids show which session carried what
    "fwd-other": {},
    "xchg": {},
    "xchg-bad": {},
}
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}},
}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


# ---- the world: IdP, upstreams, a failing upstream, the gateway ----------------------------------------------


@dataclass
class FailingUpstream:
    """A real HTTP server that answers every request with the status in its path (/401, /500) and keeps the
    headers it got, to prove the static credential was sent even though the upstream refused it."""

    base: str
    received: list[dict[str, str]]


@contextlib.asynccontextmanager
async def run_failing_upstream() -> AsyncIterator[FailingUpstream]:
    received: list[dict[str, str]] = []

    async def answer(request: web.Request) -> web.Response:
        received.append({k.lower(): v for k, v in request.headers.items()})
        return web.Response(status=int(request.match_info["status"]), text="no")

    app = web.Application()
    app.router.add_route("*", "/{status:\\d+}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield FailingUpstream(f"http://127.0.0.1:{port}", received)
    finally:
        await runner.cleanup()


@dataclass
class World:
    gw: Gateway
    idp: Idp
    records: dict[str, Path]
    failing: FailingUpstream
    tokens: dict[str, str]  # user -> a token with aud = the gateway only
    pass_tokens: dict[str, str]  # user -> a token whose aud is the passthrough upstream

    def received(self, upstream: str) -> list[dict[str, Any]]:
        path = self.records[upstream]
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def headers_received(self, upstream: str) -> list[dict[str, str]]:
        return [entry.get("headers", {}) for entry in self.received(upstream)]


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    folder = tmp_path_factory.mktemp("records")
    records = {name: folder / f"{name}.jsonl" for name in KITCHENS}
    async with contextlib.AsyncExitStack() as stack:
        idp = await stack.enter_async_context(run_idp(CLIENTS))
        failing = await stack.enter_async_context(run_failing_upstream())
        # Started side by side: each kitchen takes a second or two to import and listen.
        started = await asyncio.gather(
            *(
                stack.enter_async_context(run_http_upstream(KITCHEN, "--name", name, "--record", str(records[name])))
                for name in KITCHENS
            )
        )
        urls = dict(zip(KITCHENS, started, strict=True))
        exchange = {
            "mode": "exchange",
            "token_endpoint": f"{idp.issuer}/token",
            "audience": EXCHANGE_AUD,
            "client_id": EXCHANGE_CLIENT,
            "client_secret": "${EXCHANGE_SECRET}",
            "allow_insecure": True,
        }
        auth: dict[str, dict[str, Any]] = {
            "plain": {"mode": "none"},
            "fixed": {"mode": "static", "bearer": "${STATIC_TOKEN}", "headers": {"X-Static-Key": "${STATIC_KEY}"}},
            "pass": {"mode": "passthrough", "audience": PASS_AUD},
            "pass-cold": {"mode": "passthrough", "audience": PASS_AUD},
            "fwd": {"mode": "forwarded", "allow": ["X-Api-Key", "X-Tenant"]},
            "fwd-other": {"mode": "forwarded", "allow": ["X-Other-Key"]},
            "xchg": exchange,
            "xchg-bad": {**exchange, "client_secret": "${WRONG_SECRET}"},
        }
        upstreams: dict[str, Any] = {
            name: {"transport": "http", "url": urls[name], "auth": auth[name], **KITCHENS[name]} for name in KITCHENS
        }
        static = {"mode": "static", "bearer": "${STATIC_TOKEN}", "headers": {"X-Static-Key": "${STATIC_KEY}"}}
        # An http:// token endpoint without allow_insecure: refused before the caller's token is sent anywhere.
        upstreams["xchg-insecure"] = {**upstreams["xchg-bad"], "auth": {**exchange, "allow_insecure": False}}
        upstreams["denies"] = {"transport": "http", "url": f"{failing.base}/401", "auth": static}
        upstreams["crashes"] = {"transport": "http", "url": f"{failing.base}/500", "auth": static}
        servers = {"pair": {"members": [{"upstream": "fwd", "id": "github"}, {"upstream": "fwd-other", "id": "jira"}]}}
        # The gateway accepts tokens issued for itself and for the passthrough upstream (a token for the
        # upstream is what a passthrough caller holds).
        extra = {"identity": {"idps": {"corp": {"issuer": idp.issuer, "audience": [GATEWAY_AUD, PASS_AUD]}}}}
        gw = await stack.enter_async_context(run_gateway(upstreams, servers, env=ENV, extra=extra))
        tokens = {user: await idp.token(user, resource=GATEWAY_AUD) for user in USERS}
        pass_tokens = {user: await idp.token(user, resource=PASS_AUD) for user in USERS}
        yield World(gw, idp, records, failing, tokens, pass_tokens)


# ---- a raw MCP client: the HTTP status and headers are part of what is tested --------------------------------


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    text: str

    @property
    def error(self) -> str:
        assert "error" in self.body, self.body
        return self.body["error"]["message"]

    def tool_text(self) -> str:
        result = self.body["result"]
        return "".join(c.get("text", "") for c in result["content"])

    def upstream_headers(self) -> dict[str, str]:
        """The kitchen `headers` tool's answer: the HTTP headers its call arrived with."""
        result = self.body.get("result")
        assert isinstance(result, dict) and not result.get("isError"), self.body
        structured = result.get("structuredContent")
        if isinstance(structured, dict):
            return structured.get("result", structured)
        return json.loads(self.tool_text())


def _message(response: httpx2.Response) -> dict[str, Any]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        messages = [json.loads(d) for d in data if d]
        return [m for m in messages if "method" not in m][-1]
    return response.json()


async def call_tool(
    gw: Gateway, server: str, token: str, tool: str, arguments: dict[str, Any] | None = None, *, fwd: Any = None
) -> Reply:
    """initialize, then tools/call, as a 2025-11-25 client would; `fwd` becomes the x-mcp-headers header (a
    string as is, anything else as JSON)."""
    headers = {**ACCEPT, "Authorization": f"Bearer {token}"}
    async with httpx2.AsyncClient(timeout=60) as http:
        init = await http.post(gw.url(server), json=INIT, headers=headers)
        assert init.status_code == 200, init.text
        headers.update({"Mcp-Session-Id": init.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"})
        if fwd is not None:
            headers["x-mcp-headers"] = fwd if isinstance(fwd, str) else json.dumps(fwd)
        params = {"name": tool, "arguments": arguments or {}}
        body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": params}
        response = await http.post(gw.url(server), json=body, headers=headers)
    return Reply(response.status_code, _message(response), response.text)


async def all_at_once(*calls: Awaitable[Any]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def run(index: int, call: Awaitable[Any]) -> None:
        results[index] = await call

    async with anyio.create_task_group() as group:
        for index, call in enumerate(calls):
            group.start_soon(run, index, call)
    return results


def bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization")
    return value[len("Bearer ") :] if value and value.startswith("Bearer ") else value


def assert_refused(reply: Reply, upstream: str, *reason_parts: str) -> None:
    """HTTP 403 with JSON-RPC error -32003 naming the upstream and the reason."""
    assert reply.status == 403, reply.text
    assert reply.body["error"]["code"] == -32003, reply.body
    assert f"upstream '{upstream}'" in reply.error, reply.error
    for part in reason_parts:
        assert part in reply.error, reply.error


async def audit_rows(gw: Gateway, deadline_s: float = AUDIT_DEADLINE_S, **match: str) -> list[dict]:
    """Audit rows are written in the background: poll `manifold audit` until a row has all of `match`."""
    deadline = time.monotonic() + deadline_s
    while True:
        # The CLI reads the same config, so it needs the same ${ENV} values the gateway got.
        command = [sys.executable, "-m", "manifold.cli", "--config", str(gw.config_dir / "manifold.yaml")]
        done = await anyio.run_process(
            [*command, "audit", "--json", "--limit", "1000"], env={**os.environ, **ENV}, cwd=REPO
        )
        rows = [json.loads(line) for line in done.stdout.decode().splitlines() if line.strip()]
        found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
        if found or time.monotonic() > deadline:
            return found
        await anyio.sleep(0.1)


# ---- none and static ------------------------------------------------------------------------------------------


async def test_none_sends_no_credential_and_never_the_callers(world: World) -> None:
    alice = world.tokens["alice"]
    for token in (alice, world.gw.key):
        reply = await call_tool(world.gw, "plain", token, "headers", fwd={"X-Api-Key": "nope"})
        seen = reply.upstream_headers()
        assert "authorization" not in seen and "x-mcp-headers" not in seen and "x-api-key" not in seen
    received = world.headers_received("plain")
    assert received, "the upstream saw nothing"
    for headers in received:
        assert "authorization" not in headers and "x-mcp-headers" not in headers
        assert alice not in json.dumps(headers) and world.gw.key not in json.dumps(headers)


async def test_static_sends_exactly_the_configured_credential(world: World) -> None:
    alice = world.tokens["alice"]
    for token in (alice, world.gw.key):
        seen = (await call_tool(world.gw, "fixed", token, "headers", fwd={"X-Static-Key": "mine"})).upstream_headers()
        assert seen["authorization"] == f"Bearer {STATIC_TOKEN}"
        assert seen["x-static-key"] == STATIC_KEY
    received = world.headers_received("fixed")
    assert received
    for headers in received:  # every request, the handshake and list fetches included
        assert headers.get("authorization") == f"Bearer {STATIC_TOKEN}"
        assert headers.get("x-static-key") == STATIC_KEY
        assert "x-mcp-headers" not in headers
        assert alice not in json.dumps(headers) and world.gw.key not in json.dumps(headers)


@pytest.mark.parametrize(("upstream", "status"), [("denies", 401), ("crashes", 500)])
async def test_static_secret_is_in_no_error_and_no_log(world: World, upstream: str, status: int) -> None:
    reply = await call_tool(world.gw, upstream, world.gw.key, "headers")
    assert reply.status == 200
    result = reply.body["result"]
    assert result["isError"] is True
    assert f"HTTP {status}" in reply.tool_text() and f"'{upstream}'" in reply.tool_text()
    # It was sent (the upstream got it) and refused; now look everywhere the gateway could have leaked it.
    assert any(h.get("authorization") == f"Bearer {STATIC_TOKEN}" for h in world.failing.received)
    async with world.gw.http() as http:
        health = (await http.get(f"{world.gw.base}/healthz")).text
    listing = (await call_tool(world.gw, upstream, world.gw.key, "no-such-tool")).text
    for place in (reply.text, health, listing, world.gw.log()):
        assert STATIC_TOKEN not in place and STATIC_KEY not in place


# ---- passthrough ----------------------------------------------------------------------------------------------


async def test_passthrough_sends_the_callers_token_when_its_audience_is_the_upstream(world: World) -> None:
    token = world.pass_tokens["alice"]
    seen = (await call_tool(world.gw, "pass", token, "headers")).upstream_headers()
    assert seen["authorization"] == f"Bearer {token}"
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == PASS_AUD


async def test_passthrough_refuses_a_token_for_another_audience_before_sending_it(world: World) -> None:
    # Someone with the right audience used the upstream first, so its tools are known to the gateway.
    await call_tool(world.gw, "pass", world.pass_tokens["alice"], "echo", {"text": "warm"})
    bob = world.tokens["bob"]  # aud = the gateway only
    reply = await call_tool(world.gw, "pass", bob, "headers")
    assert_refused(reply, "pass", f"your token's audience does not include '{PASS_AUD}'")
    assert bob not in reply.text
    assert all(bob not in json.dumps(h) for h in world.headers_received("pass"))
    assert bob not in world.gw.log()
    rows = await audit_rows(world.gw, principal="user:bob@corp.com", upstream="pass", outcome="denied")
    assert [(r["method"], r["target"]) for r in rows] == [("tools/call", "headers")], rows
    assert f"does not include '{PASS_AUD}'" in rows[0]["detail"]


async def test_passthrough_refusal_on_a_first_call_sends_nothing_upstream(world: World) -> None:
    """Nobody with a usable token has called `pass-cold`: the refused caller is the first. The upstream sees
    no request at all, and the answer says why."""
    carol = world.tokens["carol"]
    reply = await call_tool(world.gw, "pass-cold", carol, "headers")
    assert world.received("pass-cold") == []
    assert f"your token's audience does not include '{PASS_AUD}'" in reply.text
    assert carol not in reply.text and carol not in world.gw.log()




@pytest.mark.parametrize(
    ("upstream", "user", "reason"),
    [
        ("pass-cold", "carol", f"your token's audience does not include '{PASS_AUD}'"),
        ("xchg-bad", "carol", "token exchange failed"),
    ],
)
async def test_a_refused_credential_is_403_even_on_a_first_call(
    world: World, upstream: str, user: str, reason: str
) -> None:
    reply = await call_tool(world.gw, upstream, world.tokens[user], "headers")
    assert_refused(reply, upstream, reason)
    assert await audit_rows(world.gw, 3, principal=f"user:{USERS[user]}", upstream=upstream, outcome="denied")


async def test_passthrough_refuses_an_api_key_caller(world: World) -> None:
    await call_tool(world.gw, "pass", world.pass_tokens["alice"], "echo", {"text": "warm"})
    reply = await call_tool(world.gw, "pass", world.gw.key, "headers")
    assert_refused(reply, "pass", "only an IdP token can be passed")
    assert all(world.gw.key not in json.dumps(h) for h in world.headers_received("pass"))


# ---- forwarded ------------------------------------------------------------------------------------------------


async def test_forwarded_header_reaches_its_member_only(world: World) -> None:
    value = "fwd-github-" + secrets.token_hex(8)
    sent = {"github": {"X-Api-Key": value}}
    alice = world.tokens["alice"]
    github = (await call_tool(world.gw, "pair", alice, "github__headers", fwd=sent)).upstream_headers()
    assert github["x-api-key"] == value
    assert "authorization" not in github and "x-mcp-headers" not in github
    jira = (await call_tool(world.gw, "pair", alice, "jira__headers", fwd=sent)).upstream_headers()
    assert "x-api-key" not in jira
    assert all(value not in json.dumps(h) for h in world.headers_received("fwd-other"))
    # Each member gets its own entry.
    both = {"github": {"X-Api-Key": value}, "jira": {"X-Other-Key": value + "-jira"}}
    jira = (await call_tool(world.gw, "pair", alice, "jira__headers", fwd=both)).upstream_headers()
    assert jira["x-other-key"] == value + "-jira" and "x-api-key" not in jira
    assert value not in world.gw.log()


async def test_forwarded_flat_object_on_a_one_member_server(world: World) -> None:
    value = "fwd-flat-" + secrets.token_hex(8)
    seen = (
        await call_tool(world.gw, "fwd", world.tokens["alice"], "headers", fwd={"X-Api-Key": value, "X-Tenant": "t1"})
    ).upstream_headers()
    assert seen["x-api-key"] == value and seen["x-tenant"] == "t1"
    # On a server with several members a flat object is ambiguous.
    await call_tool(world.gw, "pair", world.gw.key, "jira__echo", {"text": "warm"})
    reply = await call_tool(world.gw, "pair", world.tokens["alice"], "github__headers", fwd={"X-Api-Key": value})
    assert_refused(reply, "fwd", "must be keyed by member id", "github, jira")
    assert value not in world.gw.log()


LONG = "v" * 5000
REFUSED: list[tuple[str, Any, str]] = [
    ("host", {"Host": "evil.example.com"}, "header 'Host' may not be forwarded"),
    ("cookie", {"Cookie": "session=stolen"}, "header 'Cookie' may not be forwarded"),
    ("content-length", {"Content-Length": "0"}, "header 'Content-Length' may not be forwarded"),
    ("connection", {"Connection": "close"}, "header 'Connection' may not be forwarded"),
    ("transfer-encoding", {"Transfer-Encoding": "chunked"}, "header 'Transfer-Encoding' may not be forwarded"),
    ("not-allowed", {"X-Admin": "yes-please"}, "header 'X-Admin' may not be forwarded to upstream 'fwd' (allowed: "),
    ("malformed", '{"X-Api-Key": "unterminated', "x-mcp-headers is not valid JSON"),
    ("not-an-object", '["X-Api-Key"]', "x-mcp-headers must be a JSON object"),
    ("oversize", {"X-Api-Key": LONG}, "the value of 'X-Api-Key' for 'fwd' is over 4096 bytes"),
    ("crlf", {"X-Api-Key": "ok\r\nX-Injected: 1"}, "the value of 'X-Api-Key' for 'fwd' holds control characters"),
    ("lf", {"X-Api-Key": "ok\nX-Injected: 1"}, "holds control characters"),
    ("unknown-member", {"jira": {"X-Api-Key": "v"}}, "'jira' is not a member of this server"),
]
TRAILING_LF = pytest.param(
    {"X-Api-Key": "trailing-newline\n"},
    "holds control characters",
    id="trailing-lf",
)


@pytest.mark.parametrize(("sent", "reason"), [pytest.param(s, r, id=i) for i, s, r in REFUSED] + [TRAILING_LF])
async def test_forwarded_refusals_are_clear_and_send_nothing(world: World, sent: Any, reason: str) -> None:
    await call_tool(world.gw, "fwd", world.gw.key, "echo", {"text": "warm"})
    before = len(world.received("fwd"))
    reply = await call_tool(world.gw, "fwd", world.tokens["dave"], "headers", fwd=sent)
    assert_refused(reply, "fwd", reason)
    assert len(world.received("fwd")) == before  # nothing went upstream for the refused call
    values = [v for v in (sent.values() if isinstance(sent, dict) else []) if isinstance(v, str) and len(v) > 3]
    for value in values:
        assert value not in reply.text and value not in world.gw.log()


async def test_two_callers_with_different_forwarded_values_use_separate_sessions(world: World) -> None:
    values = {"alice": "fwd-alice-" + secrets.token_hex(8), "bob": "fwd-bob-" + secrets.token_hex(8)}
    rounds = 6

    async def use(user: str) -> list[str]:
        seen = []
        for _ in range(rounds):
            reply = await call_tool(world.gw, "fwd", world.tokens[user], "headers", fwd={"X-Api-Key": values[user]})
            seen.append(reply.upstream_headers()["x-api-key"])
        return seen

    got = await all_at_once(use("alice"), use("bob"))
    assert got == [[values["alice"]] * rounds, [values["bob"]] * rounds]
    # Every upstream request carrying one of these values was on a session that only ever carried that value.
    sessions: dict[str, set[str]] = {}
    for entry in world.received("fwd"):
        value = entry["headers"].get("x-api-key")
        if value in values.values() and entry["method"] != "initialize":
            # handshake-era upstream: every request after initialize names its session
            sessions.setdefault(entry["headers"]["mcp-session-id"], set()).add(value)
    assert len(sessions) >= 2 and all(len(v) == 1 for v in sessions.values()), sessions
    log = world.gw.log()
    assert all(v not in log for v in values.values())


# ---- exchange -------------------------------------------------------------------------------------------------


def verified(world: World, token: str) -> dict[str, Any]:
    """The claims of a token the IdP signed (signature checked with its public key)."""
    key = jwt.algorithms.RSAAlgorithm.from_jwk(world.idp.public_jwk)
    return jwt.decode(token, key, algorithms=["RS256"], audience=EXCHANGE_AUD, issuer=world.idp.issuer)


async def test_exchange_sends_a_token_issued_for_the_upstream_and_reuses_it(world: World) -> None:
    alice = world.tokens["alice"]
    seen = (await call_tool(world.gw, "xchg", alice, "headers")).upstream_headers()
    exchanged = bearer(seen)
    assert exchanged and exchanged != alice
    claims = verified(world, exchanged)
    assert claims["aud"] == EXCHANGE_AUD
    assert claims["sub"] == jwt.decode(alice, options={"verify_signature": False})["sub"] == "alice"
    assert claims["act"] == {"sub": EXCHANGE_CLIENT}
    assert all(alice not in json.dumps(h) for h in world.headers_received("xchg"))

    before = await world.idp.counts()
    again = (await call_tool(world.gw, "xchg", alice, "headers")).upstream_headers()
    after = await world.idp.counts()
    assert bearer(again) == exchanged
    assert after["token_exchange"] == before["token_exchange"]
    assert after["token"] == before["token"]
    log = world.gw.log()
    assert exchanged not in log and alice not in log and EXCHANGE_SECRET not in log


async def test_concurrent_first_calls_share_one_exchange(world: World) -> None:
    dave = world.tokens["dave"]
    await call_tool(world.gw, "xchg", world.tokens["alice"], "echo", {"text": "warm"})  # lists known
    before = await world.idp.counts()
    replies = await all_at_once(*(call_tool(world.gw, "xchg", dave, "headers") for _ in range(8)))
    after = await world.idp.counts()
    tokens = {bearer(r.upstream_headers()) for r in replies}
    assert len(tokens) == 1
    assert verified(world, tokens.pop())["sub"] == "dave"
    assert after["token_exchange"] - before["token_exchange"] == 1


@pytest.mark.parametrize(
    ("upstream", "reason", "token_requests"),
    [
        ("xchg-bad", "token exchange failed: the token service refused it (invalid_client", 1),
        ("xchg-insecure", "token exchange is misconfigured: its token_endpoint must be an https:// URL", 0),
    ],
)
async def test_exchange_failure_is_a_clear_refusal_without_secrets(
    world: World, upstream: str, reason: str, token_requests: int
) -> None:
    bob = world.tokens["bob"]
    before = await world.idp.counts()
    reply = await call_tool(world.gw, upstream, bob, "headers")
    after = await world.idp.counts()
    assert reason in reply.text, reply.text
    assert after["token"] - before["token"] == token_requests  # no retry storm; http endpoint never contacted
    assert world.received("xchg-bad") == []  # both point at this upstream: it never got a request
    log = world.gw.log()
    for secret in (WRONG_SECRET, EXCHANGE_SECRET, bob):
        assert secret not in reply.text and secret not in log


async def test_exchange_refuses_a_caller_without_an_idp_token(world: World) -> None:
    await call_tool(world.gw, "xchg", world.tokens["alice"], "echo", {"text": "warm"})
    before = await world.idp.counts()
    reply = await call_tool(world.gw, "xchg", world.gw.key, "headers")
    assert_refused(reply, "xchg", "only a caller signed in with an identity provider's token can be exchanged")
    assert (await world.idp.counts())["token_exchange"] == before["token_exchange"]


# ---- two users at once on per-user modes ----------------------------------------------------------------------


@pytest.mark.parametrize("upstream", ["pass", "xchg"])
async def test_two_users_at_once_each_send_only_their_own_credential(world: World, upstream: str) -> None:
    tokens = world.pass_tokens if upstream == "pass" else world.tokens
    users = ["alice", "bob"]
    rounds = 6

    async def use(user: str) -> list[str | None]:
        return [
            bearer((await call_tool(world.gw, upstream, tokens[user], "headers")).upstream_headers())
            for _ in range(rounds)
        ]

    got = dict(zip(users, await all_at_once(*(use(u) for u in users)), strict=True))
    for user in users:
        for token in got[user]:
            assert token is not None
            subject = jwt.decode(token, options={"verify_signature": False})["sub"]
            assert subject == user, (user, subject)
            if upstream == "pass":
                assert token == tokens[user]
    # And on the wire: every request the upstream got carried a token of one of them, never mixed up with
    # another user's session (each request's bearer belongs to a user; the users' tokens never coincide).
    subjects = set()
    for headers in world.headers_received(upstream):
        token = bearer(headers)
        assert token is not None, headers
        subjects.add(jwt.decode(token, options={"verify_signature": False})["sub"])
    assert {"alice", "bob"} <= subjects


# ---- the exchanger against a token service that misbehaves (in process, a real HTTP server) -------------------


@dataclass
class TokenService:
    """A real HTTP token endpoint whose answer each test chooses; it keeps every form it was sent."""

    url: str
    forms: list[dict[str, str]]
    answer: Any = None  # async (request) -> web.Response

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.forms.append(dict(await request.post()))
        return await self.answer(request)


@pytest.fixture
async def token_service() -> AsyncIterator[TokenService]:
    service = TokenService("", [])
    app = web.Application()
    app.router.add_post("/token", service.handle)
    app.router.add_route("*", "/elsewhere", service.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    service.url = f"http://127.0.0.1:{port}"
    try:
        yield service
    finally:
        await runner.cleanup()


SUBJECT = "subject-token-" + secrets.token_hex(16)


def exchanger_setup(service: TokenService) -> tuple[TokenExchanger, Principal, ExchangeAuth]:
    config = ExchangeAuth(
        mode="exchange",
        token_endpoint=f"{service.url}/token",
        audience="https://api.example",
        client_id="gw",
        client_secret=EXCHANGE_SECRET,
        allow_insecure=True,
    )
    principal = Principal(
        PrincipalKind.USER, "alice@corp.com", Credential(CredentialKind.IDP_JWT, "corp"), token=SUBJECT
    )
    return TokenExchanger(), principal, config


def issued(token: str, **extra: Any) -> Any:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"access_token": token, "token_type": "Bearer", **extra})

    return answer


async def test_exchanger_never_follows_a_redirect(token_service: TokenService) -> None:
    async def redirect(request: web.Request) -> web.Response:
        if request.path == "/elsewhere":
            return web.json_response({"access_token": "stolen", "token_type": "Bearer"})
        raise web.HTTPTemporaryRedirect(f"{token_service.url}/elsewhere")

    token_service.answer = redirect
    exchanger, principal, config = exchanger_setup(token_service)
    try:
        with pytest.raises(OutboundRefused, match=r"redirect \(HTTP 307\), which is not followed"):
            await exchanger.exchange(principal, "api", config)
    finally:
        await exchanger.aclose()
    assert len(token_service.forms) == 1  # the caller's token went to the configured endpoint only
    form = token_service.forms[0]
    assert form["grant_type"] == TOKEN_EXCHANGE and form["subject_token"] == SUBJECT
    assert form["subject_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    assert form["audience"] == "https://api.example" and "client_secret" not in form


ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
MISBEHAVIOURS: list[tuple[str, int, Any, str]] = [
    # (id, status, JSON body or text, what the refusal says)
    ("echoes-subject", 400, {"error": "invalid_grant", "error_description": f"bad {SUBJECT}"}, "it (invalid_grant)"),
    ("echoes-secret", 401, {"error": "invalid_client", "error_description": EXCHANGE_SECRET}, "it (invalid_client)"),
    ("http-503", 503, "down", "the token service answered HTTP 503"),
    ("not-json", 200, "<html>", "the token service's answer is not a JSON object"),
    ("no-token", 200, {"token_type": "Bearer"}, "the token service's answer has no access_token"),
    ("dpop", 200, {"access_token": "t", "token_type": "DPoP"}, "issued a 'DPoP' token, not a bearer token"),
    ("id-token", 200, {"access_token": "t", "issued_token_type": ID_TOKEN_TYPE}, "not an access token"),
    ("oversize", 200, {"access_token": "t" * 70_000}, "the token service's answer is over 65536 bytes"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("status", "body", "reason"), [m[1:] for m in MISBEHAVIOURS], ids=[m[0] for m in MISBEHAVIOURS]
)
async def test_exchanger_refusals_name_the_problem_and_never_a_credential(
    token_service: TokenService, status: int, body: Any, reason: str
) -> None:
    async def respond(request: web.Request) -> web.Response:
        if isinstance(body, dict):
            return web.json_response(body, status=status)
        return web.Response(text=body, status=status)

    token_service.answer = respond
    exchanger, principal, config = exchanger_setup(token_service)
    try:
        with pytest.raises(OutboundRefused) as caught:
            await exchanger.exchange(principal, "api", config)
        message = str(caught.value)
        assert message.startswith("upstream 'api': token exchange failed: the token service"), message
        assert message.endswith(reason), message
        assert SUBJECT not in message and EXCHANGE_SECRET not in message
        # A failure is not cached: the next call asks again.
        with pytest.raises(OutboundRefused):
            await exchanger.exchange(principal, "api", config)
        assert len(token_service.forms) == 2
    finally:
        await exchanger.aclose()


class ExchangeClock:
    """Stands in for the `time` module inside outbound/exchange.py: time passes only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now


async def test_exchanged_token_is_renewed_once_before_it_expires(
    token_service: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ExchangeClock()
    monkeypatch.setattr(exchange_module, "time", clock)
    tokens = iter(f"issued-{n}" for n in range(100))

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"access_token": next(tokens), "token_type": "Bearer", "expires_in": 4})

    token_service.answer = answer
    exchanger, principal, config = exchanger_setup(token_service)
    issued_at = clock.now
    try:
        assert await exchanger.exchange(principal, "api", config) == "issued-0"
        # Early in its life the token is reused, though its 4 s are shorter than the renewal margin.
        clock.now = issued_at + 1
        assert await exchanger.exchange(principal, "api", config) == "issued-0"
        assert len(token_service.forms) == 1
        # Close to its expiry it is no longer handed out: renewed once, and the new one is reused.
        clock.now = issued_at + 3.9
        renewed = [await exchanger.exchange(principal, "api", config) for _ in range(3)]
        assert renewed == ["issued-1"] * 3
        assert len(token_service.forms) == 2
    finally:
        await exchanger.aclose()


async def test_a_waiter_that_gives_up_does_not_cancel_the_shared_exchange(token_service: TokenService) -> None:
    release = anyio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({"access_token": "shared", "token_type": "Bearer", "expires_in": 600})

    token_service.answer = slow
    exchanger, principal, config = exchanger_setup(token_service)
    try:
        impatient = asyncio.ensure_future(exchanger.exchange(principal, "api", config))
        patient = [asyncio.ensure_future(exchanger.exchange(principal, "api", config)) for _ in range(5)]
        while not token_service.forms:  # the one request has reached the token service
            await anyio.sleep(0.01)
        impatient.cancel()
        release.set()
        assert await asyncio.gather(*patient) == ["shared"] * 5
        assert impatient.cancelled()
        assert len(token_service.forms) == 1
    finally:
        await exchanger.aclose()


async def test_per_user_sessions_give_each_caller_an_upstream_session_of_its_own() -> None:
    """`sessions: per_user`: for servers that keep per-client state one user must not see another's (roots they
    cached, logging toggles; found with server-everything, whose shared session served one client's roots to
    every other). Each caller gets its own stdio process here; the default shares one."""
    from tests.e2e.harness import manifold_cli, stdio_upstream

    upstreams = {
        "mine": {**stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "mine"), "sessions": "per_user"},
        "ours": stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "ours"),
    }
    extra = {"users": {"alice@corp.com": {}, "bob@corp.com": {}}}
    async with run_gateway(upstreams, extra=extra) as gw:
        keys = {}
        for user in ("alice", "bob"):
            made = await manifold_cli(gw, "keys", "create", "--user", f"{user}@corp.com", "--name", "k", "--json")
            keys[user] = json.loads(made.stdout)["token"]

        async def pid(server: str, user: str) -> int:
            async with gw.client(server, key=keys[user]) as client:
                return json.loads((await client.call_tool("whoami", {})).content[0].text)["pid"]

        alice, bob = await pid("mine", "alice"), await pid("mine", "bob")
        assert alice != bob and await pid("mine", "alice") == alice
        assert await pid("ours", "alice") == await pid("ours", "bob")
