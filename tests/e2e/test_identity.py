"""Who may connect: the real gateway process in front of two real OpenID Providers (node oidc-provider).

`corp` is the company's IdP (employees; `groups` become teams). `customers` admits only external callers
whose `tenant` claim names a known customer (`external_only`). Refused credentials must get 401 with a
`WWW-Authenticate` challenge that points at the protected-resource metadata, so an MCP client can find out
where to get a token; accepted ones get exactly what their grants give.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
import mcp_types as types
import pytest
from cryptography.hazmat.primitives import serialization
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.e2e.harness import Gateway, manifold_cli, run_gateway, stdio_upstream
from tests.idp import Idp, IdpClient, run_idp
from tests.upstreams.launch import KITCHEN

pytestmark = pytest.mark.anyio

AUDIENCE = "https://manifold.e2e.test/mcp"
SERVER = "kitchen"
PRM = "/.well-known/oauth-protected-resource"
CORP_CLIENTS = [
    IdpClient("alice", claims={"email": "alice@corp.com", "groups": ["eng"]}),
    IdpClient("bob", claims={"email": "bob@corp.com", "groups": ["sales"]}),
    IdpClient("carol", claims={"email": "carol@corp.com"}),  # no groups: her team comes from `users:`
    IdpClient("dora", claims={"email": "dora@corp.com", "department": "finance"}),
]
CUSTOMER_CLIENTS = [
    IdpClient("acme-bot", claims={"tenant": "acme"}),
    IdpClient("globex-bot", claims={"tenant": "globex"}),
]
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "e2e-identity", "version": "1"},
    },
}


@dataclass
class World:
    gw: Gateway
    corp: Idp
    customers: Idp


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    async with run_idp(CORP_CLIENTS) as corp, run_idp(CUSTOMER_CLIENTS) as customers:
        extra = {
            "identity": {
                "idps": {
                    "corp": {"issuer": corp.issuer, "audience": [AUDIENCE]},
                    "customers": {
                        "issuer": customers.issuer,
                        "audience": AUDIENCE,
                        "external": [{"name": "acme", "match": {"tenant": "acme"}, "teams": ["customers"]}],
                        "external_only": True,
                    },
                }
            },
            "users": {"carol@corp.com": {"teams": ["eng"]}},
            "grants": [
                {"who": "idp:corp", "what": ["tool:kitchen/echo"]},
                {"who": "team:eng", "what": ["tool:kitchen/whoami"], "description": "engineers see whoami"},
                {"who": "team:customers", "what": ["tool:kitchen/add"]},
                {"who": "idp:corp", "claims": {"department": ["finance", "audit"]}, "what": ["tool:kitchen/add"]},
            ],
        }
        upstreams = {SERVER: stdio_upstream(KITCHEN, "--transport", "stdio", "--name", "kitchen")}
        async with run_gateway(upstreams, extra=extra) as gw:
            yield World(gw, corp, customers)


# ---- helpers ----------------------------------------------------------------------------------------------


async def initialize(gw: Gateway, token: str | None, server: str = SERVER) -> httpx2.Response:
    """A raw `initialize` POST, as any MCP client's first request, with this bearer (or none)."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with httpx2.AsyncClient(timeout=30) as http:
        return await http.post(gw.url(server), headers=headers, json=INITIALIZE)


def challenge_params(header: str) -> dict[str, str]:
    """`Bearer realm="manifold", error="invalid_token", ...` → {"realm": "manifold", "error": ...}."""
    assert header.startswith("Bearer "), header
    return {k: v.replace('\\"', '"') for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', header)}


async def assert_refused(gw: Gateway, token: str, reason: str) -> None:
    """401, a challenge with `error="invalid_token"` naming `reason`, the metadata pointer, no token echoed."""
    response = await initialize(gw, token)
    assert response.status_code == 401, response.text
    params = challenge_params(response.headers["www-authenticate"])
    assert params["realm"] == "manifold"
    assert params["error"] == "invalid_token"
    assert params["error_description"] == reason
    assert params["resource_metadata"] == f"{gw.base}{PRM}/mcp/{SERVER}"
    assert response.json() == {"error": "invalid_token", "error_description": reason}
    assert token not in response.text and token not in str(response.headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    """A JWT assembled by hand, for algorithms PyJWT rightly refuses to produce with these keys."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(sign(signing_input.encode()))}"


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def tool_names(gw: Gateway, token: str) -> set[str]:
    async with gw.client(SERVER, key=token) as client:
        return {t.name for t in (await client.list_tools()).tools}


async def create_key(gw: Gateway, *args: str) -> dict[str, Any]:
    done = await manifold_cli(gw, "keys", "create", *args, "--json")
    return json.loads(done.stdout)


# ---- the challenge and the metadata document --------------------------------------------------------------


async def test_no_token_gets_a_challenge_without_an_error_code(world: World) -> None:
    response = await initialize(world.gw, None)
    assert response.status_code == 401
    header = response.headers["www-authenticate"]
    params = challenge_params(header)
    # RFC 6750 §3.1: a request that sent no credentials gets no error code, only where to get one.
    assert "error" not in params and "error=" not in header
    assert params["resource_metadata"] == f"{world.gw.base}{PRM}/mcp/{SERVER}"


async def test_sse_endpoint_is_protected_the_same_way(world: World) -> None:
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.get(world.gw.sse_url(SERVER), headers={"Accept": "text/event-stream"})
    assert response.status_code == 401
    assert challenge_params(response.headers["www-authenticate"])["resource_metadata"] == (
        f"{world.gw.base}{PRM}/sse/{SERVER}"
    )


async def test_token_in_the_query_string_is_not_accepted(world: World) -> None:
    key = await create_key(world.gw, "--user", "carol@corp.com", "--name", "query")
    assert (await initialize(world.gw, key["token"])).status_code == 200
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx2.AsyncClient(timeout=30) as http:
        response = await http.post(
            world.gw.url(SERVER), params={"access_token": key["token"]}, headers=headers, json=INITIALIZE
        )
    assert response.status_code == 401  # bearer_methods_supported: header only (RFC 6750 §2.3 is not offered)


async def test_protected_resource_metadata_names_both_idps(world: World) -> None:
    challenge = challenge_params((await initialize(world.gw, None)).headers["www-authenticate"])
    async with httpx2.AsyncClient(timeout=30) as http:
        # What an MCP client does after a 401: follow the pointer, no credentials needed.
        response = await http.get(challenge["resource_metadata"])
        sse = await http.get(f"{world.gw.base}{PRM}/sse/{SERVER}")
        unknown = await http.get(f"{world.gw.base}{PRM}/mcp/no-such-server")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["resource"] == world.gw.url(SERVER)
    # The gateway's own authorization server first (docs/gateway-oauth.md), then the IdPs it accepts tokens of.
    assert document["authorization_servers"] == [world.gw.base, world.corp.issuer, world.customers.issuer]
    assert document["bearer_methods_supported"] == ["header"]
    assert sse.status_code == 200 and sse.json()["resource"] == world.gw.sse_url(SERVER)
    assert unknown.status_code == 404


# ---- refused IdP tokens -----------------------------------------------------------------------------------


async def test_expired_token_refused(world: World) -> None:
    now = int(time.time())
    corp = world.corp
    token = corp.sign(corp.claims(audience=AUDIENCE, subject="alice", iat=now - 7200, exp=now - 3600))
    await assert_refused(world.gw, token, "token expired")


async def test_not_yet_valid_token_refused(world: World) -> None:
    corp = world.corp
    token = corp.sign(corp.claims(audience=AUDIENCE, subject="alice", nbf=int(time.time()) + 3600, lifetime_s=7200))
    await assert_refused(world.gw, token, "token not yet valid")


async def test_token_for_another_audience_refused(world: World) -> None:
    # A genuine token from the provider, issued for some other API.
    token = await world.corp.token("alice", resource="https://some-other-api.e2e.test/")
    await assert_refused(world.gw, token, "wrong audience")


async def test_token_from_an_unknown_issuer_refused(world: World) -> None:
    corp = world.corp
    token = corp.sign(corp.claims(audience=AUDIENCE, iss="https://login.example.invalid"))
    await assert_refused(world.gw, token, "unknown issuer")
    # Naming a configured issuer while signing with another IdP's key does not help either.
    forged = corp.sign(corp.claims(audience=AUDIENCE, iss=world.customers.issuer, tenant="acme"))
    await assert_refused(world.gw, forged, "unknown signing key")


async def test_alg_none_refused(world: World) -> None:
    corp = world.corp
    token = craft({"alg": "none", "kid": corp.kid}, corp.claims(audience=AUDIENCE, groups=["eng"]), lambda _: b"")
    await assert_refused(world.gw, token, "algorithm not allowed")


async def test_hs256_signed_with_the_public_key_refused(world: World) -> None:
    corp = world.corp
    public_pem = corp.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = craft(
        {"alg": "HS256", "kid": corp.kid},
        corp.claims(audience=AUDIENCE, groups=["eng"]),
        lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
    )
    await assert_refused(world.gw, token, "algorithm not allowed")


async def test_unknown_kid_refused(world: World) -> None:
    corp = world.corp
    token = corp.sign(corp.claims(audience=AUDIENCE), headers={"kid": "no-such-key"})
    await assert_refused(world.gw, token, "unknown signing key")


async def test_tampered_payload_refused(world: World) -> None:
    token = await world.corp.token("bob", resource=AUDIENCE)
    assert "whoami" not in await tool_names(world.gw, token)  # the genuine token works, without whoami
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["groups"] = ["eng"]  # promote bob into the team that may call whoami
    await assert_refused(world.gw, f"{header}.{b64(json.dumps(claims).encode())}.{signature}", "bad signature")


async def test_other_tenant_refused(world: World) -> None:
    token = await world.customers.token("globex-bot", resource=AUDIENCE)
    await assert_refused(world.gw, token, "token not admitted")


# ---- refused API keys -------------------------------------------------------------------------------------


async def test_revoked_api_key_refused_on_the_next_request(world: World) -> None:
    gw = world.gw
    key = await create_key(gw, "--user", "carol@corp.com", "--name", "laptop")
    token = key["token"]
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=30, event_hooks={"response": [record]}
    )
    async with Client(streamable_http_client(gw.url(SERVER), http_client=http)) as client:
        # Created by another process while the gateway runs: usable at once, with carol's teams.
        assert {t.name for t in (await client.list_tools()).tools} == {"whoami"}
        assert json.loads(text_of(await client.call_tool("whoami", {})))["name"] == "kitchen"
        assert set(statuses) <= {200, 202}
        await manifold_cli(gw, "keys", "revoke", key["id"])
        # The key was validated (and cached) a moment ago; the revocation still wins on the next request,
        # in the middle of an open session.
        statuses.clear()
        with pytest.raises(MCPError):
            await client.call_tool("whoami", {})
        assert statuses[0] == 401
    await assert_refused(gw, token, "token revoked")
    listed = json.loads((await manifold_cli(gw, "keys", "list", "--all", "--json")).stdout)
    assert {"id": key["id"], "state": "revoked"}.items() <= next(k for k in listed if k["id"] == key["id"]).items()


async def test_expired_api_key_refused(world: World) -> None:
    gw = world.gw
    key = await create_key(gw, "--user", "carol@corp.com", "--name", "short-lived", "--expires", "0.001s")
    assert key["expires_at"] == pytest.approx(key["created_at"] + 0.001)
    assert time.time() > key["expires_at"]  # the CLI process alone outlives the key: no waiting needed
    await assert_refused(gw, key["token"], "token expired")


async def test_unknown_api_key_refused(world: World) -> None:
    await assert_refused(world.gw, "mfk_0123456789ab_" + "x" * 43, "invalid token")


async def test_zero_lifetime_is_refused_by_the_cli(world: World) -> None:
    done = await manifold_cli(world.gw, "keys", "create", "--user", "carol@corp.com", "--name", "z", "--expires", "0d",
                              check=False)  # fmt: skip
    assert done.returncode != 0
    assert b"'0d'" in done.stderr and b"mfk_" not in done.stdout


# ---- accepted tokens, and what their grants give ----------------------------------------------------------


async def test_real_tokens_from_both_idps_are_accepted(world: World) -> None:
    gw = world.gw
    alice = await world.corp.token("alice", resource=AUDIENCE)
    acme = await world.customers.token("acme-bot", resource=AUDIENCE)
    async with gw.client(SERVER, key=alice) as client:
        assert text_of(await client.call_tool("echo", {"text": "from corp"})) == "from corp"
    async with gw.client(SERVER, key=acme, mode="2026-07-28") as client:
        added = await client.call_tool("add", {"a": 40, "b": 2})
        assert not added.is_error and (added.structured_content == {"result": 42} or "42" in text_of(added))


async def test_team_grant_follows_the_groups_claim(world: World) -> None:
    gw = world.gw
    alice = await world.corp.token("alice", resource=AUDIENCE)  # groups: [eng]
    bob = await world.corp.token("bob", resource=AUDIENCE)  # groups: [sales]
    assert await tool_names(gw, alice) == {"echo", "whoami"}
    assert await tool_names(gw, bob) == {"echo"}
    async with gw.client(SERVER, key=alice) as client:
        assert json.loads(text_of(await client.call_tool("whoami", {})))["name"] == "kitchen"
    async with gw.client(SERVER, key=bob) as client:
        with pytest.raises(MCPError) as denied:
            await client.call_tool("whoami", {})
        with pytest.raises(MCPError) as missing:
            await client.call_tool("no_such_tool", {})
    assert denied.value.code == missing.value.code
    assert denied.value.message == missing.value.message.replace("no_such_tool", "whoami")


async def test_external_identity_admitted_by_its_tenant(world: World) -> None:
    acme = await world.customers.token("acme-bot", resource=AUDIENCE)
    # Only the customers' grant applies: not `idp:corp` (echo), not `team:eng` (whoami).
    assert await tool_names(world.gw, acme) == {"add"}


async def test_teams_from_the_users_section_join_an_idp_user(world: World) -> None:
    carol = await world.corp.token("carol", resource=AUDIENCE)  # no groups claim; users: gives her eng
    assert await tool_names(world.gw, carol) == {"echo", "whoami"}


async def test_claims_narrow_an_idp_grant(world: World) -> None:
    dora = await world.corp.token("dora", resource=AUDIENCE)  # department: finance
    assert await tool_names(world.gw, dora) == {"echo", "add"}
    forged = world.corp.sign(world.corp.claims(audience=AUDIENCE, subject="eve", department="sales"))
    assert await tool_names(world.gw, forged) == {"echo"}  # a genuine signature, but not the wanted claim
