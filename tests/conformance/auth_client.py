"""The client the official conformance suite's `auth` scenarios drive: Manifold's own OAuth client
(`manifold.outbound.oauth`) connecting to the suite's protected MCP server.

    node …/conformance/dist/index.js client --command "python tests/conformance/auth_client.py" --suite auth

The runner starts a protected MCP server and an authorization server per scenario, appends the server's URL
to the command, and sets MCP_CONFORMANCE_SCENARIO (and MCP_CONFORMANCE_CONTEXT, JSON, e.g. a pre-registered
client_id/client_secret). This script then does what the gateway does for a user, headlessly:

1. speaks MCP (initialize, tools/list, tools/call) to the server with whatever token it holds;
2. on 401, or 403 `insufficient_scope` naming scopes it was not granted, runs `OAuthFlows.start` with that
   challenge (discovery, registration, PKCE, resource, scope selection all happen there), plays the browser
   (the suite's authorization server approves at once and redirects with `code` and `state`), and redeems
   the callback with `OAuthFlows.complete`;
3. takes the token for the next attempt from `OAuthBroker.access_token`, as the gateway would.

At most three authorizations; a 403 for scopes already granted ends the run (no loop). Exit 0 when the tool
call succeeded. The database and key are temporary; discovery is allowed on loopback/http
(`allow_insecure_discovery`), since the suite's servers listen on http://localhost.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import aiohttp

from manifold.config.models import AuthMode, OAuthAuth
from manifold.outbound.oauth import ConnectLinks, OAuthBroker, OAuthFlows, Vault
from manifold.outbound.oauth.discovery import bearer_challenge
from manifold.outbound.resolver import CallContext
from manifold.principal import Credential, CredentialKind, Principal, PrincipalKind
from manifold.security.crypto import Cipher, generate_key
from manifold.store.db import open_database

UPSTREAM = "conformance"
REDIRECT_URI = "http://localhost:3000/oauth/callback"  # never contacted: the "browser" stops at the redirect
PROTOCOL_VERSION = "2025-11-25"
STATELESS_VERSION = "2026-07-28"
MAX_AUTHORIZATIONS = 3
PRINCIPAL = Principal(kind=PrincipalKind.USER, name="conformance", credential=Credential(CredentialKind.NONE))


class Refused(Exception):
    def __init__(self, status: int, www_authenticate: str | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.www_authenticate = www_authenticate


class Mcp:
    """Just enough streamable-HTTP MCP client: JSON or SSE answers, a session id if the server gives one."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.session_id: str | None = None
        # Sent on every request, initialize included: the suite's 2026-07-28-era servers refuse a POST
        # without it (-32020), and a 2025-11-25 server ignores it on initialize.
        self.version = PROTOCOL_VERSION
        self.stateless = False
        """2026-07-28: no initialize; every request carries its version and capabilities in _meta."""
        self._next_id = 1

    async def send(self, method: str, params: dict[str, Any] | None, token: str | None, *, notify: bool = False) -> Any:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if self.stateless:
            meta = {
                "io.modelcontextprotocol/protocolVersion": STATELESS_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
            params = {**(params or {}), "_meta": meta}
        if params is not None:
            message["params"] = params
        if not notify:
            message["id"] = self._next_id
            self._next_id += 1
        headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        headers["MCP-Protocol-Version"] = self.version
        if self.stateless:
            headers["Mcp-Method"] = method
            if method == "tools/call" and params:
                headers["Mcp-Name"] = str(params["name"])
        async with self.http.post(self.url, json=message, headers=headers) as resp:
            if resp.status in (401, 403):
                raise Refused(resp.status, resp.headers.get("WWW-Authenticate"))
            if resp.status >= 400:
                raise RuntimeError(f"{method}: HTTP {resp.status}: {(await resp.text())[:300]}")
            self.session_id = resp.headers.get("Mcp-Session-Id", self.session_id)
            if notify:
                return None
            if resp.headers.get("Content-Type", "").startswith("text/event-stream"):
                reply = _from_sse(await resp.text(), message["id"])
            else:
                reply = await resp.json()
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result")


def _from_sse(text: str, request_id: int) -> dict[str, Any]:
    for event in text.split("\n\n"):
        data = "\n".join(line[5:].lstrip() for line in event.splitlines() if line.startswith("data:"))
        if data:
            message = json.loads(data)
            if message.get("id") == request_id:
                return message
    raise RuntimeError("the event stream held no answer")


async def run(server_url: str, scenario: str, context: dict[str, Any]) -> None:
    config = OAuthAuth(
        mode=AuthMode.OAUTH,
        client_id=context.get("client_id"),
        client_secret=context.get("client_secret"),
        allow_insecure_discovery=True,
    )
    with tempfile.TemporaryDirectory(prefix="manifold-auth-client-") as tmp:
        engine = await open_database(f"sqlite+aiosqlite:///{Path(tmp) / 'manifold.db'}")
        cipher = Cipher([generate_key()], source="a temporary key")
        await cipher.check(engine)
        flows = OAuthFlows(engine, cipher, client_name="Manifold conformance client")
        broker = OAuthBroker(Vault(engine, cipher), ConnectLinks.from_cipher(cipher), flows, lambda: "http://localhost")
        try:
            async with aiohttp.ClientSession() as http:
                authorizations, tools = await _session(http, flows, broker, config, server_url)
        finally:
            await flows.aclose()
            await engine.dispose()
    print(f"{scenario}: connected with {authorizations} authorization(s); {len(tools)} tool(s)")


async def _session(
    http: aiohttp.ClientSession, flows: OAuthFlows, broker: OAuthBroker, config: OAuthAuth, server_url: str
) -> tuple[int, list[Any]]:
    ctx = CallContext(principal=PRINCIPAL, member_id=UPSTREAM, server_id=UPSTREAM)
    mcp = Mcp(http, server_url)
    authorizations = 0
    granted: set[str] = set()
    token: str | None = None

    async def call(method: str, params: dict[str, Any] | None = None, notify: bool = False) -> Any:
        nonlocal token, authorizations, granted
        while True:
            try:
                return await mcp.send(method, params, token, notify=notify)
            except Refused as refused:
                challenge = bearer_challenge(refused.www_authenticate)
                wanted = set(challenge.scope.split()) if challenge and challenge.scope else set()
                if refused.status == 403 and wanted <= granted:
                    raise RuntimeError(f"{method}: refused (403) for scopes already granted: giving up") from None
                if authorizations >= MAX_AUTHORIZATIONS:
                    raise RuntimeError(f"{method}: still refused after {authorizations} authorizations") from None
                authorizations += 1
                connection = await authorize(http, flows, config, server_url, refused.www_authenticate)
                granted = set(connection.scopes)
                token = await broker.access_token(PRINCIPAL, UPSTREAM, config, ctx)

    try:
        init = await call(
            "initialize",
            {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "manifold-conformance-auth-client", "version": "0.1.0"},
            },
        )
    except RuntimeError as refused:
        # A 2026-07-28-only server (no handshake) refuses initialize for its missing _meta: go stateless.
        if "_meta" not in str(refused):
            raise
        mcp.stateless, mcp.version = True, STATELESS_VERSION
    else:
        mcp.version = init.get("protocolVersion", PROTOCOL_VERSION)
        await call("notifications/initialized", notify=True)
    tools = (await call("tools/list", {})).get("tools", [])
    if tools:
        await call("tools/call", {"name": tools[0]["name"], "arguments": {}})
    return authorizations, tools


async def authorize(
    http: aiohttp.ClientSession, flows: OAuthFlows, config: OAuthAuth, server_url: str, challenge: str | None
) -> Any:
    url = await flows.start(PRINCIPAL.id, UPSTREAM, config, server_url, REDIRECT_URI, www_authenticate=challenge)
    # The browser: the suite's authorization server approves at once and redirects back.
    location = url
    redirect_uri = parse_qs(urlparse(url).query)["redirect_uri"][0]  # the gateway's own for that server
    for _ in range(5):
        async with http.get(location, allow_redirects=False) as resp:
            if resp.status not in (301, 302, 303, 307, 308):
                raise RuntimeError(f"the authorization endpoint answered HTTP {resp.status}, not a redirect")
            location = urljoin(location, resp.headers["Location"])
        if location.startswith(redirect_uri):
            break
    query = {k: v[0] for k, v in parse_qs(urlparse(location).query).items()}
    return await flows.complete(
        query.get("state", ""), query.get("code"), query.get("iss"), query.get("error"), PRINCIPAL.id
    )


def main() -> int:
    if len(sys.argv) < 2:
        print("usage: auth_client.py SERVER_URL", file=sys.stderr)
        return 2
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "?")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    try:
        asyncio.run(run(sys.argv[-1], scenario, context))
    except Exception as exc:  # noqa: BLE001 — the runner shows stderr; one line says what failed
        print(f"{scenario}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
